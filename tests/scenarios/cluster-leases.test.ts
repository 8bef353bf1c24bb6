/**
 * Cluster coordination against a real, private Postgres (src/cluster): replay leases are
 * held by one node at a time under concurrent acquisition, a node that stops renewing loses
 * its leases to another within 10 s, a node cut from Postgres stops counting itself holder
 * before anyone can take over, a stale holder's fenced write is refused, the node registry
 * tells live nodes and refuses a second process with a live node's NODE_ID, and wake-up
 * hints arrive, also after Postgres is SIGKILLed and restarted.
 *
 * The nodes are lease managers in this process, each with its own Postgres client, driven
 * by the tests the way schedules drive them in a node. The randomized test prints its seed;
 * `SEED=<n> bun test tests/scenarios/cluster-leases.test.ts` replays its choices.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import postgres from "postgres";
import {
  LeaseManager,
  NodeRegistry,
  clusterJobs,
  expiredLeaseKeys,
  forgetLeases,
  WakeupListener,
  fenceInTx,
  listLeases,
  publishHint,
  type LeaseKey,
  type WakeupEvent,
} from "../../src/cluster";
import { loadConfig } from "../../src/config";
import { migratePostgres, postgresClient } from "../../src/db";
import { rng, seedFromEnv } from "../chaos/rng";
import { killAll, waitFor } from "../support";
import { startPgServer, type PgServer } from "../support/pg-server";
import { startTcpProxy } from "../support/tcp-proxy";

let pg: PgServer;
const clients: postgres.Sql[] = [];

beforeAll(async () => {
  pg = await startPgServer();
}, 60_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end({ timeout: 0 }).catch(() => {})));
  await pg?.stop();
  await killAll();
});

/** A client that the file closes at the end. */
function client(url: string, max = 3): postgres.Sql {
  const sql = postgres(url, { max, connect_timeout: 2, onnotice: () => {} });
  clients.push(sql);
  return sql;
}

/** A fresh database on the private server with the cluster tables; returns its URL. */
async function freshDatabase(server: PgServer = pg): Promise<string> {
  const url = await server.freshDatabase("cluster");
  await migratePostgres(url);
  return url;
}

const keysOf = (n: number, collection = "c"): LeaseKey[] => Array.from({ length: n }, (_, i) => ({ instance: i % 2 ? "replica" : "primary", collection: `${collection}${i}` }));
const id = (k: LeaseKey) => `${k.instance}/${k.collection}`;

test("the tables are migrated by several nodes at once, and again", async () => {
  const url = await pg.freshDatabase("migrate");
  await Promise.all([migratePostgres(url), migratePostgres(url), migratePostgres(url)]);
  await migratePostgres(url);
  const sql = client(url);
  expect(await listLeases(sql)).toEqual([]);
  const [applied] = await sql<Array<{ n: number }>>`select count(*)::int as n from chroma_lb_drizzle.__drizzle_migrations`;
  expect(applied!.n).toBe(readdirSync(new URL("../../drizzle/pg", import.meta.url).pathname).filter((f) => f.endsWith(".sql")).length);
});

