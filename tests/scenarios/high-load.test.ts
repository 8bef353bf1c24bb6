/**
 * Use case 4 (high load), through chroma-lb with the official client: 10 collections created
 * concurrently, 50 documents each added in batches of 10, 20 clients querying while the
 * documents go in (the workload of `bun run bench:load`, {@link runLoad}). Afterwards each
 * instance, read directly once nothing is pending, holds every document exactly as written;
 * every create, add and query was answered with Chroma's success status; and chroma-lb's
 * peak RSS stayed within WAL_MAX_MEMORY_MB.
 *
 * Chroma 1.0.5 itself answers some queries 500 ("Error creating hnsw segment reader:
 * Nothing found on disk") right after an ingest; chroma-lb sends such a read to another
 * current instance, so no client sees one. chroma-lb runs as its own process, so the RSS
 * it reports is its own, not the test runner's.
 */
import { afterAll, expect, test } from "bun:test";
import { killAll, startChromaServers, startLbProcess, waitFor } from "../support";
import { dumpInstances } from "../support/compare";
import { json } from "../support/http";
import { answerCounts, differences, runLoad, useCase4 } from "../bench/load";

afterAll(() => killAll());

const walMaxMemoryMb = 400;

interface WalStatus {
  pending_writes: number;
  memory: { peak_rss_mb: number; max_memory_mb: number };
}

test("use case 4: concurrent creates, batched ingest and 20 querying clients through chroma-lb: every document on every instance, every query 200, memory within WAL_MAX_MEMORY_MB", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    WAL_MAX_MEMORY_MB: String(walMaxMemoryMb),
  });

  const run = await runLoad([lb.url], useCase4);
  const status = await waitFor(
    async () => {
      const wal = await json<WalStatus>(`${lb.url}/wal/status`);
      return wal.pending_writes === 0 && wal;
    },
    { timeoutMs: 30_000, message: "both instances applied the whole log" },
  );
  const convergedMs = performance.now() - run.startedAtMs;

  const queries = run.answers.filter((a) => a.kind === "query");
  const servedBy = Object.fromEntries(["primary", "replica"].map((name) => [name, queries.filter((q) => q.instance === name).length]));
  console.log(
    `high load (seed ${useCase4.seed}): both instances held every document ${(convergedMs / 1000).toFixed(2)} s after the first create ` +
      `(old system: 36.4 s); ${queries.length} queries (served by ${JSON.stringify(servedBy)}); peak RSS ${status.memory.peak_rss_mb} MB`,
  );

  // Every document on every instance, read from each instance directly.
  const dumps = await dumpInstances([primary!.url, replica!.url]);
  expect(dumps.map((dump) => differences(dump, run.expected))).toEqual([[], []]);
  expect(Object.keys(dumps[0]!["default_tenant/default_database"]!).length).toBe(useCase4.collections);

  // Every answer a success: each create and each batch once, as Chroma answers them, and
  // every query, collection look-up and pre-flight 200.
  const batches = useCase4.collections * Math.ceil(useCase4.documentsPerCollection / useCase4.batchSize);
  expect(answerCounts(run.answers.filter((a) => a.kind === "create" || a.kind === "add"))).toEqual({ "add 201": batches, "create 200": useCase4.collections });
  expect(run.answers.filter((a) => a.status !== (a.kind === "add" ? 201 : 200))).toEqual([]);
  expect(run.clientErrors).toEqual([]);
  // The queries really ran while the documents went in.
  expect(queries.filter((q) => q.atMs < run.ingestDoneAtMs).length).toBeGreaterThanOrEqual(useCase4.queryClients);

  // Memory within the bound chroma-lb was given (its own process: the RSS is its own).
  expect(status.memory.max_memory_mb).toBe(walMaxMemoryMb);
  expect(status.memory.peak_rss_mb).toBeGreaterThan(0);
  expect(status.memory.peak_rss_mb).toBeLessThan(walMaxMemoryMb);
}, 60_000);
