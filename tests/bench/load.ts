/**
 * Use case 4 (high load): 10 collections created concurrently, 50 documents each added in
 * batches of 10, and 20 clients querying while the documents go in, all with the official
 * `chromadb` client (explicit embeddings, `embeddingFunction: null`).
 *
 *   bun run bench:load            (LOAD_DIM=384 LOAD_SEED=4 LOAD_ROUNDS=1 by default)
 *
 * The workload runs twice in one run, each time on two fresh real Chroma servers (so
 * neither run warms the other): (a) through chroma-lb, started as a child process; (b) as
 * a client that keeps both copies itself, sending every create and every batch to both
 * instances in parallel and each query to one of them at random. Prints, for each, the
 * time from the first create until both instances hold every document (through chroma-lb:
 * until `/wal/status` shows nothing pending), beside the old system's 36.4 s and the ratio
 * chroma-lb / direct (aim: at most 1.25); the queries answered and every answer that was
 * not 200; chroma-lb's peak RSS. Each run ends by reading both instances directly and
 * stops with an error when either lacks a document. `LOAD_ROUNDS=n` repeats both runs n
 * times, alternating which goes first, and prints medians: on a shared machine one round
 * can be far off.
 *
 * `tests/scenarios/high-load.test.ts` runs the same workload ({@link runLoad}) through
 * chroma-lb and checks it.
 */
import fs from "node:fs";
import { ChromaClient, type Collection } from "chromadb";
import { startChromaServers, startLbProcess, waitFor, type ChromaServer } from "../support";
import { dumpInstances, type DumpedRecord, type InstanceDump } from "../support/compare";
import { seededRandom } from "../support/random";
import { cpuSeconds, vmRssBytes } from "./proc";

/** What the workload does; {@link useCase4} is the use case's own. */
export interface LoadShape {
  collections: number;
  documentsPerCollection: number;
  batchSize: number;
  queryClients: number;
  /** Embedding dimension. */
  dim: number;
  nResults: number;
  /** Seeds the embeddings and each query client's choices, so a run can be replayed. */
  seed: number;
}

export const useCase4: LoadShape = {
  collections: 10,
  documentsPerCollection: 50,
  batchSize: 10,
  queryClients: 20,
  dim: Number(process.env.LOAD_DIM ?? 384),
  nResults: 5,
  seed: Number(process.env.LOAD_SEED ?? 4),
};

/** The old system's figure for the same workload (/work/shared/use-cases.md, use case 4). */
export const oldSystemSeconds = 36.4;

/** One HTTP answer the workload's clients received. */
export interface Answer {
  kind: "create" | "add" | "query" | "get_collection" | "other";
  method: string;
  /** The endpoint it went to (`http://127.0.0.1:PORT`). */
  endpoint: string;
  /** Its place in the endpoints given to {@link runLoad}: with two, 0 is the primary, 1 the replica. */
  endpointIndex: number;
  /** HTTP status; 0 when no answer came. */
  status: number;
  /** `X-Chroma-LB-Instance`, when chroma-lb answered. */
  instance: string | null;
  /** The body of an answer other than 2xx, or the transport error. */
  error: string | null;
  /** When the answer came (performance.now()). */
  atMs: number;
  tookMs: number;
}

/** What one run of the workload did. */
export interface LoadRun {
  /** Just before the first create. */
  startedAtMs: number;
  /** When the last add was answered. */
  ingestDoneAtMs: number;
  answers: Answer[];
  /** Errors the client threw to the workload (each also shows as an answer, unless it is the client's own). */
  clientErrors: string[];
  /** What every instance must hold afterwards, in the shape of {@link dumpInstances}. */
  expected: InstanceDump;
}

/**
 * Components are multiples of 1/128 in [-1, 1): exact in float32, which the client sends
 * and Chroma stores, so what an instance answers compares equal to what was written.
 */
function embedding(next: () => number, dim: number): number[] {
  return Array.from({ length: dim }, () => Math.floor(next() * 256 - 128) / 128);
}

interface Batch {
  ids: string[];
  embeddings: number[][];
  documents: string[];
  metadatas: Array<Record<string, string | number>>;
}