test("under concurrent acquisition, renewal, release, pauses and crashes, a key is held by one node at a time, and each takeover's token is the last plus one", async () => {
  const seed = seedFromEnv();
  console.log(`[cluster-leases] seed ${seed} (replay with SEED=${seed} bun test tests/scenarios/cluster-leases.test.ts)`);
  const r = rng(seed);
  const url = await freshDatabase();
  const ttlMs = 1500;
  const keys = keysOf(5);
  const nodes = ["a", "b", "c"].map((name) => ({ name, leases: new LeaseManager(client(url), { nodeId: name, ttlMs, statementTimeoutMs: 1000 }), pausedRounds: 0 }));
  const violations: string[] = [];
  const tokens = new Map<string, bigint[]>();
  const counts = { acquired: 0, renewed: 0, lost: 0, released: 0, crashes: 0, pauses: 0, errors: 0 };

  /** At most one node may count itself the holder of a key, at every instant. */
  const checkExclusive = (when: string) => {
    for (const key of keys) {
      const holders = nodes.filter((n) => n.leases.holds(key)).map((n) => n.name);
      if (holders.length > 1) violations.push(`${when}: ${id(key)} held by ${holders.join(", ")}`);
    }
  };
  const sampler = setInterval(() => checkExclusive("sample"), 2);

  const step = async (node: (typeof nodes)[number], burst: boolean) => {
    if (node.pausedRounds > 0) {
      node.pausedRounds -= 1;
      return;
    }
    const op = burst ? "acquire" : r.weighted({ acquire: 45, renew: 35, release: 10, pause: 5, crash: 5 });
    if (op === "acquire") {
      const result = await node.leases.tryAcquire(burst ? keys : r.sample(keys, r.between(1, keys.length)));
      if (result.error) counts.errors += 1;
      for (const lease of result.acquired) {
        counts.acquired += 1;
        tokens.set(id(lease), [...(tokens.get(id(lease)) ?? []), lease.token]);
      }
    } else if (op === "renew") {
      const result = await node.leases.renewOnce();
      if (result.error) counts.errors += 1;
      counts.renewed += result.renewed;
      counts.lost += result.lost.length;
    } else if (op === "release") {
      const held = node.leases.leases();
      const result = await node.leases.release(r.sample(held, r.between(1, Math.max(1, held.length))));
      if (result.error) counts.errors += 1;
      counts.released += result.released;
    } else if (op === "pause") {
      // Stops renewing for a while, as a node stalled by a long pause would: its leases run out.
      counts.pauses += 1;
      node.pausedRounds = r.between(5, 25);
    } else {
      counts.crashes += 1;
      node.leases.abandonAll();
    }
    checkExclusive(`after ${node.name} ${op}`);
  };

  const sql = client(url);
  try {
    for (let round = 0; round < 60; round++) {
      const burst = r.chance(0.2);
      await Promise.all(nodes.map((node) => step(node, burst)));
      // At rest: whoever counts itself the holder is the holder Postgres has. The rows are
      // read first: a lease held after the read was held at the read (no renewal in flight).
      const rows = new Map((await listLeases(sql)).map((row) => [id(row), row]));
      for (const node of nodes) {
        for (const lease of node.leases.leases()) {
          const row = rows.get(id(lease));
          if (row?.nodeId !== node.name || row.token !== lease.token || row.expired) {
            violations.push(`round ${round}: ${node.name} holds ${id(lease)} with token ${lease.token}, Postgres has ${row?.nodeId}/${row?.token}${row?.expired ? " (expired)" : ""}`);
          }
        }
      }
      // Workload pacing (seeded), so leases of paused nodes run out and get taken over.
      await Bun.sleep(r.between(0, 120));
    }
  } finally {
    clearInterval(sampler);
  }
  console.log(`[cluster-leases] ${JSON.stringify(counts)}`);

  const rows = await listLeases(sql);
  const takeovers = rows.reduce((n, row) => n + Number(row.token) - 1, 0);
  console.log(`[cluster-leases] holdings per key (final token): ${rows.map((row) => `${id(row)}=${row.token}`).join(" ")}; takeovers ${takeovers}`);
  expect(violations).toEqual([]);
  // Every holding of a key was seen by exactly one acquirer, in epoch order 1, 2, 3, ...
  // (a statement that timed out may have taken a key without anyone seeing its token).
  for (const row of rows) {
    const seen = [...(tokens.get(id(row)) ?? [])].sort((x, y) => (x < y ? -1 : 1));
    if (counts.errors === 0) expect({ key: id(row), seen }).toEqual({ key: id(row), seen: Array.from({ length: Number(row.token) }, (_, i) => BigInt(i + 1)) });
    else expect(new Set(seen).size).toBe(seen.length);
  }
  expect(counts.acquired).toBeGreaterThan(keys.length);
  expect(takeovers).toBeGreaterThan(0);
}, 120_000);

