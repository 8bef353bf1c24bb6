/**
 * Failover figures: continuous ingest and search through chroma-lb while the primary, then
 * the replica, is SIGKILLed and restarted on its data. Prints, for each: time from the kill
 * to the last failed client write and read (targets: no failed write; reads failing for
 * under 2 s), and time from the restart to caught up and to taking writes (primary) or
 * serving reads (replica) again. Ends by checking both instances hold the same records.
 *
 *   bun run bench:failover            (OUTAGE_SECONDS=5 WRITERS=2 READERS=2 BATCH=10 by default)
 */
import { ChromaClient } from "chromadb";
import { startChromaServers, startLbProcess, waitFor, type ChromaServer } from "../support";
import { dumpInstances, recordCount } from "../support/compare";

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const outageMs = Number(process.env.OUTAGE_SECONDS ?? 5) * 1000;
const writers = Number(process.env.WRITERS ?? 2);
const readers = Number(process.env.READERS ?? 2);
const batchSize = Number(process.env.BATCH ?? 10);
const settleMs = 2_000;
const lbEnv = { HEALTH_CHECK_INTERVAL: "1", HEALTH_CHECK_TIMEOUT: "0.3", REQUEST_TIMEOUT: "5" };

const now = () => performance.now();
const fmt = (ms: number | null) => (ms === null ? "-" : `${(ms / 1000).toFixed(3)} s`);
const embeddingFor = (n: number) => [(n % 16) / 4, ((n * 7) % 13) / 8, (n % 5) / 2 - 1, 1];

interface Event {
  /** When the answer (or the error) came. */
  atMs: number;
  /** How long the request took. */
  tookMs: number;
  ok: boolean;
  error?: string;
}

async function json<T = any>(url: string): Promise<T> {
  return (await (await fetch(url)).json()) as T;
}

await using servers = await startChromaServers(2);
const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
await using lb = await startLbProcess({ ...lbEnv, CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url });
const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
const collection = await client.createCollection({ name: "bench_failover", embeddingFunction: null });
await collection.add({ ids: ["seed-0", "seed-1", "seed-2"], embeddings: [0, 1, 2].map(embeddingFor), documents: ["0", "1", "2"] });

const writes: Event[] = [];
const reads: Event[] = [];
/** Reads through raw fetch, to see which instance served each. */
const served: Array<{ atMs: number; instance: string | null }> = [];
let acked = 3;
let nextId = 0;
let stop = false;

const writer = async () => {
  while (!stop) {
    const ns = Array.from({ length: batchSize }, () => nextId++);
    const sentMs = now();
    try {
      await collection.add({ ids: ns.map((n) => `r-${n}`), embeddings: ns.map(embeddingFor), documents: ns.map((n) => `record ${n}`), metadatas: ns.map((n) => ({ n })) });
      writes.push({ atMs: now(), tookMs: now() - sentMs, ok: true });
      acked += ns.length;
    } catch (error) {
      writes.push({ atMs: now(), tookMs: now() - sentMs, ok: false, error: String(error).slice(0, 200) });
    }
  }
};
const reader = async (k: number) => {
  for (let i = 0; !stop; i++) {
    const sentMs = now();
    try {
      if (i % 2) await collection.query({ queryEmbeddings: [embeddingFor(i + k)], nResults: 5 });
      else await collection.get({ ids: [`seed-${i % 3}`] });
      reads.push({ atMs: now(), tookMs: now() - sentMs, ok: true });
    } catch (error) {
      reads.push({ atMs: now(), tookMs: now() - sentMs, ok: false, error: String(error).slice(0, 200) });
    }
  }
};
const watcher = async () => {
  while (!stop) {
    try {
      const res = await fetch(`${lb.url}${T}/collections/${collection.id}/count`);
      await res.arrayBuffer();
      served.push({ atMs: now(), instance: res.status === 200 ? res.headers.get("x-chroma-lb-instance") : null });
    } catch {
      served.push({ atMs: now(), instance: null });
    }
    await Bun.sleep(5);
  }
};

/** Polls /status until `done` holds; answers the time it first held (ms since `fromMs`). */
async function timeUntil(fromMs: number, done: (status: any) => boolean, what: string): Promise<number> {
  return waitFor(
    async () => {
      const status = await json(`${lb.url}/status`);
      return done(status) && now() - fromMs;
    },
    { timeoutMs: 60_000, intervalMs: 10, message: what },
  );
}

interface Figures {
  instance: string;
  detectedMs: number;
  lastFailedWriteMs: number | null;
  failedWrites: number;
  lastFailedReadMs: number | null;
  failedReads: number;
  slowestWriteMs: number;
  slowestReadMs: number;
  owedAtRestart: number;
  restartReadyMs: number;
  markedUpMs: number;
  caughtUpMs: number;
  backMs: number;
  backWhat: string;
}