/** Every collection's batches, made before the clock starts so generating vectors is not timed. */
function makeBatches(shape: LoadShape, names: string[]): Batch[][] {
  const next = seededRandom(shape.seed);
  return names.map((name) => {
    const batches: Batch[] = [];
    for (let start = 0; start < shape.documentsPerCollection; start += shape.batchSize) {
      const ns = Array.from({ length: Math.min(shape.batchSize, shape.documentsPerCollection - start) }, (_, i) => start + i);
      batches.push({
        ids: ns.map((n) => `${name}-doc-${String(n).padStart(3, "0")}`),
        embeddings: ns.map(() => embedding(next, shape.dim)),
        documents: ns.map((n) => `Document ${n} of ${name}: a paragraph from an uploaded file, about as long as a chunk of a page.`),
        metadatas: ns.map((n) => ({ collection: name, n, batch: Math.floor(n / shape.batchSize) })),
      });
    }
    return batches;
  });
}

function expectedDump(shape: LoadShape, names: string[], batches: Batch[][]): InstanceDump {
  const byName: InstanceDump[string] = {};
  names.forEach((name, c) => {
    const records: DumpedRecord[] = batches[c]!.flatMap((b) =>
      b.ids.map((id, i) => ({ id, embedding: b.embeddings[i]!, document: b.documents[i]!, metadata: b.metadatas[i]! })),
    );
    byName[name] = { metadata: null, dimension: shape.dim, records: records.sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0)) };
  });
  return { "default_tenant/default_database": byName };
}

function kindOf(method: string, pathname: string): Answer["kind"] {
  if (method === "POST" && pathname.endsWith("/query")) return "query";
  if (method === "POST" && pathname.endsWith("/add")) return "add";
  if (method === "POST" && pathname.endsWith("/collections")) return "create";
  if (method === "GET" && /\/collections\/[^/]+$/.test(pathname)) return "get_collection";
  return "other";
}

/**
 * Records every answer to a request for one of `endpoints` while `work` runs. The
 * `chromadb` client calls the global `fetch` at each request, so wrapping it sees them all.
 */
async function recordingAnswers<T>(endpoints: string[], answers: Answer[], work: () => Promise<T>): Promise<T> {
  const realFetch = globalThis.fetch;
  const recording = (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const request = input instanceof Request ? input : null;
    const url = new URL(request ? request.url : String(input));
    const endpoint = url.origin;
    const endpointIndex = endpoints.indexOf(endpoint);
    if (endpointIndex < 0) return realFetch(input, init);
    const method = (init?.method ?? request?.method ?? "GET").toUpperCase();
    const sentMs = performance.now();
    const answer = (status: number, instance: string | null, error: string | null) =>
      answers.push({ kind: kindOf(method, url.pathname), method, endpoint, endpointIndex, status, instance, error, atMs: performance.now(), tookMs: performance.now() - sentMs });
    try {
      const response = await realFetch(input, init);
      const error = response.ok ? null : (await response.clone().text()).slice(0, 300);
      answer(response.status, response.headers.get("x-chroma-lb-instance"), error);
      return response;
    } catch (error) {
      answer(0, null, String(error).slice(0, 300));
      throw error;
    }
  }) as typeof fetch;
  globalThis.fetch = recording;
  try {
    return await work();
  } finally {
    globalThis.fetch = realFetch;
  }
}

function clientFor(endpoint: string): ChromaClient {
  const url = new URL(endpoint);
  return new ChromaClient({ host: url.hostname, port: Number(url.port) });
}

/**
 * Runs the workload against `endpoints`: every create and every batch goes to each of
 * them (in parallel), every query to one of them at random. One endpoint is chroma-lb;
 * two are a client keeping both copies itself. Collections are named `{prefix}_{i}`.
 */