test("with the default settings, the leases of a node that stops renewing are taken over by another within 10 s", async () => {
  const config = loadConfig({ CHROMA_PRIMARY_URL: "http://127.0.0.1:1" });
  const url = await freshDatabase();
  const keys = keysOf(20);
  const dead = new LeaseManager(client(url), { nodeId: "dead", ttlMs: config.leaseTtlMs });
  const heir = new LeaseManager(client(url), { nodeId: "heir", ttlMs: config.leaseTtlMs });
  expect((await dead.tryAcquire(keys)).acquired).toHaveLength(20);
  expect((await heir.tryAcquire(keys)).acquired).toEqual([]);

  const lastRenewSentMs = performance.now();
  expect(await dead.renewOnce()).toEqual({ renewed: 20, lost: [], error: null });
  // The node dies here: no release, no more renewals. The heir runs its schedule.
  const deadlines = dead.leases().map((l) => l.deadlineMs);
  let heirHoldsAllMs = 0;
  const schedule = setInterval(async () => {
    await heir.renewOnce();
    await heir.tryAcquire(keys);
    if (!heirHoldsAllMs && heir.leases().length === keys.length) heirHoldsAllMs = performance.now();
  }, config.nodeHeartbeatIntervalMs);
  try {
    await waitFor(() => heirHoldsAllMs, { timeoutMs: 15_000, message: "the heir holding every key" });
  } finally {
    clearInterval(schedule);
  }
  const takeoverMs = heirHoldsAllMs - lastRenewSentMs;
  console.log(`[cluster-leases] takeover of 20 leases ${Math.round(takeoverMs)} ms after the dead node's last renewal (LEASE_TTL_SECONDS=${config.leaseTtlMs / 1000}, NODE_HEARTBEAT_INTERVAL=${config.nodeHeartbeatIntervalMs / 1000})`);
  expect(takeoverMs).toBeLessThan(10_000);
  expect(takeoverMs).toBeGreaterThanOrEqual(config.leaseTtlMs);
  // The dead node's own view had run out before the heir took over.
  expect(Math.max(...deadlines)).toBeLessThanOrEqual(heirHoldsAllMs);
  expect(dead.leases()).toEqual([]);
  expect((await listLeases(client(url))).map((row) => [row.nodeId, row.token])).toEqual(keys.map(() => ["heir", 2n]));
}, 30_000);

test("a node cut from Postgres stops counting itself holder within its lease time of its last renewal, before another node takes over", async () => {
  const url = await freshDatabase();
  const target = new URL(url);
  await using proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
  const viaProxy = new URL(url);
  viaProxy.port = String(proxy.port);
  const ttlMs = 3000;
  const intervalMs = 500;
  const keys = keysOf(6);
  const marginMs = 300;
  const cut = new LeaseManager(client(viaProxy.toString()), { nodeId: "cut", ttlMs, safetyMarginMs: marginMs });
  const other = new LeaseManager(client(url), { nodeId: "other", ttlMs });
  expect((await cut.tryAcquire(keys)).acquired).toHaveLength(6);

  let lastRenewOkSentMs = 0;
  let cutHeldUntilMs = 0;
  let otherHoldsAllMs = 0;
  // The safety property, checked at every instant the other node gains a lease and every
  // 2 ms besides: never do both count themselves holder of one key.
  const overlaps: string[] = [];
  const renewals: Array<string | null> = [];
  const cutSchedule = setInterval(async () => {
    const sentMs = performance.now();
    const result = await cut.renewOnce();
    renewals.push(result.error);
    if (!result.error && result.renewed === keys.length) lastRenewOkSentMs = sentMs;
  }, intervalMs);
  const otherSchedule = setInterval(async () => {
    await other.renewOnce();
    const { acquired } = await other.tryAcquire(keys);
    for (const lease of acquired) if (cut.holds(lease)) overlaps.push(`takeover: ${id(lease)}`);
    if (!otherHoldsAllMs && other.leases().length === keys.length) otherHoldsAllMs = performance.now();
  }, intervalMs);
  const watcher = setInterval(() => {
    if (!cutHeldUntilMs && cut.leases().length === 0) cutHeldUntilMs = performance.now();
    for (const key of keys) if (cut.holds(key) && other.holds(key)) overlaps.push(`sample: ${id(key)}`);
  }, 2);
  try {
    await waitFor(() => lastRenewOkSentMs > 0, { message: "a renewal through the proxy" });
    const cutAtMs = performance.now();
    await proxy.close();
    const deadlines = cut.leases().map((l) => l.deadlineMs);
    await waitFor(() => cutHeldUntilMs && otherHoldsAllMs, { timeoutMs: 20_000, message: "the cut node letting go and the other taking over" });
    console.log(
      `[cluster-leases] cut node: last good renewal sent ${Math.round(cutAtMs - lastRenewOkSentMs)} ms before the cut; ` +
        `it stopped counting itself holder ${Math.round(cutHeldUntilMs - lastRenewOkSentMs)} ms after that renewal (seen by a 2 ms sampler); ` +
        `the other node held every key ${Math.round(otherHoldsAllMs - lastRenewOkSentMs)} ms after it (TTL ${ttlMs} ms)`,
    );
    // Its deadline is its last renewal's send time plus the TTL less the safety margin (the
    // renewal's own clock reading is taken a moment after the test's), and it let go by then.
    expect(deadlines).toHaveLength(keys.length);
    for (const deadline of deadlines) expect(deadline - lastRenewOkSentMs).toBeWithin(ttlMs - marginMs, ttlMs - marginMs + 20);
    expect(cutHeldUntilMs - lastRenewOkSentMs).toBeLessThanOrEqual(ttlMs - marginMs + 50);
    expect(overlaps).toEqual([]);
    expect(renewals.some((e) => e !== null)).toBe(true);

    // Back in touch, the cut node learns the leases are gone and does not get them back.
    await proxy.reopen();
    const lost = await waitFor(async () => {
      const result = await cut.renewOnce();
      return result.error === null ? result : null;
    }, { message: "a renewal after the proxy reopened" });
    expect(cut.leases()).toEqual([]);
    expect(lost.renewed).toBe(0);
    expect((await cut.tryAcquire(keys)).acquired).toEqual([]);
  } finally {
    clearInterval(cutSchedule);
    clearInterval(otherSchedule);
    clearInterval(watcher);
  }
}, 60_000);

