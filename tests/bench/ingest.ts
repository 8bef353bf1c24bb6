/**
 * Ingest figures: what keeping a second copy through chroma-lb costs, against a client
 * that writes every batch to both instances itself (the physical limit of two copies).
 *
 *   bun run bench            (LOG_STORE=sqlite,postgres: the stores measured, each in turn;
 *                             BENCH_DOCS=20000 BENCH_WRITERS=4 BENCH_BATCH=100 BENCH_DIM=384 by default;
 *                             BENCH_LB_ONLY=1 stops after the chroma-lb phase, for quick comparisons;
 *                             BENCH_SKIP_LATENCY=1 leaves out the per-request latency table)
 *
 * Each phase runs on two fresh real Chroma servers (so none inherits another's data or
 * background indexing), with the official client and `BENCH_WRITERS` concurrent writers:
 * (a) ingest through chroma-lb, started as a child process (LOG_LEVEL=warn);
 * (b) baseline: the client writes each batch to both instances itself, in parallel, and
 *     again one instance after the other.
 * Prints docs/s of each, the ratio, replication lag p50/p99/max (append-to-applied on the
 * replica from /wal/status `replay_lag_ms`; answer-to-applied, from the position each answer
 * carries and the replica's position in /wal/status; and the time from the end of ingest
 * until nothing is pending), and chroma-lb's peak RSS (VmRSS of its process, every 100 ms).
 * Targets: ratio >= 0.9, lag p99 < 1 s, RSS < 150 MB. Everything is stopped at the end,
 * also on error. With several stores, a last table puts them side by side: ingest against the
 * client writing both instances, one-record add latency added over direct (p50/p99), replica
 * lag p50/p99 and peak RSS. The Postgres store gets a fresh database on BENCH_POSTGRES_URL
 * (postgres://postgres@127.0.0.1:5432), dropped at the end.
 */
import fs from "node:fs";
import { ChromaClient } from "chromadb";
import postgres from "postgres";
import { startChromaServers, startLbProcess, waitFor, type ChromaServer } from "../support";
import { latencyTable, measureLatency, type LatencyRow } from "./latency";
import { cpuSeconds, vmRssBytes } from "./proc";

const docs = Number(process.env.BENCH_DOCS ?? 20_000);
const writers = Number(process.env.BENCH_WRITERS ?? 4);
const batchSize = Number(process.env.BENCH_BATCH ?? 100);
const dim = Number(process.env.BENCH_DIM ?? 384);
const T = "/api/v2/tenants/default_tenant/databases/default_database";

const now = () => performance.now();

interface Batch {
  ids: string[];
  embeddings: number[][];
  documents: string[];
  metadatas: Array<Record<string, number | string>>;
}

/** Every batch is made before any clock starts, so generating vectors is not measured. */
function makeBatches(prefix: string): Batch[] {
  const out: Batch[] = [];
  for (let start = 0; start < docs; start += batchSize) {
    const n = Math.min(batchSize, docs - start);
    const ids = Array.from({ length: n }, (_, i) => `${prefix}-${start + i}`);
    out.push({
      ids,
      embeddings: ids.map(() => Array.from({ length: dim }, () => Math.random() * 2 - 1)),
      documents: ids.map((id) => `document ${id}: some text of a typical length for a chunk of a page, about a hundred characters.`),
      metadatas: ids.map((_, i) => ({ source: "bench", chunk: start + i, group: (start + i) % 10 })),
    });
  }
  return out;
}

/** Runs `write` over every batch with `writers` concurrent writers; answers docs per second. */
async function ingest(batches: Batch[], write: (batch: Batch) => Promise<void>): Promise<{ docsPerSecond: number; ms: number }> {
  let next = 0;
  const started = now();
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (next < batches.length) await write(batches[next++]!);
    }),
  );
  const ms = now() - started;
  return { docsPerSecond: (docs / ms) * 1000, ms };
}

async function count(server: ChromaServer, name: string): Promise<number> {
  const collection = (await (await fetch(`${server.url}${T}/collections/${name}`)).json()) as { id: string };
  return (await (await fetch(`${server.url}${T}/collections/${collection.id}/count`)).json()) as number;
}

