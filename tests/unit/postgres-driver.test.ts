/**
 * The Postgres driver's own defects, patched in patches/postgres@3.4.9.patch. First: a new
 * connection first asks for the server's array types, and postgres.js 3.4.9 drops the
 * promise of that query (porsager/postgres#1192, #1205, #1223). When it fails (cancelled,
 * or its connection closed or destroyed while Postgres goes away), the rejection is
 * unhandled: it ends a process that treats those as fatal, and fails a test run that has
 * chroma-lb nodes in its own process. Here a proxy in front of the shared Postgres answers
 * that one query with an error, as a cancelled statement is answered.
 *
 * Second: a transaction whose connection closes rejects `begin()`, but its callback runs on,
 * and what it sends afterwards either waits for good (queued in the transaction) or runs on
 * the connection's next session, outside the transaction (porsager/postgres#1186, #1215). A
 * chroma-lb node cut from Postgres then kept a replay lock of its own for good (replay to
 * that copy, its writes and its resync waited behind it), or ran a lock or a recording
 * outside the transaction meant to hold it.
 */
import { expect, test } from "bun:test";
import postgres from "postgres";
import type { Socket } from "bun";

const upstreamPort = 5432;

/** A Postgres ErrorResponse message ('E') with the given SQLSTATE, then ReadyForQuery ('Z', idle). */
function failedQueryAnswer(code: string, message: string): Uint8Array {
  const fields = Buffer.from(["SERROR", "VERROR", `C${code}`, `M${message}`].map((f) => `${f}\0`).join("") + "\0", "latin1");
  const error = Buffer.alloc(5 + fields.length);
  error.write("E", 0, "latin1");
  error.writeInt32BE(4 + fields.length, 1);
  fields.copy(error, 5);
  return Buffer.concat([error, Buffer.from([0x5a, 0, 0, 0, 5, 0x49])]);
}

interface Link {
  upstream: Socket<undefined> | null;
  early: Uint8Array[];
  /** The driver sends a Sync after an error; the answer above stood for Postgres's, so it is not forwarded. */
  dropSync: boolean;
}

const sync = [0x53, 0, 0, 0, 4];

test("a connection whose array-types query fails leaves no unhandled rejection, and its queries still run", async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  let failedTypeQueries = 0;
  const proxy = Bun.listen<Link>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      async open(client) {
        client.data = { upstream: null, early: [], dropSync: false };
        const upstream = await Bun.connect<undefined>({
          hostname: "127.0.0.1",
          port: upstreamPort,
          socket: { data: (_s, chunk) => void client.write(chunk), close: () => void client.end() },
        });
        client.data.upstream = upstream;
        for (const chunk of client.data.early) upstream.write(chunk);
      },
      data(client, chunk) {
        // The driver's array-types query names pg_type's `typarray`; the first one is answered
        // as a cancelled statement, without reaching Postgres.
        if (failedTypeQueries === 0 && Buffer.from(chunk).toString("latin1").includes("typarray")) {
          failedTypeQueries += 1;
          client.write(failedQueryAnswer("57014", "canceling statement due to user request"));
          client.data.dropSync = true;
          return;
        }
        if (client.data.dropSync && sync.every((byte, i) => chunk[i] === byte)) {
          client.data.dropSync = false;
          chunk = chunk.subarray(sync.length);
          if (!chunk.length) return;
        }
        if (client.data.upstream) client.data.upstream.write(chunk);
        else client.data.early.push(chunk.slice());
      },
      close: (client) => void client.data.upstream?.end(),
    },
  });
  const sql = postgres(`postgres://postgres@127.0.0.1:${proxy.port}/test`, { max: 1, onnotice: () => {} });
  try {
    // The first query may be answered with the types query's error (porsager/postgres#1223):
    // an error its caller sees and retries, unlike an unhandled rejection.
    const first = await sql<Array<{ x: number }>>`select 1 as x`.then((rows) => [...rows], (error: Error) => error.message);
    expect([[{ x: 1 }], "canceling statement due to user request"]).toContainEqual(first);
    expect(failedTypeQueries).toBe(1);
    expect([...(await sql<Array<{ x: number }>>`select 2 as x`)]).toEqual([{ x: 2 }]);
    // An unhandled rejection would have been reported once the failed query's microtasks ran.
    await Bun.sleep(0);
    expect(unhandled.map(String)).toEqual([]);
  } finally {
    process.off("unhandledRejection", onUnhandled);
    await sql.end({ timeout: 1 });
    proxy.stop(true);
  }
});

test("a transaction whose connection closes fails what its callback sends afterwards, and none of it runs on the connection's next session", async () => {
  const url = `postgres://postgres@127.0.0.1:${upstreamPort}/test`;
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  const table = `driver_tx_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  try {
    await admin`create table ${admin(table)} (v int)`;
    let pid = 0;
    let resume!: () => void;
    const resumed = new Promise<void>((resolve) => (resume = resolve));
    let later: Promise<string> | null = null;
    const tx = sql
      .begin(async (t) => {
        pid = (await t<Array<{ pid: number }>>`select pg_backend_pid() as pid`)[0]!.pid;
        await resumed;
        later = t`insert into ${t(table)} values (1)`.then(
          () => "ran",
          (error: { code?: string }) => String(error.code),
        );
        return later;
      })
      .then(
        () => "committed",
        (error: { code?: string }) => String(error.code),
      );
    while (pid === 0) await Bun.sleep(5);
    // Another query waits for the only connection: once the transaction's session is gone,
    // the driver opens a new session on that connection for it.
    const queued = sql<Array<{ v: number }>>`select 2 as v`;
    await admin`select pg_terminate_backend(${pid})`;
    expect(await tx).not.toBe("committed");
    expect([...(await queued)]).toEqual([{ v: 2 }]);
    resume();
    while (later === null) await Bun.sleep(5);
    const outcome = await Promise.race([later as Promise<string>, Bun.sleep(3_000).then(() => "still waiting")]);
    expect(outcome).toBe("CONNECTION_CLOSED");
    expect((await admin<Array<{ n: number }>>`select count(*)::int as n from ${admin(table)}`)[0]!.n).toBe(0);
  } finally {
    await admin`drop table if exists ${admin(table)}`;
    await Promise.all([sql.end({ timeout: 1 }), admin.end({ timeout: 1 })]);
  }
});