test("a renewal answered late extends the lease from when it was sent, not from when the answer came", async () => {
  const url = await freshDatabase();
  const ttlMs = 3000;
  const marginMs = 300;
  const leases = new LeaseManager(client(url), { nodeId: "slow", ttlMs, safetyMarginMs: marginMs, statementTimeoutMs: 2500 });
  const [key] = keysOf(1);
  await leases.tryAcquire([key!]);
  // Another session holds the row's lock, so the renewal waits in Postgres for 1.5 s.
  const blocker = client(url, 1);
  let releaseLock!: () => void;
  const locked = new Promise<void>((resolve) => {
    void blocker.begin(async (tx) => {
      await tx`select 1 from chroma_lb_replay_leases for update`;
      resolve();
      await new Promise<void>((r) => (releaseLock = r));
    });
  });
  await locked;
  const sentMs = performance.now();
  const renewal = leases.renewOnce();
  await Bun.sleep(1500); // the delay under test: how late the answer comes
  releaseLock();
  expect(await renewal).toEqual({ renewed: 1, lost: [], error: null });
  const answeredMs = performance.now();
  const deadline = leases.holds(key!)!.deadlineMs;
  expect(deadline).toBeWithin(sentMs + ttlMs - marginMs, sentMs + ttlMs - marginMs + 50);
  expect(answeredMs + ttlMs - marginMs - deadline).toBeGreaterThan(1400);
}, 30_000);

test("a holder that lost its lease cannot record progress: its fenced transaction is refused, and a takeover waits for a fenced transaction in flight", async () => {
  const url = await freshDatabase();
  const ttlMs = 1000;
  const key: LeaseKey = { instance: "primary", collection: "orders" };
  const sqlA = client(url);
  const sqlB = client(url);
  const a = new LeaseManager(sqlA, { nodeId: "a", ttlMs });
  const b = new LeaseManager(sqlB, { nodeId: "b", ttlMs, statementTimeoutMs: 10_000 });
  const leaseA = (await a.tryAcquire([key])).acquired[0]!;
  expect(leaseA.token).toBe(1n);

  // A records progress in a transaction that outlives its lease; B's takeover waits for it.
  let commitA!: () => void;
  let fencedA = null as boolean | null;
  let aCommittedMs = 0;
  const txA = sqlA.begin(async (tx) => {
    fencedA = await fenceInTx(tx, "a", leaseA);
    await new Promise<void>((r) => (commitA = r));
    aCommittedMs = performance.now();
  });
  await waitFor(() => fencedA !== null, { message: "A's fenced transaction under way" });
  expect(fencedA).toBe(true);
  await waitFor(() => !a.holds(key), { timeoutMs: 5_000, message: "A's lease running out" });
  await waitFor(async () => (await listLeases(sqlB))[0]?.expired, { timeoutMs: 5_000, message: "the row expired in Postgres" });
  const takeover = b.tryAcquire([key]);
  let takeoverAnswered = false;
  void takeover.then(() => (takeoverAnswered = true));
  await waitFor(async () => (await sqlA`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()`)[0]!.n === 1, { message: "the takeover waiting on A's row lock" });
  expect(takeoverAnswered).toBe(false);
  commitA();
  await txA;
  const result = await takeover;
  const bAnsweredMs = performance.now();
  expect(result.acquired.map((l) => l.token)).toEqual([2n]);
  expect(bAnsweredMs).toBeGreaterThanOrEqual(aCommittedMs);

  // From now on A's fenced writes are refused and B's go through.
  expect(await sqlA.begin((tx) => fenceInTx(tx, "a", leaseA))).toBe(false);
  expect(await sqlB.begin((tx) => fenceInTx(tx, "b", result.acquired[0]!))).toBe(true);
  // A's renewal tells it the lease is gone.
  expect(await a.renewOnce()).toEqual({ renewed: 0, lost: [key], error: null });
}, 30_000);