/** CPU seconds each process spends while `work` runs. */
async function measureCpu<T>(pids: Record<string, number>, work: () => Promise<T>): Promise<{ result: T; cpu: Record<string, number> }> {
  const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)]));
  const result = await work();
  const cpu = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid) - before[name]!]));
  return { result, cpu };
}
const cpuText = (cpu: Record<string, number>) => Object.entries(cpu).map(([name, s]) => `${name} ${s.toFixed(1)}`).join(", ");

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const rate = (r: number) => `${Math.round(r)} docs/s`;

console.log(`chroma-lb ingest benchmark: ${docs} docs of ${dim} dims, batches of ${batchSize}, ${writers} writers`);
console.log(`(machine: ${navigator.hardwareConcurrency} CPUs, load average ${fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")})`);

/** Runs one phase on two fresh Chroma servers, so no phase inherits another's data or background work. */
async function onFreshServers<T>(phase: (primary: ChromaServer, replica: ChromaServer) => Promise<T>): Promise<T> {
  await using servers = await startChromaServers(2);
  return await phase(servers[0]!, servers[1]!);
}

/** The same ingest through chroma-lb (a child process), with lag and memory figures. */
async function throughChromaLb(primary: ChromaServer, replica: ChromaServer, lbEnv: Record<string, string>) {
  await using lb = await startLbProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn", ...lbEnv });
  // The harness may start it under `setpriv`, which execs: the pid must be chroma-lb's own.
  const cmdline = fs.readFileSync(`/proc/${lb.pid}/cmdline`, "utf8").replaceAll("\0", " ");
  if (!cmdline.includes("src/index.ts")) throw new Error(`pid ${lb.pid} is not chroma-lb: ${cmdline}`);
  let peakRss = vmRssBytes(lb.pid) ?? 0;
  const sampler = setInterval(() => {
    const rss = vmRssBytes(lb.pid);
    if (rss !== null) peakRss = Math.max(peakRss, rss);
  }, 100);
  // Replication lag as a client sees it: from the answer to a write (which carries its log
  // position) until /wal/status shows the replica has applied every entry up to that position.
  const realFetch = globalThis.fetch;
  const acks: Array<{ seq: number; atMs: number }> = [];
  globalThis.fetch = (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const response = await realFetch(input, init);
    const position = response.headers.get("x-chroma-lb-position");
    if (position !== null) acks.push({ seq: Number(position), atMs: now() });
    return response;
  }) as typeof fetch;
  const replicaPositions: Array<{ atMs: number; position: number }> = [];
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const status = (await (await realFetch(`${lb.url}/wal/status`)).json()) as { instances: Array<{ name: string; position: number }> };
      replicaPositions.push({ atMs: now(), position: status.instances.find((i) => i.name === "replica")!.position });
      await Bun.sleep(50);
    }
  })();
  try {
    const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
    const collection = await client.createCollection({ name: "bench_lb", embeddingFunction: null });
    const batches = makeBatches("lb");
    const { result, cpu } = await measureCpu({ "chroma-lb": lb.pid, primary: primary.pid, replica: replica.pid }, () =>
      ingest(batches, (batch) => collection.add(batch)),
    );
    console.log(`through chroma-lb: ${rate(result.docsPerSecond)} (CPU seconds during ingest: ${cpuText(cpu)})`);
    const ingestEnd = now();
    await waitFor(
      async () => ((await (await realFetch(`${lb.url}/wal/status`)).json()) as { pending_writes: number }).pending_writes === 0,
      { timeoutMs: 300_000, intervalMs: 10, message: "replica applied the whole log" },
    );
    const drainMs = now() - ingestEnd;
    const walStatus = (await (await realFetch(`${lb.url}/wal/status`)).json()) as any;
    const counts = await Promise.all([primary, replica].map((s) => count(s, "bench_lb")));
    if (counts.some((n) => n !== docs)) throw new Error(`instances hold ${counts.join(" and ")} records of bench_lb, expected ${docs} each`);
    const ackLagsMs = acks
      .map((ack) => {
        const applied = replicaPositions.find((p) => p.position >= ack.seq && p.atMs >= ack.atMs) ?? replicaPositions.find((p) => p.position >= ack.seq);
        return applied ? Math.max(0, applied.atMs - ack.atMs) : Number.NaN;
      })
      .filter((ms) => !Number.isNaN(ms))
      .sort((a, b) => a - b);
    return { ...result, cpu, drainMs, walStatus, ackLagsMs, peakRss };
  } catch (error) {
    console.error(`--- chroma-lb log (end) ---\n${lb.logs().split("\n").slice(-30).join("\n")}`);
    throw error;
  } finally {
    clearInterval(sampler);
    watching = false;
    await watcher;
    globalThis.fetch = realFetch;
  }
}