export async function runLoad(endpoints: string[], shape: LoadShape = useCase4, prefix = "cms_upload"): Promise<LoadRun> {
  const names = Array.from({ length: shape.collections }, (_, i) => `${prefix}_${String(i).padStart(2, "0")}`);
  const batches = makeBatches(shape, names);
  const answers: Answer[] = [];
  const clientErrors: string[] = [];
  const writers = endpoints.map(clientFor);
  let ingesting = true;
  let startedAtMs = 0;
  let ingestDoneAtMs = 0;

  /** One of the users searching while files are uploaded: its own client, its own choices. */
  const queryClient = async (k: number) => {
    const next = seededRandom(shape.seed * 1000 + k + 1);
    const clients = endpoints.map(clientFor);
    const handles = new Map<string, Promise<Collection>>();
    while (ingesting) {
      const name = names[Math.floor(next() * names.length)]!;
      const e = Math.floor(next() * endpoints.length);
      const key = `${e} ${name}`;
      try {
        if (!handles.has(key)) handles.set(key, clients[e]!.getCollection({ name }));
        const collection = await handles.get(key)!;
        await collection.query({ queryEmbeddings: [embedding(next, shape.dim)], nResults: shape.nResults });
      } catch (error) {
        handles.delete(key);
        clientErrors.push(`query ${name} on ${endpoints[e]}: ${String(error).slice(0, 300)}`);
      }
    }
  };

  await recordingAnswers(endpoints, answers, async () => {
    startedAtMs = performance.now();
    // Many users upload at once: every collection is created at the same moment.
    const handles = await Promise.all(
      names.map((name) => Promise.all(writers.map((client) => client.createCollection({ name, embeddingFunction: null })))),
    );
    const searching = Array.from({ length: shape.queryClients }, (_, k) => queryClient(k));
    try {
      await Promise.all(
        handles.map(async (copies, c) => {
          for (const batch of batches[c]!) await Promise.all(copies.map((collection) => collection.add(batch)));
        }),
      );
    } finally {
      ingestDoneAtMs = performance.now();
      ingesting = false;
      await Promise.all(searching);
    }
  });
  return { startedAtMs, ingestDoneAtMs, answers, clientErrors, expected: expectedDump(shape, names, batches) };
}

/** Answers grouped as `"kind status": count`, e.g. `{"query 200": 412, "query 500": 3}`. */
export function answerCounts(answers: Answer[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of answers) counts[`${a.kind} ${a.status}`] = (counts[`${a.kind} ${a.status}`] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)));
}

// ------------------------------------------------------------------ the benchmark

/**
 * What an instance lacks or holds differently from what the workload wrote, one line per
 * collection that differs; empty when it holds exactly that. Metadata key order is not
 * compared (Chroma answers keys sorted).
 */
export function differences(dump: InstanceDump, expected: InstanceDump): string[] {
  const out: string[] = [];
  for (const [scope, collections] of Object.entries(expected)) {
    for (const [name, want] of Object.entries(collections)) {
      const got = dump[scope]?.[name];
      if (!got) {
        out.push(`${scope}/${name}: missing`);
        continue;
      }
      const have = new Map(got.records.map((r) => [r.id, r]));
      const missing = want.records.filter((r) => !have.has(r.id)).length;
      const different = want.records.filter((r) => have.has(r.id) && !Bun.deepEquals(have.get(r.id), r)).length;
      const extra = got.records.length - (want.records.length - missing);
      if (missing || different || extra || got.dimension !== want.dimension || !Bun.deepEquals(got.metadata, want.metadata)) {
        out.push(`${scope}/${name}: ${got.records.length} of ${want.records.length} records, ${missing} missing, ${different} different, ${extra} extra, dimension ${got.dimension}`);
      }
    }
  }
  return out;
}

/** Throws unless every instance holds exactly what the workload wrote. */
async function checkInstances(servers: ChromaServer[], run: LoadRun): Promise<void> {
  const dumps = await dumpInstances(servers.map((s) => s.url));
  dumps.forEach((dump, i) => {
    const found = differences(dump, run.expected);
    if (found.length) throw new Error(`instance ${servers[i]!.url} does not hold what the workload wrote:\n${found.join("\n")}`);
  });
}

interface Figures {
  label: string;
  /** From the first create until both instances hold every document. */
  convergedMs: number;
  ingestMs: number;
  run: LoadRun;
  peakRssBytes?: number;
  walPeakRssMb?: number;
  walMaxMemoryMb?: number;
  readsRetried?: number;
  /** CPU seconds each process used from the first create until both instances held everything. */
  cpu: Record<string, number>;
}

