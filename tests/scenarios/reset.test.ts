/**
 * Reset through chroma-lb: refused in Chroma's error shape unless ALLOW_RESET=true; then
 * every instance and chroma-lb's own log and mappings are cleared, and work goes on.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json } from "../support/http";

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