test("a released lease is taken at once by another node, with the next token", async () => {
  const url = await freshDatabase();
  const a = new LeaseManager(client(url), { nodeId: "a", ttlMs: 60_000 });
  const b = new LeaseManager(client(url), { nodeId: "b", ttlMs: 60_000 });
  const keys = keysOf(3);
  await a.tryAcquire(keys);
  expect((await b.tryAcquire(keys)).acquired).toEqual([]);
  expect(await a.releaseAll()).toEqual({ released: 3, error: null });
  expect(a.leases()).toEqual([]);
  expect((await expiredLeaseKeys(client(url))).map(id).sort()).toEqual(keys.map(id).sort());
  expect((await b.tryAcquire(keys)).acquired.map((l) => [id(l), l.token])).toEqual(keys.map((k) => [id(k), 2n]));
  // A renewal that reaches Postgres after a release does not revive the row.
  expect(await a.renewOnce()).toEqual({ renewed: 0, lost: [], error: null });
  // Rows of deleted collections can be forgotten, but only while nobody holds them.
  const sql = client(url);
  expect(await forgetLeases(sql, keys)).toBe(0);
  await b.releaseAll();
  expect(await forgetLeases(sql, keys.slice(0, 2))).toBe(2);
  expect((await listLeases(sql)).map(id)).toEqual([id(keys[2]!)]);
});

test("the registry lists live nodes with their leases, drops a silent node after the live bound, and refuses a second live process with the same NODE_ID", async () => {
  const url = await freshDatabase();
  const liveMs = 1500;
  const sql = client(url);
  const one = new NodeRegistry(sql, { nodeId: "lb-1:8000", address: "http://10.0.0.1:8000", liveMs });
  const two = new NodeRegistry(sql, { nodeId: "lb-2:8000", address: "http://10.0.0.2:8000", liveMs });
  expect((await one.heartbeatOnce()).ok).toBe(true);
  expect((await two.heartbeatOnce()).ok).toBe(true);
  await new LeaseManager(sql, { nodeId: "lb-2:8000", ttlMs: 60_000 }).tryAcquire(keysOf(2));
  expect((await one.liveNodes()).map((n) => [n.id, n.address, n.leases])).toEqual([
    ["lb-1:8000", "http://10.0.0.1:8000", 0],
    ["lb-2:8000", "http://10.0.0.2:8000", 2],
  ]);

  // A second process with lb-1's NODE_ID while lb-1 beats: refused.
  const twin = new NodeRegistry(sql, { nodeId: "lb-1:8000", address: "http://10.0.0.9:8000", liveMs });
  const refused = await twin.heartbeatOnce();
  expect(refused).toMatchObject({ ok: false, reason: "node id in use" });

  // lb-2 stops beating; lb-1 goes on. After the live bound, only lb-1 is listed.
  const started = (await one.liveNodes())[0]!.startedAt;
  await waitFor(
    async () => {
      await one.heartbeatOnce();
      const live = await one.liveNodes();
      return live.length === 1 && live[0]!.id === "lb-1:8000";
    },
    { timeoutMs: 10_000, intervalMs: 200, message: "lb-2 dropping out of the live list" },
  );
  expect((await one.liveNodes())[0]!.startedAt).toEqual(started);

  // lb-1 leaves cleanly; its twin may now run under that id, as a new start.
  await one.leave();
  expect((await two.liveNodes()).map((n) => n.id)).toEqual([]);
  const taken = await twin.heartbeatOnce();
  expect(taken.ok).toBe(true);
  expect((await twin.liveNodes()).map((n) => [n.id, n.address])).toEqual([["lb-1:8000", "http://10.0.0.9:8000"]]);
  // lb-2's row, silent for over a second, is pruned; the twin's stays.
  expect(await twin.pruneOnce(1000)).toBe(1);
  expect((await twin.liveNodes()).map((n) => n.id)).toEqual(["lb-1:8000"]);
}, 30_000);

