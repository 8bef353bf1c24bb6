/**
 * Health does not flap under load: a single 100,000-id add through chroma-lb (applied by the
 * primary, then replayed to the replica) marks no instance down at any moment and sends no
 * alert. Before the probe was the heartbeat alone, it also read `collections_count`, which
 * Chroma 1.0.5 answers seconds late under such an add: each instance was marked down for
 * about 1.5 s in turn, with a down and an up alert each.
 *
 * Chroma 1.0.5 takes the 100,000 ids in one request although its pre-flight says
 * `max_batch_size: 5461` (measured: 201, count 100000), so the add is one request, as a
 * client would send it; replay splits it into batches of max_batch_size for the replica.
 */
import { afterAll, expect, test } from "bun:test";
import path from "node:path";
import { loadConfig } from "../../src/config";
import { startServer } from "../../src/server";
import { freePort, killAll, makeTempDir, removeTempDir, startChromaServers, waitFor } from "../support";
import { json, post } from "../support/http";
import { alertReceiver } from "../support/alerts";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const idCount = 100_000;

/** chroma-lb in this process with its services at hand, so the test can subscribe to health changes. */
async function startLb(env: Record<string, string>) {
  const tempDir = makeTempDir();
  try {
    const config = loadConfig({ PORT: String(await freePort()), DATA_DIR: path.join(tempDir, "data"), LOG_LEVEL: process.env.LOG_LEVEL ?? "warn", ...env });
    const server = await startServer(config);
    return {
      ...server,
      async [Symbol.asyncDispose]() {
        try {
          await server.stop();
        } finally {
          removeTempDir(tempDir);
        }
      },
    };
  } catch (error) {
    removeTempDir(tempDir);
    throw error;
  }
}

interface InstanceStatus {
  name: string;
  healthy: boolean;
  serving: boolean;
  state: string;
  last_health_check: string | null;
}

test("a single 100,000-id add through chroma-lb marks no instance down at any moment and sends no alert", async () => {
  using receiver = alertReceiver();
  const alerts = receiver.alerts;
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLb({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    ALERT_WEBHOOK_URL: receiver.url,
    HEALTH_CHECK_INTERVAL: "1",
    HEALTH_CHECK_TIMEOUT: "0.3",
    HEALTH_FAILS: "2",
    HEALTH_PASSES: "2",
    // The add itself may take longer than the default 30 s on a busy machine; what this test
    // judges is health while it runs, not how fast Chroma indexes.
    REQUEST_TIMEOUT: "120",
  });
  const { registry } = lb.services;
  // Every change of an instance's health reaches the listeners, however short it is.
  const changes: string[] = [];
  registry.onChange((instance, healthy) => changes.push(`${instance.name} ${healthy ? "up" : "down"}: ${instance.lastError}`));
  expect(registry.all.map((i) => i.healthy)).toEqual([true, true]);

  const created = await post(`${lb.url}${T}/collections`, { name: "bulk_vectors", configuration: {} });
  expect(created.status).toBe(200);
  const collectionId = ((await created.json()) as { id: string }).id;
  // Small embeddings and no documents: the load is the number of ids, not the bytes.
  const ids = Array.from({ length: idCount }, (_, i) => `v${i}`);
  const embeddings = ids.map((_, i) => [(i % 97) / 97, (i % 89) / 89, (i % 83) / 83]);

  let answer: { status: number; body: string } | null = null;
  const add = post(`${lb.url}${T}/collections/${collectionId}/add`, { ids, embeddings }).then(async (res) => {
    answer = { status: res.status, body: await res.text() };
  });
  // What /admin/instances shows while the add runs and while it is replayed to the replica.
  const seen: InstanceStatus[][] = [];
  const probesWhileAdding = new Map<string, Set<string>>(registry.all.map((i) => [i.name, new Set()]));
  await waitFor(
    async () => {
      const { instances } = await json<{ instances: InstanceStatus[] }>(`${lb.url}/admin/instances`);
      seen.push(instances);
      if (!answer) for (const i of instances) probesWhileAdding.get(i.name)!.add(i.last_health_check!);
      return answer !== null && (await json(`${lb.url}/wal/status`)).pending_writes === 0;
    },
    { timeoutMs: 140_000, intervalMs: 50, message: "the add answered and replayed to the replica" },
  );
  await add;
  expect(answer!).toEqual({ status: 201, body: "{}" });

  // Both instances hold every id: the load really ran on each.
  for (const server of [primary!, replica!]) {
    const collection = await json<{ id: string }>(`${server.url}${T}/collections/bulk_vectors`);
    expect(await json(`${server.url}${T}/collections/${collection.id}/count`)).toBe(idCount);
  }
  // Probes ran during the add (the test is not vacuous), and no moment showed an instance down.
  expect([...probesWhileAdding.values()].map((checks) => checks.size >= 2)).toEqual([true, true]);
  const notHealthy = seen.flat().filter((i) => !i.healthy || !i.serving || i.state !== "healthy");
  expect(notHealthy).toEqual([]);
  expect(changes).toEqual([]);

  // The alert path works: a simulated outage is alerted, and it is the only alert received.
  const simulated = await post(`${lb.url}/admin/instances/replica/health`, { healthy: false, duration_seconds: 60 });
  expect(simulated.status).toBe(200);
  await waitFor(() => alerts.length > 0, { message: "the simulated outage's alert" });
  expect(alerts.map((a) => ({ event: a.event, instance: a.instance }))).toEqual([{ event: "instance_down", instance: "replica" }]);
}, 180_000);
