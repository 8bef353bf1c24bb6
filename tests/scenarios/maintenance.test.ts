/**
 * Planned downtime: an instance put in maintenance receives no client request but still
 * every replayed write, and serves again once returned. A simulated outage
 * (POST /admin/instances/{name}/health) holds for its duration whatever the health checker
 * sees, sends writes elsewhere, and ends by itself.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbProcess, waitFor } from "../support";
import { dumpInstances, type DumpedRecord } from "../support/compare";
import { json, post } from "../support/http";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
// Reads prefer the replica whenever it may serve, so a read that reaches it by mistake shows.
const lbEnv = { HEALTH_CHECK_INTERVAL: "1", HEALTH_CHECK_TIMEOUT: "0.3", REQUEST_TIMEOUT: "5", READ_REPLICA_RATIO: "1" };

/** Values exactly representable as float32, so they survive Chroma's storage unchanged. */
const embeddingFor = (n: number) => [(n % 16) / 4, ((n * 7) % 13) / 8, (n % 5) / 2 - 1, 1];
const recordFor = (n: number): DumpedRecord => ({ id: `doc-${String(n).padStart(3, "0")}`, embedding: embeddingFor(n), document: `doc ${n}`, metadata: { n } });

async function setup() {
  const servers = await startChromaServers(2);
  const [primary, replica] = servers;
  const lb = await startLbProcess({ ...lbEnv, CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const docs = await client.createCollection({ name: "docs", embeddingFunction: null });
  const written: DumpedRecord[] = [];
  /** Adds records through chroma-lb (raw, to see who took the write). */
  const add = async (ns: number[]) => {
    const records = ns.map(recordFor);
    const res = await post(`${lb.url}${T}/collections/${docs.id}/add`, {
      ids: records.map((r) => r.id),
      embeddings: records.map((r) => r.embedding),
      documents: records.map((r) => r.document),
      metadatas: records.map((r) => r.metadata),
    });
    expect(res.status).toBe(201);
    written.push(...records);
    return res.headers.get("x-chroma-lb-instance");
  };
  /** A record read, a search and a count through chroma-lb: who served each. */
  const readers = async () => {
    const get = await post(`${lb.url}${T}/collections/${docs.id}/get`, { ids: [written[0]!.id] });
    const query = await post(`${lb.url}${T}/collections/${docs.id}/query`, { query_embeddings: [embeddingFor(1)], n_results: 2 });
    const count = await fetch(`${lb.url}${T}/collections/${docs.id}/count`);
    const catalog = await fetch(`${lb.url}${T}/collections/docs`);
    for (const res of [get, query, count, catalog]) expect(res.status).toBe(200);
    expect(await count.json()).toBe(written.length);
    return [get, query, count, catalog].map((res) => res.headers.get("x-chroma-lb-instance"));
  };
  const instances = async () => (await json<{ instances: Array<Record<string, any>> }>(`${lb.url}/admin/instances`)).instances;
  const sorted = () => [...written].sort((a, b) => (a.id < b.id ? -1 : 1));
  return {
    servers,
    lb,
    primary: primary!,
    replica: replica!,
    add,
    readers,
    instances,
    sorted,
    async [Symbol.asyncDispose]() {
      await lb[Symbol.asyncDispose]();
      await servers[Symbol.asyncDispose]();
    },
  };
}

test("an instance in maintenance gets no client request but every replayed write, and serves again when returned", async () => {
  await using env = await setup();
  const { lb } = env;
  await env.add([1, 2, 3, 4, 5]);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "replica has the seed" });
  expect(await env.readers()).toEqual(["replica", "replica", "replica", "replica"]);

  const enabled = await post(`${lb.url}/admin/instances/replica/maintenance`, { enabled: true });
  expect({ status: enabled.status, body: await enabled.json() }).toEqual({
    status: 200,
    body: { success: true, instance: "replica", maintenance: true, drained: true, in_flight: 0 },
  });
  const [, during] = await env.instances();
  expect(during).toMatchObject({ name: "replica", state: "maintenance", maintenance: true, serving: false, healthy: true });
  const requestsBefore = during!.total_requests;

  // Writes and reads of every kind: none reaches the replica.
  for (let k = 0; k < 10; k++) {
    expect(await env.add([10 + 2 * k, 11 + 2 * k])).toBe("primary");
    expect(await env.readers()).toEqual(["primary", "primary", "primary", "primary"]);
  }
  // Replayed writes still reach it: read the replica directly.
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).instances[1].pending_entries === 0, { message: "replica replayed every write" });
  const [onPrimary, onReplica] = await dumpInstances([env.primary.url, env.replica.url]);
  expect(onReplica).toEqual(onPrimary!);
  expect(onReplica!["default_tenant/default_database"]!.docs!.records).toEqual(env.sorted());
  const [, stillInMaintenance] = await env.instances();
  expect({ state: stillInMaintenance!.state, total_requests: stillInMaintenance!.total_requests }).toEqual({ state: "maintenance", total_requests: requestsBefore });

  const disabled = await post(`${lb.url}/admin/instances/replica/maintenance`, { enabled: false });
  expect(await disabled.json()).toEqual({ success: true, instance: "replica", maintenance: false, drained: true, in_flight: expect.any(Number) });
  const [, after] = await env.instances();
  expect(after).toMatchObject({ name: "replica", state: "healthy", maintenance: false, serving: true });
  expect(await env.readers()).toEqual(["replica", "replica", "replica", "replica"]);
}, 60_000);