test("a node's jobs take the keys it wants, and a process started with a live node's NODE_ID takes none", async () => {
  const url = await freshDatabase();
  const keys = keysOf(4);
  const node = (nodeId: string) => {
    const sql = client(url);
    const leases = new LeaseManager(sql, { nodeId, ttlMs: 6000 });
    const registry = new NodeRegistry(sql, { nodeId, address: `http://${nodeId}`, liveMs: 6000 });
    const listener = new WakeupListener({ nodeId, connect: () => client(url, 1), onEvent: () => {} });
    const jobs = clusterJobs({ registry, leases, listener, heartbeatIntervalMs: 1000, wantedKeys: () => keys });
    return { leases, registry, listener, runAll: () => Promise.all(jobs.map((job) => job.run())), names: jobs.map((j) => j.name) };
  };
  const first = node("lb-1");
  const twin = node("lb-1");
  try {
    expect(first.names).toEqual(["node-heartbeat", "lease-acquire", "wakeup-listener"]);
    await first.runAll();
    await first.runAll();
    expect(first.leases.leases().map(id).sort()).toEqual(keys.map(id).sort());
    expect(first.listener.status.listening).toBe(true);
    // The twin's heartbeat is refused, so it acquires nothing, even keys that are free.
    await first.leases.release([keys[0]!]);
    await twin.runAll();
    await twin.runAll();
    expect(twin.registry.lastError).toContain("another live process");
    expect(twin.leases.leases()).toEqual([]);
    expect((await first.registry.liveNodes()).map((n) => [n.id, n.address, n.leases])).toEqual([["lb-1", "http://lb-1", 3]]);
  } finally {
    await Promise.all([first.listener.stop(), twin.listener.stop()]);
  }
}, 30_000);

test("a wake-up listener cut from Postgres notices at its next check and listens again once the path is back", async () => {
  const url = await freshDatabase();
  const target = new URL(url);
  await using proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
  const viaProxy = new URL(url);
  viaProxy.port = String(proxy.port);
  const events: WakeupEvent[] = [];
  const listener = new WakeupListener({
    nodeId: "b",
    connect: () => postgres(viaProxy.toString(), { max: 1, connect_timeout: 1, onnotice: () => {} }),
    onEvent: (event) => events.push(event),
    timeoutMs: 1000,
  });
  const publisher = client(url, 1);
  try {
    expect((await listener.checkOnce()).listening).toBe(true);
    await proxy.close();
    const startedMs = performance.now();
    expect((await listener.checkOnce()).listening).toBe(false);
    expect(performance.now() - startedMs).toBeLessThan(2 * 1000 + 500);
    // Hints sent while cut are lost; the resync after the next LISTEN stands for them.
    await publishHint(publisher, "a", { kind: "entry", collection: "while cut" });
    await proxy.reopen();
    events.length = 0;
    await waitFor(async () => (await listener.checkOnce()).listening, { timeoutMs: 10_000, intervalMs: 100, message: "listening again" });
    await publishHint(publisher, "a", { kind: "entry", collection: "after the cut" });
    await listener.checkOnce(); // its ping's echo comes after the hint
    expect(events).toEqual([{ kind: "resync" }, { kind: "entry", collection: "after the cut", from: "a" }]);
  } finally {
    await listener.stop();
  }
}, 30_000);