/** Baseline: the client keeps both copies itself, each batch to both instances. */
async function clientWritesBoth(primary: ChromaServer, replica: ChromaServer, mode: "parallel" | "sequential") {
  const collections = await Promise.all(
    [primary, replica].map((s) => new ChromaClient({ host: "127.0.0.1", port: s.port }).createCollection({ name: `bench_baseline_${mode}`, embeddingFunction: null })),
  );
  const batches = makeBatches(mode);
  // How long Chroma itself takes for one batch, to put the replication lag in scale.
  const latenciesMs: number[] = [];
  const timedAdd = async (c: (typeof collections)[number], batch: Batch) => {
    const started = now();
    await c.add(batch);
    latenciesMs.push(now() - started);
  };
  const { result, cpu } = await measureCpu({ primary: primary.pid, replica: replica.pid }, () =>
    ingest(batches, async (batch) => {
      if (mode === "parallel") await Promise.all(collections.map((c) => timedAdd(c, batch)));
      else for (const c of collections) await timedAdd(c, batch);
    }),
  );
  latenciesMs.sort((a, b) => a - b);
  const at = (q: number) => Math.round(latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(q * latenciesMs.length))] ?? 0);
  console.log(`baseline, client writes both instances (${mode}): ${rate(result.docsPerSecond)} (CPU seconds: ${cpuText(cpu)})`);
  return { ...result, cpu, addLatencyMs: { p50: at(0.5), p99: at(0.99), max: Math.round(latenciesMs.at(-1) ?? 0) } };
}

const stores = (process.env.LOG_STORE ?? "sqlite,postgres").split(",").map((name) => name.trim()).filter(Boolean);
const postgresBase = process.env.BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432";

