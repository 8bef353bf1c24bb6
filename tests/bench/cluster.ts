/**
 * `bun run bench:cluster`: chroma-lb on two nodes against one, on one machine, in one run.
 *
 * Each phase starts fresh: two real Chroma servers, a database of its own on a private
 * Postgres server (LOG_STORE=postgres), and the chroma-lb nodes as processes.
 * - ingest: WRITERS clients (4) add DOCS records (8 000) in batches of BATCH (50), each into
 *   a collection of its own; with two nodes, the clients are spread over both;
 * - query: the same clients run QUERIES queries each (n_results 10);
 * - latency: one-record adds, one at a time (ADDS, 200), directly to the primary Chroma and
 *   through chroma-lb (alternating nodes with two): p50/p99 and what chroma-lb adds;
 * - takeover (two nodes): while clients write through both nodes, one node is SIGKILLed;
 *   timed from the kill: its clients' first retry that succeeds (sent to the other node,
 *   as a load balancer does after a failed connection), it leaving the other node's list of
 *   live nodes, and every replay lease it held being expired or held by the other node.
 * Everything runs on the same machine (2 cores here): two nodes share the CPU with Chroma
 * and Postgres, so these figures show the cost of coordination, not a scale-out.
 */
import postgres from "postgres";
import fs from "node:fs";
import { ChromaClient, type Collection } from "chromadb";
import { startChromaServers, startLbProcess, type LbProcess } from "../support";
import { startPgServer, type PgServer } from "../support/pg-server";

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const docs = num("DOCS", 8_000);
const batchSize = num("BATCH", 50);
const writers = num("WRITERS", 4);
const queries = num("QUERIES", 100);
const adds = num("ADDS", 200);
const dim = 64;

const now = () => performance.now();
const vector = () => Array.from({ length: dim }, () => Math.random() * 2 - 1);
const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};
const ms = (value: number) => `${value.toFixed(1)} ms`;

interface Phase {
  ingestDocsPerSecond: number;
  queriesPerSecond: number;
  addP50Ms: number;
  addP99Ms: number;
  directP50Ms: number;
  directP99Ms: number;
}

/**
 * The collection, once `client`'s node can read it: a collection made through another node
 * a moment ago may not have reached the instance this node reads from (a client that needs
 * it at once sends the position it was answered, X-Chroma-LB-Min-Position).
 */
async function readable(client: ChromaClient, name: string): Promise<Collection> {
  for (;;) {
    const found = await client.getCollection({ name }).catch(() => null);
    if (found) return found;
    await Bun.sleep(50);
  }
}

/** Ingest, query and latency through `nodes` (clients spread over them). */
async function measure(nodes: LbProcess[], primaryUrl: string, label: string): Promise<Phase> {
  const clients = nodes.map((n) => new ChromaClient({ host: "127.0.0.1", port: n.port }));
  const collections: Collection[] = [];
  for (let w = 0; w < writers; w++) collections.push(await clients[w % clients.length]!.createCollection({ name: `${label}_w${w}`, embeddingFunction: null }));
  const perWriter = Math.ceil(docs / writers);
  const batches = collections.map((_, w) =>
    Array.from({ length: Math.ceil(perWriter / batchSize) }, (_, b) => {
      const ids = Array.from({ length: batchSize }, (_, i) => `w${w}-${b * batchSize + i}`);
      return { ids, embeddings: ids.map(vector), documents: ids.map((id) => `document ${id}`) };
    }),
  );
  let started = now();
  await Promise.all(collections.map(async (c, w) => {
    for (const batch of batches[w]!) await c.add(batch);
  }));
  const ingestDocsPerSecond = (writers * perWriter) / ((now() - started) / 1000);

  started = now();
  await Promise.all(collections.map(async (c) => {
    for (let q = 0; q < queries; q++) await c.query({ queryEmbeddings: [vector()], nResults: 10 });
  }));
  const queriesPerSecond = (writers * queries) / ((now() - started) / 1000);

  // One record at a time: directly, then through chroma-lb (alternating nodes).
  const { hostname, port } = new URL(primaryUrl);
  const direct = new ChromaClient({ host: hostname, port: Number(port) });
  const directCollection = await direct.createCollection({ name: `${label}_direct`, embeddingFunction: null });
  const lbCollections: Collection[] = [await clients[0]!.createCollection({ name: `${label}_adds`, embeddingFunction: null })];
  for (const client of clients.slice(1)) lbCollections.push(await readable(client, `${label}_adds`));
  const time = async (fn: () => Promise<unknown>) => {
    const t = now();
    await fn();
    return now() - t;
  };
  const directMs: number[] = [];
  const lbMs: number[] = [];
  for (let i = 0; i < adds; i++) {
    directMs.push(await time(() => directCollection.add({ ids: [`d${i}`], embeddings: [vector()], documents: ["x"] })));
    lbMs.push(await time(() => lbCollections[i % lbCollections.length]!.add({ ids: [`l${i}`], embeddings: [vector()], documents: ["x"] })));
  }
  return {
    ingestDocsPerSecond,
    queriesPerSecond,
    addP50Ms: percentile(lbMs, 50),
    addP99Ms: percentile(lbMs, 99),
    directP50Ms: percentile(directMs, 50),
    directP99Ms: percentile(directMs, 99),
  };
}