async function outage(server: ChromaServer, name: "primary" | "replica"): Promise<Figures> {
  const index = name === "primary" ? 0 : 1;
  const killMs = now();
  await server.kill("SIGKILL");
  const detectedMs = await timeUntil(killMs, (s) => !s.instances[index].healthy, `${name} marked down`);
  await waitFor(() => now() - killMs >= outageMs, { timeoutMs: outageMs + 1_000, message: "the outage" });
  const owedAtRestart = (await json(`${lb.url}/wal/status`)).instances[index].pending_entries;

  const restartMs = now();
  await server.restart();
  const restartReadyMs = now() - restartMs;
  const markedUpMs = await timeUntil(restartMs, (s) => s.instances[index].healthy, `${name} marked up`);
  const caughtUpMs = await timeUntil(restartMs, (s) => s.instances[index].healthy && s.instances[index].state === "healthy", `${name} caught up`);
  let backMs: number;
  let backWhat: string;
  if (name === "primary") {
    backMs = await timeUntil(restartMs, (s) => s.write_target === "primary", "primary write target again");
    backWhat = "write target again";
  } else {
    backMs = await waitFor(() => served.find((r) => r.atMs > restartMs && r.instance === "replica")?.atMs, { timeoutMs: 30_000, message: "replica serving reads" }) - restartMs;
    backWhat = "serving reads again";
  }
  await Bun.sleep(settleMs);
  const failedWrites = writes.filter((w) => !w.ok && w.atMs >= killMs);
  const failedReads = reads.filter((r) => !r.ok && r.atMs >= killMs);
  const slowest = (events: Event[]) => Math.max(0, ...events.filter((e) => e.atMs >= killMs).map((e) => e.tookMs));
  return {
    instance: name,
    detectedMs,
    lastFailedWriteMs: failedWrites.length ? failedWrites.at(-1)!.atMs - killMs : null,
    failedWrites: failedWrites.length,
    lastFailedReadMs: failedReads.length ? failedReads.at(-1)!.atMs - killMs : null,
    failedReads: failedReads.length,
    slowestWriteMs: slowest(writes),
    slowestReadMs: slowest(reads),
    owedAtRestart,
    restartReadyMs,
    markedUpMs,
    caughtUpMs,
    backMs,
    backWhat,
  };
}

const startedMs = now();
const loops = [
  ...Array.from({ length: writers }, writer),
  ...Array.from({ length: readers }, (_, k) => reader(k)),
  watcher(),
];
const results: Figures[] = [];
try {
  await Bun.sleep(settleMs);
  results.push(await outage(primary, "primary"));
  results.push(await outage(replica, "replica"));
} finally {
  stop = true;
  await Promise.allSettled(loops);
}
const elapsedS = (now() - startedMs) / 1000;

await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { timeoutMs: 60_000, message: "log drained" });
const [onPrimary, onReplica] = await dumpInstances([primary.url, replica.url]);
const same = Bun.deepEquals(onPrimary, onReplica);

console.log(`chroma-lb failover: ${writers} writers (batches of ${batchSize}), ${readers} readers, outages of ${outageMs / 1000} s, HEALTH_CHECK_INTERVAL=1 HEALTH_CHECK_TIMEOUT=0.3`);
console.log(`  ${writes.length} writes (${writes.filter((w) => !w.ok).length} failed), ${reads.length} reads (${reads.filter((r) => !r.ok).length} failed) in ${elapsedS.toFixed(1)} s`);
for (const r of results) {
  console.log(`${r.instance} SIGKILLed:`);
  const line = (label: string, value: string) => console.log(`  ${label.padEnd(40)}${value}`);
  line("kill -> marked down", fmt(r.detectedMs));
  line("kill -> last failed write", `${fmt(r.lastFailedWriteMs)}  (${r.failedWrites} failed; target: none)`);
  line("kill -> last failed read", `${fmt(r.lastFailedReadMs)}  (${r.failedReads} failed; target: under 2 s)`);
  line("slowest write / read from the kill on", `${fmt(r.slowestWriteMs)} / ${fmt(r.slowestReadMs)}`);
  line("entries owed at restart", String(r.owedAtRestart));
  line("restart -> process answering", fmt(r.restartReadyMs));
  line("restart -> marked up (2 probes)", fmt(r.markedUpMs));
  line("restart -> caught up", fmt(r.caughtUpMs));
  line(`restart -> ${r.backWhat}`, fmt(r.backMs));
}
const failures = [...writes, ...reads].filter((e) => !e.ok);
if (failures.length) console.log(`failures:\n${failures.slice(0, 10).map((f) => `  ${f.error}`).join("\n")}`);
console.log(`both instances hold the same records: ${same ? "yes" : "NO"} (${recordCount(onPrimary!)} records; ${acked} acknowledged)`);
if (!same || recordCount(onPrimary!) !== acked) process.exitCode = 1;