async function throughChromaLb(primary: ChromaServer, replica: ChromaServer): Promise<Figures> {
  await using lb = await startLbProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, LOG_LEVEL: "warn" });
  // The harness may start it under `setpriv`, which execs: the pid must be chroma-lb's own.
  const cmdline = fs.readFileSync(`/proc/${lb.pid}/cmdline`, "utf8").replaceAll("\0", " ");
  if (!cmdline.includes("src/index.ts")) throw new Error(`pid ${lb.pid} is not chroma-lb: ${cmdline}`);
  let peakRssBytes = vmRssBytes(lb.pid) ?? 0;
  const sampler = setInterval(() => (peakRssBytes = Math.max(peakRssBytes, vmRssBytes(lb.pid) ?? 0)), 100);
  const pids = { "chroma-lb": lb.pid, primary: primary.pid, replica: replica.pid };
  const cpuBefore = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)]));
  try {
    const run = await runLoad([lb.url]);
    await waitFor(async () => ((await (await fetch(`${lb.url}/wal/status`)).json()) as { pending_writes: number }).pending_writes === 0, {
      timeoutMs: 120_000,
      intervalMs: 10,
      message: "both instances applied the whole log",
    });
    const convergedMs = performance.now() - run.startedAtMs;
    const cpu = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid) - cpuBefore[name]!]));
    await checkInstances([primary, replica], run);
    const wal = (await (await fetch(`${lb.url}/wal/status`)).json()) as { memory: { peak_rss_mb: number; max_memory_mb: number } };
    // chroma-lb logs (at warn) each read it sent to another instance after a 5xx.
    const readsRetried = lb.logs().split("\n").filter((line) => line.includes("answered a read with an error")).length;
    return {
      label: "through chroma-lb",
      convergedMs,
      ingestMs: run.ingestDoneAtMs - run.startedAtMs,
      run,
      peakRssBytes,
      walPeakRssMb: wal.memory.peak_rss_mb,
      walMaxMemoryMb: wal.memory.max_memory_mb,
      readsRetried,
      cpu,
    };
  } catch (error) {
    console.error(`--- chroma-lb log (end) ---\n${lb.logs().split("\n").slice(-30).join("\n")}`);
    throw error;
  } finally {
    clearInterval(sampler);
  }
}

async function clientWritesBoth(primary: ChromaServer, replica: ChromaServer): Promise<Figures> {
  const pids = { primary: primary.pid, replica: replica.pid };
  const cpuBefore = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)]));
  const run = await runLoad([primary.url, replica.url]);
  // Both instances answered every add: they hold every document now.
  const convergedMs = run.ingestDoneAtMs - run.startedAtMs;
  const cpu = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid) - cpuBefore[name]!]));
  await checkInstances([primary, replica], run);
  return { label: "client writes both instances", convergedMs, ingestMs: convergedMs, run, cpu };
}

async function onFreshServers(phase: (primary: ChromaServer, replica: ChromaServer) => Promise<Figures>): Promise<Figures> {
  await using servers = await startChromaServers(2);
  return await phase(servers[0]!, servers[1]!);
}