async function withCluster<T>(pg: PgServer, nodeCount: number, database: string, run: (nodes: LbProcess[], primaryUrl: string, databaseUrl: string) => Promise<T>): Promise<T> {
  await using servers = await startChromaServers(2);
  const databaseUrl = await pg.freshDatabase(database);
  const nodes: LbProcess[] = [];
  try {
    for (let i = 0; i < nodeCount; i++) {
      nodes.push(
        await startLbProcess({
          CHROMA_PRIMARY_URL: servers[0]!.url,
          CHROMA_REPLICA_URL: servers[1]!.url,
          LOG_STORE: "postgres",
          DATABASE_URL: databaseUrl,
          NODE_ID: `bench-${i + 1}`,
          LOG_LEVEL: "error",
        }),
      );
    }
    return await run(nodes, servers[0]!.url, databaseUrl);
  } finally {
    await Promise.all(nodes.map((n) => n[Symbol.asyncDispose]()));
  }
}

interface Takeover {
  leasesHeldAtKill: number;
  retrySucceededMs: number | null;
  nodeGoneMs: number | null;
  leasesTakenOverMs: number | null;
  caughtUpMs: number | null;
}

/** Clients write through both nodes; node 2 is SIGKILLed; its clients retry on node 1. */
async function takeover(nodes: LbProcess[], databaseUrl: string): Promise<Takeover> {
  const [survivor, victim] = nodes as [LbProcess, LbProcess];
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  const survivorClient = new ChromaClient({ host: "127.0.0.1", port: survivor.port });
  const victimClient = new ChromaClient({ host: "127.0.0.1", port: victim.port });
  const names = ["takeover_a", "takeover_b"];
  for (const name of names) await survivorClient.createCollection({ name, embeddingFunction: null });
  let writing = true;
  let killedAt: number | null = null;
  let retrySucceededMs: number | null = null;
  let written = 0;
  const writer = async (name: string, initial: ChromaClient) => {
    let client = initial;
    let collection = await readable(client, name);
    let failedSinceKill = false;
    for (let i = 0; writing; i++) {
      try {
        await collection.add({ ids: [`${name}-${i}`], embeddings: [vector()], documents: ["x"] });
        written += 1;
        if (failedSinceKill && killedAt !== null && retrySucceededMs === null) retrySucceededMs = now() - killedAt;
      } catch (error) {
        if (process.env.BENCH_DEBUG) console.error(`write through ${client === survivorClient ? "survivor" : "victim"} failed:`, String(error).slice(0, 200));
        i -= 1;
        if (killedAt === null) {
          await Bun.sleep(50);
          continue;
        }
        // The node is gone: retry on the other one, as a load balancer would.
        failedSinceKill = true;
        client = survivorClient;
        collection = (await client.getCollection({ name }).catch(() => null)) ?? collection;
      }
    }
  };
  const writes = [writer(names[0]!, survivorClient), writer(names[1]!, victimClient), writer(names[0]!, victimClient)];
  // Let leases form under load.
  const leasesOf = async (node: string) => (await sql<Array<{ instance: string; collection: string }>>`select instance, collection from chroma_lb_replay_leases where node_id = ${node} and expires_at > now()`).map((r) => ({ ...r }));
  const loadUntil = now() + 3_000;
  let held: Array<{ instance: string; collection: string }> = [];
  while (now() < loadUntil) {
    const current = await leasesOf("bench-2").catch(() => []);
    if (current.length) held = current;
    await Bun.sleep(50);
  }
  held = (await leasesOf("bench-2").catch(() => [])).length ? await leasesOf("bench-2") : held;
  await victim.kill("SIGKILL");
  killedAt = now();
  let nodeGoneMs: number | null = null;
  let leasesTakenOverMs: number | null = null;
  const deadline = killedAt + 30_000;
  while (now() < deadline && (nodeGoneMs === null || leasesTakenOverMs === null || retrySucceededMs === null)) {
    if (nodeGoneMs === null) {
      const status = await (await fetch(`${survivor.url}/status`)).json() as { nodes: Array<{ id: string }> };
      if (!status.nodes.some((n) => n.id === "bench-2")) nodeGoneMs = now() - killedAt;
    }
    if (leasesTakenOverMs === null) {
      const stillHeld = await leasesOf("bench-2");
      if (stillHeld.length === 0) leasesTakenOverMs = now() - killedAt;
    }
    await Bun.sleep(20);
  }
  writing = false;
  await Promise.all(writes);
  // Everything acknowledged is applied on both instances (the survivor replays what the victim left).
  let caughtUpMs: number | null = null;
  while (now() < deadline + 30_000) {
    const status = (await (await fetch(`${survivor.url}/status`)).json()) as { unified_wal: { pending_writes: number } };
    if (status.unified_wal.pending_writes === 0) {
      caughtUpMs = now() - killedAt;
      break;
    }
    await Bun.sleep(50);
  }
  await sql.end();
  return { leasesHeldAtKill: held.length, retrySucceededMs, nodeGoneMs, leasesTakenOverMs, caughtUpMs };
}

