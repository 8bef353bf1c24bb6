/**
 * Apply locks across nodes (src/cluster/apply-locks.ts) against a real, private Postgres:
 * Postgres frees a lock as soon as its holder's connection ends, while a request the holder
 * sent a moment before may still be on its way to the instance. The next holder must send
 * nothing to that copy until such a request has timed out, or an older write could land
 * after a newer one. And entries the gone holder applied without recording them are sent
 * again, which is not always the same as sending them once: the copy is marked in doubt
 * (and rebuilt by the repair pass). A holder that committed leaves nothing to wait for.
 *
 * Each "node" is an ApplyLocks in this process with clients of its own; node a reaches
 * Postgres through a TCP proxy the test cuts, as `cut-node` does in the chaos run.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import postgres from "postgres";
import { ApplyLocks, VanishedHolderRequests } from "../../src/cluster/apply-locks";
import { clusterTables } from "../../src/cluster";
import { migratePostgres, postgresClient } from "../../src/db";
import { TxScope } from "../../src/wal/postgres/tx-scope";
import type { Divergence } from "../../src/wal/types";
import { killAll, waitFor } from "../support";
import { startPgServer, type PgServer } from "../support/pg-server";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy";

let pg: PgServer;
const clients: postgres.Sql[] = [];
const requestTimeoutMs = 1_500;

beforeAll(async () => {
  pg = await startPgServer();
}, 60_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end({ timeout: 0 }).catch(() => {})));
  await pg?.stop();
  await killAll();
});

/** chroma-lb's own client settings (src/db/index.ts); the file closes it at the end. */
function client(url: string, max: number): postgres.Sql {
  const sql = postgresClient(url, { max, connectTimeoutSeconds: 2, fastReconnect: true });
  clients.push(sql);
  return sql;
}

/** A node's apply locks: a lock client and a send-row client, both on `url`; `doubts` collects the copies it marks in doubt. */
function node(nodeId: string, url: string, doubts: Divergence[] = []): ApplyLocks {
  return new ApplyLocks(client(url, 3), new TxScope(), { nodeId, requestTimeoutMs, leaseOf: () => null, onDoubt: (mark) => doubts.push(mark) }, client(url, 1));
}

async function setUp(prefix: string): Promise<{ url: string; proxy: TcpProxy; a: ApplyLocks; b: ApplyLocks; admin: postgres.Sql; doubtsOfB: Divergence[] }> {
  const url = await pg.freshDatabase(prefix);
  await migratePostgres(url);
  const proxy = await startTcpProxy({ host: "127.0.0.1", port: pg.port });
  const proxied = new URL(url);
  proxied.port = String(proxy.port);
  const doubtsOfB: Divergence[] = [];
  return { url, proxy, a: node("a", proxied.toString()), b: node("b", url, doubtsOfB), admin: client(url, 1), doubtsOfB };
}

const marks = async (admin: postgres.Sql) => [...(await admin<Array<{ instance: string; partition: string; op: string }>>`select instance, partition, op from chroma_lb_wal_diverged`)];

/**
 * Node b, again and again, tries to send to primary/c under the apply lock (inside a write
 * lock's transaction when `inWrite`): answers when it first could, and what stopped it before.
 */
async function nextHolderSends(b: ApplyLocks, inWrite: boolean): Promise<{ sentAtMs: number; vanished: VanishedHolderRequests[]; busy: number }> {
  const vanished: VanishedHolderRequests[] = [];
  let busy = 0;
  const attempt = () =>
    b.applying(
      "primary",
      "c",
      async () => {
        await b.beforeSend("primary", "c");
        return Date.now();
      },
      false,
    );
  for (;;) {
    try {
      const sentAtMs = inWrite ? await b.writing("c", async () => [], attempt) : await attempt();
      if (sentAtMs !== null) return { sentAtMs, vanished, busy };
      busy += 1;
    } catch (error) {
      if (!(error instanceof VanishedHolderRequests)) throw error;
      vanished.push(error);
    }
    await Bun.sleep(50);
  }
}

