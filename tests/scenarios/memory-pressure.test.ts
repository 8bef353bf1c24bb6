/**
 * Memory pressure: with WAL_MAX_MEMORY_MB below what the process uses, replay batches shrink
 * to one entry, the pressure is counted, and replay still brings the replica up to date.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { dumpInstance } from "../support/compare";
import { json, post } from "../support/http";

afterAll(() => killAll());

test("replay under memory pressure sends one entry per request, counts the pressure, and converges", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  // Any Bun process uses more than 32 MB, so every memory sample is under pressure.
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    WAL_MAX_MEMORY_MB: "32",
  });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).batches.current_batch_size === 1, {
    message: "the memory sampler shrinks the batch size to 1",
  });

  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const docs = await client.createCollection({ name: "pressure_docs", embeddingFunction: null });
  // Hold the replica out so that it owes a backlog, which would otherwise be merged.
  await post(`${lb.url}/admin/instances/replica/health`, { healthy: false });
  for (let i = 0; i < 12; i++) {
    await docs.add({ ids: [`d${i}`], embeddings: [[i, i + 1]], documents: [`doc ${i}`], metadatas: [{ i }] });
  }
  const before = await json(`${lb.url}/wal/status`);
  await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "the replica catches up" });
  const after = await json(`${lb.url}/wal/status`);

  // Twelve owed adds, each its own replay request (they would merge into one without pressure).
  expect(after.batches.batches_sent - before.batches.batches_sent).toBe(12);
  expect(after.memory.memory_pressure_events).toBeGreaterThanOrEqual(1);
  expect(after.memory.adaptive_batch_reductions).toBeGreaterThanOrEqual(1);
  const [onPrimary, onReplica] = await Promise.all([dumpInstance(primary!.url), dumpInstance(replica!.url)]);
  expect(onReplica).toEqual(onPrimary);
});
