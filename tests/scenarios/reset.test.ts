/**
 * Reset through chroma-lb: refused in Chroma's error shape unless ALLOW_RESET=true; then
 * every instance and chroma-lb's own log and mappings are cleared, and work goes on.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json } from "../support/http";
import { alertReceiver } from "../support/alerts";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";

async function names(url: string): Promise<string[]> {
  const list = await json<Array<{ name: string }>>(`${url}${T}/collections`);
  return list.map((c) => c.name).sort();
}

test("reset is refused while ALLOW_RESET is off, and nothing is cleared", async () => {
  await using servers = await startChromaServers(2, { allowReset: true });
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  await client.createCollection({ name: "kept_docs", embeddingFunction: null });

  const res = await fetch(`${lb.url}/api/v2/reset`, { method: "POST" });
  expect(res.status).toBe(403);
  expect(await res.json()).toEqual({ error: "Forbidden", message: "Reset is disabled by config" });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0);
  expect(await names(primary!.url)).toEqual(["kept_docs"]);
  expect(await names(replica!.url)).toEqual(["kept_docs"]);
});

test("with ALLOW_RESET=true every instance and chroma-lb's log and mappings are cleared", async () => {
  await using servers = await startChromaServers(2, { allowReset: true });
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, ALLOW_RESET: "true" });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const docs = await client.createCollection({ name: "reset_docs", embeddingFunction: null });
  await docs.add({ ids: ["a", "b"], embeddings: [[1, 2], [3, 4]], documents: ["a", "b"] });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "both instances have the records" });

  const res = await fetch(`${lb.url}/api/v2/reset`, { method: "POST" });
  expect(res.status).toBe(200);
  expect(await res.json()).toBe(true);

  expect(await names(primary!.url)).toEqual([]);
  expect(await names(replica!.url)).toEqual([]);
  expect(await json(`${lb.url}/collection/mappings`)).toEqual({ mappings: [], count: 0 });
  const wal = await json(`${lb.url}/wal/status`);
  expect({ total: wal.total_entries, pending: wal.pending_writes }).toEqual({ total: 0, pending: 0 });

  // The same name can be used again, and reaches both instances.
  const again = await client.createCollection({ name: "reset_docs", embeddingFunction: null });
  expect(again.id).not.toBe(docs.id);
  await again.add({ ids: ["c"], embeddings: [[5, 6]], documents: ["c"] });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0);
  expect(await names(primary!.url)).toEqual(["reset_docs"]);
  expect(await names(replica!.url)).toEqual(["reset_docs"]);
  expect(await again.get({ include: ["documents"] as any })).toMatchObject({ ids: ["c"], documents: ["c"] });
});

test("reset is refused while an instance is down, since it would come back with its data", async () => {
  await using servers = await startChromaServers(2, { allowReset: true });
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, ALLOW_RESET: "true" });
  await replica!.kill();
  // The first refused request marks the replica down at once.
  await fetch(`${lb.url}/api/v2/heartbeat`);
  await waitFor(async () => (await json(`${lb.url}/health`)).healthy_instances === "1/2");
  const res = await fetch(`${lb.url}/api/v2/reset`, { method: "POST" });
  expect(res.status).toBe(503);
  expect(((await res.json()) as { message: string }).message).toContain("replica");
});

test("200 back-to-back resets all answer 200, mark no instance down, and nothing written before one reaches an instance after it", async () => {
  using receiver = alertReceiver();
  const alerts = receiver.alerts;
  await using servers = await startChromaServers(2, { allowReset: true });
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    ALLOW_RESET: "true",
    ADMIN_TOKEN: "reset-token",
    ALERT_WEBHOOK_URL: receiver.url,
    HEALTH_CHECK_INTERVAL: "1",
    HEALTH_CHECK_TIMEOUT: "0.2",
    HEALTH_FAILS: "1",
  });
  const auth = { authorization: "Bearer reset-token" };
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  expect((await fetch(`${lb.url}/api/v2/reset`, { method: "POST" })).status).toBe(401);

  const statuses = new Map<number, number>();
  for (let round = 0; round < 200; round++) {
    if (round % 20 === 0) {
      // Writes in flight around a reset: each either lands before it (and is cleared) or fails.
      const docs = await client.createCollection({ name: `storm_${round}`, embeddingFunction: null });
      const writes = Array.from({ length: 5 }, (_, i) =>
        docs.add({ ids: [`r${round}-${i}`], embeddings: [[i, 1]], documents: [`d${i}`] }).catch(() => undefined),
      );
      const reset = await fetch(`${lb.url}/api/v2/reset`, { method: "POST", headers: auth });
      statuses.set(reset.status, (statuses.get(reset.status) ?? 0) + 1);
      await Promise.all(writes);
      continue;
    }
    const reset = await fetch(`${lb.url}/api/v2/reset`, { method: "POST", headers: auth });
    statuses.set(reset.status, (statuses.get(reset.status) ?? 0) + 1);
  }
  expect(Object.fromEntries(statuses)).toEqual({ 200: 200 });
  const final = await fetch(`${lb.url}/api/v2/reset`, { method: "POST", headers: auth });
  expect(final.status).toBe(200);
  // Nothing written before the last reset came back afterwards: the log is empty and so are both instances.
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0);
  expect(await names(primary!.url)).toEqual([]);
  expect(await names(replica!.url)).toEqual([]);
  const instances = (await json(`${lb.url}/admin/instances`, { headers: auth })).instances;
  expect(instances.map((i: { healthy: boolean }) => i.healthy)).toEqual([true, true]);
  expect(alerts).toEqual([]);
}, 120_000);