function queryFigures(f: Figures) {
  const queries = f.run.answers.filter((a) => a.kind === "query");
  const ms = queries.map((a) => a.tookMs).sort((a, b) => a - b);
  const at = (q: number) => Math.round(ms[Math.min(ms.length - 1, Math.floor(q * ms.length))] ?? 0);
  const failed = queries.filter((a) => a.status !== 200);
  const reasons = new Map<string, number>();
  for (const a of failed) {
    const key = `${a.status} ${a.error ?? ""}`.slice(0, 120);
    reasons.set(key, (reasons.get(key) ?? 0) + 1);
  }
  // Served by: chroma-lb's instance header, or which of the two instances the client chose.
  const servedBy = (a: Answer) => a.instance ?? ["primary", "replica"][a.endpointIndex];
  const split = ["primary", "replica"].map((name) => queries.filter((q) => servedBy(q) === name).length).join(" / ");
  return { count: queries.length, failed: failed.length, p50: at(0.5), p99: at(0.99), reasons, split };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Several rounds of one side as one: median times, every answer, summed CPU and retries, the highest RSS. */
function combine(rounds: Figures[]): Figures {
  const cpu: Record<string, number> = {};
  for (const f of rounds) for (const [name, seconds] of Object.entries(f.cpu)) cpu[name] = (cpu[name] ?? 0) + seconds;
  const first = rounds[0]!;
  return {
    ...first,
    convergedMs: median(rounds.map((f) => f.convergedMs)),
    ingestMs: median(rounds.map((f) => f.ingestMs)),
    run: { ...first.run, answers: rounds.flatMap((f) => f.run.answers), clientErrors: rounds.flatMap((f) => f.run.clientErrors) },
    peakRssBytes: Math.max(...rounds.map((f) => f.peakRssBytes ?? 0)),
    walPeakRssMb: Math.max(...rounds.map((f) => f.walPeakRssMb ?? 0)),
    readsRetried: rounds.reduce((n, f) => n + (f.readsRetried ?? 0), 0),
    cpu,
  };
}

if (import.meta.main) {
  const shape = useCase4;
  const roundCount = Number(process.env.LOAD_ROUNDS ?? 1);
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const cpuText = (cpu: Record<string, number>) => Object.entries(cpu).map(([name, seconds]) => `${name} ${seconds.toFixed(1)}`).join(", ");
  console.log(
    `chroma-lb load benchmark (use case 4): ${shape.collections} collections created concurrently, ${shape.documentsPerCollection} documents each ` +
      `in batches of ${shape.batchSize}, ${shape.queryClients} clients querying during ingest; ${shape.dim} dims, seed ${shape.seed}`,
  );
  console.log(`(machine: ${navigator.hardwareConcurrency} CPUs, load average ${fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")})`);

  const rounds: Array<{ lb: Figures; direct: Figures; ratio: number }> = [];
  for (let r = 0; r < roundCount; r++) {
    // Alternate which side goes first, so a change in the machine's load during the run
    // does not favour one of them.
    const lbFirst = r % 2 === 0;
    const first = await onFreshServers(lbFirst ? throughChromaLb : clientWritesBoth);
    const second = await onFreshServers(lbFirst ? clientWritesBoth : throughChromaLb);
    const [lb, direct] = lbFirst ? [first, second] : [second, first];
    rounds.push({ lb, direct, ratio: lb.convergedMs / direct.convergedMs });
    if (roundCount > 1) {
      console.log(`round ${r + 1}: through chroma-lb ${s(lb.convergedMs)}, client writes both ${s(direct.convergedMs)}, ratio ${(lb.convergedMs / direct.convergedMs).toFixed(2)}`);
    }
  }
  const lb = combine(rounds.map((r) => r.lb));
  const direct = combine(rounds.map((r) => r.direct));
  const ratio = median(rounds.map((r) => r.ratio));
  const [ql, qd] = [queryFigures(lb), queryFigures(direct)];
  if (roundCount > 1) console.log(`(times and the ratio: medians of ${roundCount} rounds; counts: all rounds together; RSS: the highest)`);

  const rows: Array<[string, string, string, string]> = [
    ["time until both instances hold every document", s(lb.convergedMs), s(direct.convergedMs), `old system: ${oldSystemSeconds} s`],
    ["  of which until the last add was answered", s(lb.ingestMs), s(direct.ingestMs), ""],
    ["ratio chroma-lb / direct", ratio.toFixed(2), "", "aim <= 1.25"],
    ["queries answered", String(ql.count), String(qd.count), ""],
    ["  served by primary / replica", ql.split, qd.split, ""],
    ["queries answered other than 200", String(ql.failed), String(qd.failed), "chroma-lb: 0"],
    ["query latency p50 / p99", `${ql.p50} / ${ql.p99} ms`, `${qd.p50} / ${qd.p99} ms`, ""],
    ["reads chroma-lb sent to the other instance after a 5xx", String(lb.readsRetried ?? 0), "", ""],
    ["CPU seconds until converged (all rounds)", cpuText(lb.cpu), cpuText(direct.cpu), ""],
    ["errors the client threw", String(lb.run.clientErrors.length), String(direct.run.clientErrors.length), ""],
    [
      "chroma-lb peak RSS: VmRSS every 100 ms / /wal/status peak_rss_mb",
      `${((lb.peakRssBytes ?? 0) / 1024 / 1024).toFixed(1)} / ${lb.walPeakRssMb} MB`,
      "",
      `WAL_MAX_MEMORY_MB ${lb.walMaxMemoryMb}`,
    ],
  ];
  const header: [string, string, string, string] = ["measure", "through chroma-lb", "client writes both", "for comparison"];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...[header, ...rows].map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log("");
  console.log(line(header));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const row of rows) console.log(line(row));
  for (const [label, q] of [["through chroma-lb", ql], ["client writes both", qd]] as const) {
    for (const [reason, n] of q.reasons) console.log(`${label}: ${n} x ${reason}`);
  }
  for (const f of [lb, direct]) for (const error of f.run.clientErrors.slice(0, 5)) console.log(`${f.label}, client error: ${error}`);
}
