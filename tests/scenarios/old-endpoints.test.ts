/**
 * The old balancer's operators keep their scripts: every endpoint of
 * /work/shared/reference-lb.md answers on its path with at least the old fields, against
 * real Chroma servers. Also `GET /admin/collection_mappings` (the old shape, full UUIDs),
 * `successful_syncs`/`failed_syncs` in `/wal/status`, `cleaned` from `POST /wal/cleanup`,
 * and `GET /metrics` as JSON when asked with `Accept: application/json`.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { parseExposition } from "../../src/observability/exposition";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const uuid = expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
const isoTime = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
const num = expect.any(Number);
const bool = expect.any(Boolean);

/** The UUID an instance gave a collection, asked of the instance itself. */
async function uuidOn(instanceUrl: string, name: string): Promise<string> {
  return (await json<{ id: string }>(`${instanceUrl}${T}/collections/${name}`)).id;
}

async function createOn(instanceUrl: string, name: string): Promise<string> {
  const res = await post(`${instanceUrl}${T}/collections`, { name });
  expect(res.status).toBe(200);
  return ((await res.json()) as { id: string }).id;
}

test("every endpoint of the old balancer answers with its old fields", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, HEALTH_CHECK_TIMEOUT: "0.3" });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const docs = await client.createCollection({ name: "docs", embeddingFunction: null });
  await docs.add({ ids: ["a", "b"], embeddings: [[1, 0], [0, 1]], documents: ["alpha", "beta"] });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "both instances have the add" });

  // GET /health
  const health = await fetch(`${lb.url}/health`);
  expect({ status: health.status, body: await health.json() }).toEqual({
    status: 200,
    body: { status: "healthy", healthy_instances: "2/2", service: "chroma-lb", architecture: expect.any(String), pending_writes: 0 },
  });

  // GET /status
  // Bun's toMatchObject writes its matchers into the received object: match a copy.
  const status = await json(`${lb.url}/status`);
  expect(structuredClone(status)).toMatchObject({
    service: "chroma-lb",
    architecture: expect.any(String),
    healthy_instances: 2,
    total_instances: 2,
    high_volume_config: { max_memory_mb: 400, max_workers: 3, default_batch_size: 50, max_batch_size: 200, current_memory_mb: num, peak_memory_mb: num },
    unified_wal: { pending_writes: 0, is_syncing: bool, sync_interval_seconds: 1 },
    performance_stats: {
      batches: num,
      memory_pressure_events: num,
      adaptive_batch_reductions: num,
      successful_syncs: num,
      failed_syncs: num,
      avg_sync_throughput: num,
      sync_cycles: num,
    },
  });
  expect(status.performance_stats.successful_syncs).toBeGreaterThan(0);
  expect(status.performance_stats.avg_sync_throughput).toBeGreaterThan(0);
  for (const [k, name] of ["primary", "replica"].entries()) {
    expect(structuredClone(status.instances[k])).toMatchObject({ name, healthy: true, success_rate: num, total_requests: num, consecutive_failures: 0, last_health_check: isoTime });
  }

  // GET /wal/status
  const walStatus = await json(`${lb.url}/wal/status`);
  expect(walStatus).toMatchObject({ pending_writes: 0, is_syncing: bool, successful_syncs: status.performance_stats.successful_syncs as number, failed_syncs: 0 });

  // POST /wal/cleanup: every entry is applied everywhere; max_age_hours 0 removes them all.
  const cleanup = await post(`${lb.url}/wal/cleanup`, { max_age_hours: 0 });
  const cleaned = (await cleanup.json()) as Record<string, number>;
  expect({ status: cleanup.status, body: cleaned }).toEqual({ status: 200, body: { deleted_entries: num, reset_entries: 0, cleaned: num } });
  expect(cleaned.cleaned).toBe(cleaned.deleted_entries);
  expect(cleaned.cleaned).toBeGreaterThanOrEqual(2);

  // GET /collection/mappings
  const [docsOnPrimary, docsOnReplica] = [await uuidOn(primary!.url, "docs"), await uuidOn(replica!.url, "docs")];
  const mappings = await json(`${lb.url}/collection/mappings`);
  expect(mappings).toMatchObject({
    count: 1,
    mappings: [{ collection_name: "docs", primary_collection_id: docsOnPrimary, replica_collection_id: docsOnReplica, created_at: isoTime, updated_at: isoTime }],
  });

  // GET /admin/collection_mappings: the old shape, full UUIDs.
  expect(await json(`${lb.url}/admin/collection_mappings`)).toEqual({
    total_mappings: 1,
    collection_mappings: [
      {
        collection_name: "docs",
        primary_uuid: docsOnPrimary,
        replica_uuid: docsOnReplica,
        created_at: isoTime,
        updated_at: isoTime,
        collection_id: docs.id,
        tenant: "default_tenant",
        database: "default_database",
      },
    ],
  });
  expect(docsOnPrimary).toEqual(uuid);

  // POST /admin/create_mapping: a collection made on each instance by hand, then mapped.
  const [manualPrimary, manualReplica] = [await createOn(primary!.url, "manual"), await createOn(replica!.url, "manual")];
  const created = await post(`${lb.url}/admin/create_mapping`, { collection_name: "manual", primary_id: manualPrimary, replica_id: manualReplica });
  expect({ status: created.status, body: await created.json() }).toEqual({
    status: 200,
    body: { success: true, collection_name: "manual", collection_id: manualPrimary, primary_id: manualPrimary, replica_id: manualReplica, message: expect.any(String) },
  });
  // One id omitted keeps its old value.
  const again = await (await post(`${lb.url}/admin/create_mapping`, { collection_name: "manual", primary_id: manualPrimary })).json();
  expect(again).toMatchObject({ success: true, primary_id: manualPrimary, replica_id: manualReplica });
  expect((await json(`${lb.url}/admin/collection_mappings`)).total_mappings).toBe(2);

  // /api/v2 with a collection name where Chroma wants a UUID.
  const query = await post(`${lb.url}${T}/collections/docs/query`, { query_embeddings: [[1, 0]], n_results: 1, include: ["documents"] });
  expect({ status: query.status, ids: ((await query.json()) as { ids: string[][] }).ids }).toEqual({ status: 200, ids: [["a"]] });

  // DELETE /collection/mappings/{name}
  const removed = await fetch(`${lb.url}/collection/mappings/manual`, { method: "DELETE" });
  expect({ status: removed.status, body: await removed.json() }).toMatchObject({ status: 200, body: { success: true, collection_name: "manual" } });
  expect((await json(`${lb.url}/admin/collection_mappings`)).collection_mappings.map((m: { collection_name: string }) => m.collection_name)).toEqual(["docs"]);

  // GET /admin/instances
  const instances = await json(`${lb.url}/admin/instances`);
  expect(structuredClone(instances)).toMatchObject({ healthy_count: 2, total_count: 2 });
  for (const [k, [name, url]] of [["primary", primary!.url], ["replica", replica!.url]].entries()) {
    expect(structuredClone(instances.instances[k])).toMatchObject({
      name,
      url,
      healthy: true,
      priority: k,
      consecutive_failures: 0,
      total_requests: num,
      successful_requests: num,
      success_rate: num,
      last_health_check: isoTime,
    });
  }

  // POST /admin/instances/{name}/health: an outage for a while, then ended by {healthy: true}.
  const outage = await post(`${lb.url}/admin/instances/replica/health`, { healthy: false, duration_seconds: 30 });
  expect(await outage.json()).toEqual({ success: true, instance: "replica", health_set_to: false, original_health: true, will_restore_in_seconds: 30 });
  expect((await json(`${lb.url}/health`)).healthy_instances).toBe("1/2");
  const ended = await post(`${lb.url}/admin/instances/replica/health`, { healthy: true });
  expect(await ended.json()).toMatchObject({ success: true, instance: "replica", health_set_to: true, original_health: false, permanent: true });
  expect((await json(`${lb.url}/health`)).healthy_instances).toBe("2/2");

  // GET /metrics: Prometheus text by default; JSON figures when asked, memory in MB.
  const text = await fetch(`${lb.url}/metrics`);
  expect(text.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  expect(parseExposition(await text.text()).has("chroma_lb_process_resident_memory_bytes")).toBe(true);
  const prometheusAccept = "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
  expect((await fetch(`${lb.url}/metrics`, { headers: { accept: prometheusAccept } })).headers.get("content-type")).toStartWith("text/plain");
  const figures = await fetch(`${lb.url}/metrics`, { headers: { accept: "application/json" } });
  expect(figures.headers.get("content-type")).toStartWith("application/json");
  const metrics = (await figures.json()) as { memory_usage_mb: number };
  expect(structuredClone(metrics)).toMatchObject({
    service: "chroma-lb",
    memory_usage_mb: num,
    peak_memory_mb: num,
    max_memory_mb: 400,
    memory_percent: num,
    cpu_percent: num,
    healthy_instances: 2,
    total_instances: 2,
    pending_writes: 0,
    successful_syncs: num,
    failed_syncs: 0,
  });
  // Megabytes, not bytes: a Bun process holding two clients is tens of MB.
  expect(metrics.memory_usage_mb).toBeGreaterThan(10);
  expect(metrics.memory_usage_mb).toBeLessThan(4096);
  expect(await json(`${lb.url}/metrics?format=json`)).toMatchObject({ service: "chroma-lb", memory_usage_mb: num });
}, 60_000);