for (const inWrite of [false, true]) {
  test(`a holder cut from Postgres right after its last check: the next holder${inWrite ? " (a writer, in its write lock)" : ""} sends nothing to that copy until the cut holder's request has timed out`, async () => {
    const { proxy, a, b, admin, doubtsOfB } = await setUp(inWrite ? "vanished_writer" : "vanished_replayer");
    await using _proxy = proxy;
    let checkedAtMs = 0;
    let cut!: () => void;
    const afterCut = new Promise<void>((resolve) => (cut = resolve));
    const body = async () => {
      await a.beforeSend("primary", "c");
      // Here a would send its request; it is cut off before its answer comes back.
      checkedAtMs = Date.now();
      await afterCut;
      return "sent";
    };
    const holding = (inWrite ? a.writing("c", async () => [], () => a.applying("primary", "c", body, false)) : a.applying("primary", "c", body, false)).catch((error: unknown) => error);
    await waitFor(() => checkedAtMs > 0, { message: "node a checked and is about to send" });
    expect(a.stats.sendRows).toBe(1);
    await proxy.close();
    // Postgres ends a's session and frees its locks at once.
    await waitFor(async () => (await admin`select 1 from pg_locks where locktype = 'advisory'`).length === 0, { timeoutMs: 5_000, message: "a's locks are freed" });

    const { sentAtMs, vanished } = await nextHolderSends(b, inWrite);
    cut();
    await holding;
    expect(vanished.length).toBeGreaterThan(0);
    // It waited for a's request's whole timeout, not just for the lock.
    expect(sentAtMs - checkedAtMs).toBeGreaterThanOrEqual(requestTimeoutMs);
    expect(vanished[0]!.untilMs - checkedAtMs).toBeGreaterThanOrEqual(requestTimeoutMs);
    expect(b.stats.vanishedHolderWaits).toBe(vanished.length);
    // What a may have applied without recording it was sent again: the copy is in doubt, once.
    expect(await marks(admin)).toEqual([{ instance: "primary", partition: "c", op: "doubt" }]);
    expect(doubtsOfB.map((m) => `${m.instance}/${m.partition}/${m.op}`)).toEqual(["primary/c/doubt"]);
    expect((await admin`select 1 from ${admin(clusterTables.applySends)} where node_id = 'a'`).length).toBe(0);
    await nextHolderSends(b, inWrite);
    expect(b.stats.copiesInDoubt).toBe(1);
  }, 30_000);
}

test("a holder that committed leaves nothing to wait for: the next holder sends at once, and old send rows are swept", async () => {
  const { proxy, a, b, admin, doubtsOfB } = await setUp("committed_holder");
  await using _proxy = proxy;
  expect(await a.applying("primary", "c", async () => (await a.beforeSend("primary", "c"), "sent"), false)).toBe("sent");
  // Several requests of one transaction share its row.
  expect(
    await a.writing("c", async () => [], async () => {
      for (let i = 0; i < 3; i++) await a.applying("primary", "c", () => a.beforeSend("primary", "c"), false);
      return "sent";
    }),
  ).toBe("sent");
  expect(a.stats.sendRows).toBe(2);
  const { vanished, busy } = await nextHolderSends(b, false);
  expect(vanished).toEqual([]);
  expect(busy).toBe(0);
  expect(doubtsOfB).toEqual([]);
  expect(await marks(admin)).toEqual([]);

  const rows = async () => (await admin<Array<{ n: number }>>`select count(*)::int as n from ${admin(clusterTables.applySends)}`)[0]!.n;
  expect(await rows()).toBe(3);
  expect(await b.sweepSends()).toBe(0);
  await admin`update ${admin(clusterTables.applySends)} set until = clock_timestamp() - interval '2 minutes'`;
  expect(await b.sweepSends()).toBe(3);
  expect(await rows()).toBe(0);
}, 30_000);

test("a lock statement that never answers (a connection the driver left waiting) reports its client stuck, so that it is replaced", async () => {
  const url = await pg.freshDatabase("stuck_client");
  await migratePostgres(url);
  // Forwards both ways until `swallow`; then what the client sends goes nowhere, and its
  // statements wait for good, as on a connection postgres.js left waiting after a close
  // during start-up (porsager/postgres#1193, #1214).
  let swallow = false;
  const upstreams: Array<{ end(): void }> = [];
  const proxy = Bun.listen<{ upstream: { write(b: Uint8Array): number; end(): void } | null; early: Uint8Array[] }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      async open(client) {
        client.data = { upstream: null, early: [] };
        const upstream = await Bun.connect({ hostname: "127.0.0.1", port: pg.port, socket: { data: (_s, chunk) => void client.write(chunk), close: () => void client.end() } });
        upstreams.push(upstream);
        client.data.upstream = upstream;
        for (const chunk of client.data.early) upstream.write(chunk);
      },
      data(client, chunk) {
        if (swallow) return;
        if (client.data.upstream) client.data.upstream.write(chunk);
        else client.data.early.push(chunk.slice());
      },
      close: (client) => void client.data.upstream?.end(),
    },
  });
  const proxied = new URL(url);
  proxied.port = String(proxy.port);
  const stuck: string[] = [];
  const sql = postgresClient(proxied.toString(), { max: 1, connectTimeoutSeconds: 2 });
  const locks = new ApplyLocks(sql, new TxScope(), { nodeId: "a", requestTimeoutMs: 500, acquireMarginMs: 1_000, leaseOf: () => null, onStuck: (client, what) => stuck.push(`${client}: ${what}`) }, client(url, 1));
  try {
    expect(await locks.applying("primary", "c", async () => "applied", false)).toBe("applied");
    expect(stuck).toEqual([]);
    swallow = true;
    const waiting = locks.applying("primary", "c", async () => "applied", false).catch((error: Error) => error.message);
    await waitFor(() => stuck.length > 0, { timeoutMs: 5_000, message: "the client is reported stuck" });
    expect(stuck[0]).toContain("locks: apply lock of");
    // What the caller does (src/cluster/replication.ts): a new client; ending the old one fails what waited.
    await sql.end({ timeout: 0 });
    expect(await waiting).toContain("CONNECTION");
  } finally {
    proxy.stop(true);
    for (const upstream of upstreams) upstream.end();
  }
}, 30_000);