/** chroma-lb's variables for one store; the Postgres one gets a fresh database, dropped by `drop`. */
async function storeEnv(store: string): Promise<{ env: Record<string, string>; drop: () => Promise<void> }> {
  if (store === "sqlite") return { env: { LOG_STORE: "sqlite", DATABASE_URL: "" }, drop: async () => {} };
  if (store !== "postgres") throw new Error(`LOG_STORE: expected sqlite or postgres, got ${store}`);
  const name = `bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(`${postgresBase}/postgres`, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  return {
    env: { LOG_STORE: "postgres", DATABASE_URL: `${postgresBase}/${name}` },
    drop: async () => {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end({ timeout: 2 });
    },
  };
}

const perStore: Array<{ store: string; throughLb: Awaited<ReturnType<typeof throughChromaLb>>; latency: LatencyRow[] | null }> = [];
/** Runs `phase` with chroma-lb on a fresh store of its own (as a fresh DATA_DIR is for SQLite). */
async function withStore<T>(store: string, phase: (env: Record<string, string>) => Promise<T>): Promise<T> {
  const { env, drop } = await storeEnv(store);
  try {
    return await phase(env);
  } finally {
    await drop();
  }
}

for (const store of stores) {
  console.log(`--- LOG_STORE=${store}`);
  const throughLb = await withStore(store, (env) => onFreshServers((p, r) => throughChromaLb(p, r, env)));
  const latency = process.env.BENCH_SKIP_LATENCY ? null : await withStore(store, (env) => measureLatency(undefined, env));
  perStore.push({ store, throughLb, latency });
}
if (process.env.BENCH_LB_ONLY) {
  for (const { store, throughLb: t } of perStore) console.log(`LOG_STORE=${store}: ${rate(t.docsPerSecond)}, chroma-lb peak RSS: ${mb(t.peakRss)}`);
  process.exit(0);
}
const baselineParallel = await onFreshServers((p, r) => clientWritesBoth(p, r, "parallel"));
const baselineSequential = await onFreshServers((p, r) => clientWritesBoth(p, r, "sequential"));

for (const { store, throughLb, latency } of perStore) {
  console.log("");
  console.log(`LOG_STORE=${store}`);
  printDetail(throughLb);
  if (latency) {
    console.log("");
    console.log(latencyTable(latency));
  }
}

// The stores side by side.
const compare: string[][] = [["LOG_STORE", "ingest", "vs client writing both", "add 1 record added p50 / p99", "replica lag p50 / p99", "peak RSS"]];
for (const { store, throughLb: t, latency } of perStore) {
  const lag = t.walStatus.replay_lag_ms as { p50: number; p99: number };
  const at = (path: string) => latency?.find((r) => r.kind === "add 1 record" && r.path === path);
  const added = at("chroma-lb") && at("direct") ? `${(at("chroma-lb")!.p50 - at("direct")!.p50).toFixed(2)} / ${(at("chroma-lb")!.p99 - at("direct")!.p99).toFixed(2)} ms` : "-";
  compare.push([store, rate(t.docsPerSecond), (t.docsPerSecond / baselineParallel.docsPerSecond).toFixed(2), added, `${lag.p50} / ${lag.p99} ms`, mb(t.peakRss)]);
}
if (perStore.length > 1) compare.push(["postgres / sqlite ingest", (perStore[1]!.throughLb.docsPerSecond / perStore[0]!.throughLb.docsPerSecond).toFixed(2), "", "", "", ""]);
console.log("");
console.log(`client writing both instances itself (parallel): ${rate(baselineParallel.docsPerSecond)}`);
const cw = compare[0]!.map((_, i) => Math.max(...compare.map((r) => r[i]!.length)));
for (const [k, row] of compare.entries()) {
  console.log(`| ${row.map((c, i) => c.padEnd(cw[i]!)).join(" | ")} |`);
  if (k === 0) console.log(`|${cw.map((w) => "-".repeat(w + 2)).join("|")}|`);
}

function printDetail(throughLb: Awaited<ReturnType<typeof throughChromaLb>>) {
const { drainMs, walStatus, ackLagsMs, peakRss } = throughLb;
const quantile = (q: number) => Math.round(ackLagsMs[Math.min(ackLagsMs.length - 1, Math.floor(q * ackLagsMs.length))] ?? 0);

const lag = walStatus.replay_lag_ms as { p50: number; p99: number; max: number; samples: number };
const ratio = throughLb.docsPerSecond / baselineParallel.docsPerSecond;
const ratioSequential = throughLb.docsPerSecond / baselineSequential.docsPerSecond;
const rows: Array<[string, string, string]> = [
  ["through chroma-lb", rate(throughLb.docsPerSecond), ""],
  ["baseline: client writes both, in parallel", rate(baselineParallel.docsPerSecond), ""],
  ["baseline: client writes both, one after the other", rate(baselineSequential.docsPerSecond), ""],
  ["ratio chroma-lb / parallel baseline", ratio.toFixed(2), ">= 0.9"],
  ["ratio chroma-lb / sequential baseline", ratioSequential.toFixed(2), ""],
  [`replication lag, append to applied on replica (/wal/status, ${lag.samples} entries)`, `${lag.p50} / ${lag.p99} / ${lag.max} ms`, "p99 < 1000 ms"],
  [`replication lag, answer to client to applied on replica (${ackLagsMs.length} writes, 50 ms polls)`, `${quantile(0.5)} / ${quantile(0.99)} / ${Math.round(ackLagsMs.at(-1) ?? 0)} ms`, "p99 < 1000 ms"],
  ["end of ingest until nothing pending", `${Math.round(drainMs)} ms`, ""],
  [
    `for scale: one Chroma add of a batch, ${writers} writers per instance, p50 / p99 / max`,
    `${baselineParallel.addLatencyMs.p50} / ${baselineParallel.addLatencyMs.p99} / ${baselineParallel.addLatencyMs.max} ms`,
    "",
  ],
  ["chroma-lb peak RSS (VmRSS, every 100 ms)", mb(peakRss), "< 120 MB"],
  ["CPU seconds during ingest through chroma-lb", cpuText(throughLb.cpu), ""],
  ["CPU seconds during the parallel baseline", cpuText(baselineParallel.cpu), ""],
  ["group commit: transactions / entries / largest", `${walStatus.group_commit.transactions} / ${walStatus.group_commit.entries} / ${walStatus.group_commit.largestGroup}`, ""],
  ["replay: requests / entries", `${walStatus.batches.batches_sent} / ${walStatus.batches.entries_replayed}`, ""],
];
const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length), ["measure", "value", "target"][i]!.length));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
console.log("");
console.log(line(["measure", "value", "target"]));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const row of rows) console.log(line(row));

}