test("wake-up hints arrive at other nodes, and again after Postgres is SIGKILLed and restarted", async () => {
  // Its own server: this test kills it.
  await using server = await startPgServer();
  const url = await freshDatabase(server);
  const events: WakeupEvent[] = [];
  const listener = new WakeupListener({
    nodeId: "b",
    connect: () => postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} }),
    onEvent: (event) => events.push(event),
    timeoutMs: 1000,
  });
  const publisher = client(url, 1);
  try {
    await listener.checkOnce();
    expect(listener.status).toMatchObject({ listening: true, listens: 1, restarts: 0 });
    expect(events).toEqual([{ kind: "resync" }]);

    await publishHint(publisher, "a", { kind: "entry", collection: "orders" });
    await publishHint(publisher, "a", { kind: "mapping", collection: null });
    await publishHint(publisher, "a", { kind: "switch", what: "maintenance", instance: "replica" });
    await publishHint(publisher, "b", { kind: "entry", collection: "own hint, skipped" });
    // A hint sent in a transaction that rolls back is never delivered.
    await publisher.begin(async (tx) => {
      await publishHint(tx, "a", { kind: "entry", collection: "rolled back" });
      throw new Error("roll back");
    }).catch(() => {});
    await publisher.unsafe(`select pg_notify('chroma_lb_wakeup', 'not json')`);
    await waitFor(() => events.length >= 4, { message: "three hints" });
    // The ping of the next check goes after every hint above, so by its echo they have all arrived.
    await listener.checkOnce();
    expect(events).toEqual([
      { kind: "resync" },
      { kind: "entry", collection: "orders", from: "a" },
      { kind: "mapping", collection: null, from: "a" },
      { kind: "switch", what: "maintenance", instance: "replica", from: "a" },
    ]);
    expect(listener.status).toMatchObject({ listening: true, listens: 1, restarts: 0, hintsReceived: 3 });

    await server.kill("SIGKILL");
    // While Postgres is down, each check is bounded and reports not listening.
    const downStartMs = performance.now();
    await listener.checkOnce();
    expect(performance.now() - downStartMs).toBeLessThan(2 * 1000 + 1000);
    expect(listener.status.listening).toBe(false);
    await server.restart();

    events.length = 0;
    await waitFor(async () => (await listener.checkOnce()).listening, { timeoutMs: 20_000, intervalMs: 200, message: "the listener listening again" });
    expect(events).toContainEqual({ kind: "resync" });
    await waitFor(
      async () => {
        await publishHint(publisher, "a", { kind: "entry", collection: "after restart" });
        return events.some((e) => e.kind === "entry" && e.collection === "after restart");
      },
      { timeoutMs: 10_000, intervalMs: 200, message: "a hint after the restart" },
    );
    expect(listener.status.restarts).toBeGreaterThan(0);
    console.log(`[cluster-leases] wake-up listener after SIGKILL and restart: ${JSON.stringify(listener.status)}`);
  } finally {
    await listener.stop();
    await publisher.end({ timeout: 0 }).catch(() => {});
  }
}, 60_000);

test("a session cut off while it waits for a lock never takes it: Postgres ends it within seconds, and the lock is free once its holder lets go", async () => {
  const url = await pg.freshDatabase("cut_waiter");
  const holder = client(url, 1);
  const admin = client(url, 1);
  await using proxy = await startTcpProxy({ host: "127.0.0.1", port: pg.port });
  const proxied = new URL(url);
  proxied.port = String(proxy.port);
  // chroma-lb's own client settings (src/db/index.ts), reached through the proxy the test cuts.
  const waiter = postgresClient(proxied.toString(), { max: 1, connectTimeoutSeconds: 2 });
  clients.push(waiter);
  const key = 4242;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const holding = holder.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${key})`;
    await released;
  });
  const waiting = async () => (await admin<Array<{ n: number }>>`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted`)[0]!.n;
  await waitFor(async () => (await admin`select 1 from pg_locks where locktype = 'advisory' and granted`).length > 0, { message: "the holder has the lock" });
  const cutOff = waiter.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${key})`;
    await new Promise(() => {}); // it would hold the lock for good if it ever got it
  });
  cutOff.catch(() => {});
  await waitFor(async () => (await waiting()) === 1, { message: "the proxied session waits for the lock" });
  await proxy.close();
  // Without client_connection_check_interval the backend would wait on, take the lock once
  // the holder lets go, and hold it, idle, until its idle-in-transaction timeout.
  await waitFor(async () => (await waiting()) === 0, { timeoutMs: 5_000, message: "Postgres ends the cut-off session" });
  release();
  await holding;
  expect((await admin<Array<{ ok: boolean }>>`select pg_try_advisory_lock(${key}) as ok`)[0]!.ok).toBe(true);
});