console.log(`chroma-lb cluster benchmark: ${docs} docs of ${dim} dims in batches of ${batchSize}, ${writers} writers, ${queries} queries each, ${adds} one-record adds`);
console.log(`(machine: ${navigator.hardwareConcurrency} CPUs, load average ${fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}; everything on this machine)`);
const pg = await startPgServer();
try {
  const suffix = crypto.randomUUID().slice(0, 8);
  const one = await withCluster(pg, 1, `bench_one_${suffix}`, (nodes, primary) => measure(nodes, primary, "one"));
  const { two, kill } = await withCluster(pg, 2, `bench_two_${suffix}`, async (nodes, primary, databaseUrl) => ({
    two: await measure(nodes, primary, "two"),
    kill: await takeover(nodes, databaseUrl),
  }));
  const rows: string[][] = [
    ["measure", "one node", "two nodes", "two / one"],
    ["ingest (docs/s)", one.ingestDocsPerSecond.toFixed(0), two.ingestDocsPerSecond.toFixed(0), (two.ingestDocsPerSecond / one.ingestDocsPerSecond).toFixed(2)],
    ["query (queries/s)", one.queriesPerSecond.toFixed(0), two.queriesPerSecond.toFixed(0), (two.queriesPerSecond / one.queriesPerSecond).toFixed(2)],
    ["one-record add p50", ms(one.addP50Ms), ms(two.addP50Ms), ""],
    ["one-record add p99", ms(one.addP99Ms), ms(two.addP99Ms), ""],
    ["direct to Chroma p50", ms(one.directP50Ms), ms(two.directP50Ms), ""],
    ["direct to Chroma p99", ms(one.directP99Ms), ms(two.directP99Ms), ""],
    ["added over direct p50", ms(one.addP50Ms - one.directP50Ms), ms(two.addP50Ms - two.directP50Ms), ""],
    ["added over direct p99", ms(one.addP99Ms - one.directP99Ms), ms(two.addP99Ms - two.directP99Ms), ""],
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log("");
  console.log(line(rows[0]!));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const row of rows.slice(1)) console.log(line(row));
  const s = (value: number | null) => (value === null ? "not within 30 s" : `${(value / 1000).toFixed(2)} s`);
  console.log("");
  console.log("SIGKILL of one of two nodes under write load (its clients retry on the other):");
  console.log(`  its clients' first retry that succeeded:     ${s(kill.retrySucceededMs)}`);
  console.log(`  gone from the other node's /status nodes:    ${s(kill.nodeGoneMs)}`);
  console.log(`  replay leases it held at the kill:           ${kill.leasesHeldAtKill}`);
  console.log(`  all its leases expired or taken over:        ${kill.leasesHeldAtKill ? s(kill.leasesTakenOverMs) : "(it held none: replay leases are not wired in this build)"}`);
  console.log(`  every acknowledged write applied everywhere: ${s(kill.caughtUpMs)}`);
} finally {
  await pg.stop();
}