test("a simulated outage holds for its duration though the checker sees the instance healthy, then ends by itself", async () => {
  await using env = await setup();
  const { lb } = env;
  await env.add([1, 2, 3]);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "replica has the seed" });

  const sentMs = Date.now();
  const set = await post(`${lb.url}/admin/instances/primary/health`, { healthy: false, duration_seconds: 3 });
  expect({ status: set.status, body: await set.json() }).toEqual({
    status: 200,
    body: { success: true, instance: "primary", health_set_to: false, original_health: true, will_restore_in_seconds: 3 },
  });
  const [simulated] = await env.instances();
  // Read before toMatchObject: Bun's toMatchObject writes its asymmetric matchers into the received object.
  const untilMs = Date.parse(simulated!.simulated.until);
  const probedMs = Date.parse(simulated!.last_health_check);
  expect(simulated).toMatchObject({ name: "primary", healthy: false, state: "down", simulated: { healthy: false, until: expect.any(String) } });
  expect(untilMs - sentMs).toBeGreaterThanOrEqual(3_000);

  // Writes go to the replica; reads too (the primary is out).
  for (let k = 0; k < 5; k++) expect(await env.add([10 + k])).toBe("replica");
  expect(await env.readers()).toEqual(["replica", "replica", "replica", "replica"]);
  expect((await json(`${lb.url}/status`)).write_target).toBe("replica");

  // The checker keeps probing the primary, its probes pass, and the outage holds anyway.
  const probed = await waitFor(
    async () => {
      const [p] = await env.instances();
      return Date.parse(p!.last_health_check) >= probedMs + 1_000 && p;
    },
    { timeoutMs: 3_000, message: "a health check of the primary during the outage" },
  );
  expect(probed).toMatchObject({ healthy: false, state: "down", consecutive_failures: 0, last_error: null });

  // It returns by itself once the duration is over, catches up, and takes writes again.
  const snapshots: Array<{ atMs: number; healthy: boolean; state: string; owed: number; writeTarget: string }> = [];
  const returned = await waitFor(
    async () => {
      const status = await json(`${lb.url}/status`);
      const p = status.instances[0];
      snapshots.push({ atMs: Date.now(), healthy: p.healthy, state: p.state, owed: p.lag.entries, writeTarget: status.write_target });
      return p.healthy && p.state === "healthy" && p.lag.entries === 0 && status.write_target === "primary" && Date.now();
    },
    { timeoutMs: 6_000, intervalMs: 10, message: "primary back by itself" },
  );
  expect(returned - sentMs).toBeGreaterThanOrEqual(3_000);
  // No moment showed the primary as the write target while it still owed the writes it missed.
  expect(snapshots.filter((s) => s.writeTarget === "primary" && s.owed > 0)).toEqual([]);
  expect(snapshots.filter((s) => s.healthy && s.state === "healthy" && s.owed > 0)).toEqual([]);

  expect((await json(`${lb.url}/status`)).instances[0].simulated).toBeNull();
  expect(await env.add([20])).toBe("primary");
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "both instances have every write" });
  const [onPrimary, onReplica] = await dumpInstances([env.primary.url, env.replica.url]);
  expect(onReplica).toEqual(onPrimary!);
  expect(onPrimary!["default_tenant/default_database"]!.docs!.records).toEqual(env.sorted());
}, 60_000);
