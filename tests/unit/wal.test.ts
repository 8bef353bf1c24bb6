/**
 * The write-ahead log against a real SQLite file: ordering, group commit, durability across
 * reopen and process death, per-instance pending rows, and retention that never drops an
 * entry an instance still owes.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalStore, type LocalStore } from "../../src/db";
import { WriteAheadLog, type Entry, type NewEntry } from "../../src/wal/log";

const instances = ["primary", "replica"];
/** The position an append was given (append resolves with the whole entry). */
const seqOf = (appended: Promise<Entry>) => appended.then((entry) => entry.seq);
const encoder = new TextEncoder();
const colA = "0a0a0a0a-0000-4000-8000-00000000000a";
const colB = "0b0b0b0b-0000-4000-8000-00000000000b";

const opened: LocalStore[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const store of opened.splice(0)) {
    try {
      store.close();
    } catch {
      // Closed by the test already.
    }
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "chroma-lb-wal-"));
  dirs.push(dir);
  return dir;
}

function open(dir: string): { store: LocalStore; wal: WriteAheadLog } {
  const store = openLocalStore(dir);
  opened.push(store);
  return { store, wal: new WriteAheadLog(store, instances) };
}

function add(partition: string, ids: string[]): NewEntry {
  return {
    partition,
    kind: "records",
    op: "add",
    tenant: "default_tenant",
    database: "default_database",
    collectionId: partition,
    name: null,
    body: encoder.encode(JSON.stringify({ ids, embeddings: ids.map((_, i) => [i, i + 0.5]) })),
  };
}

/** An entry as nextPending returns it, without the fields that vary per run. */
const shape = (e: { seq: number; partition: string; op: string; state: string; body: Uint8Array | null; attempts: number }) => ({
  seq: e.seq,
  partition: e.partition,
  op: e.op,
  state: e.state,
  body: e.body === null ? null : new TextDecoder().decode(e.body),
  attempts: e.attempts,
});

describe("append", () => {
  test("opens the file in WAL journal mode; only appends wait for the disk", async () => {
    const { store, wal } = open(tempDir());
    expect(store.sqlite.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    // Each append's transaction runs with synchronous=FULL (2); what it records is seen here.
    const modes: number[] = [];
    const transaction = store.db.transaction.bind(store.db);
    store.db.transaction = ((fn: Parameters<typeof transaction>[0]) => {
      modes.push((store.sqlite.query("PRAGMA synchronous").get() as { synchronous: number }).synchronous);
      return transaction(fn);
    }) as typeof store.db.transaction;
    await wal.append(add(colA, ["a"]));
    store.db.transaction = transaction;
    expect(modes.length).toBeGreaterThan(0);
    expect(new Set(modes)).toEqual(new Set([2]));
    // Between appends, state changes are committed without waiting (1 is NORMAL).
    expect(store.sqlite.query("PRAGMA synchronous").get()).toEqual({ synchronous: 1 });
  });

  test("concurrent appends get increasing seqs in call order and share one group commit", async () => {
    const { wal } = open(tempDir());
    const n = 100;
    const seqs = await Promise.all(Array.from({ length: n }, (_, i) => seqOf(wal.append(add(colA, [`r${i}`])))));
    expect(seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(wal.commitStats).toEqual({ transactions: 1, entries: n, largestGroup: n });
    expect(wal.headSeq()).toBe(n);
    expect(instances.map((i) => wal.pendingCount(i))).toEqual([n, n]);
  });

  test("appends made after a commit start a new group", async () => {
    const { wal } = open(tempDir());
    await Promise.all([seqOf(wal.append(add(colA, ["a"]))), seqOf(wal.append(add(colA, ["b"])))]);
    await seqOf(wal.append(add(colB, ["c"])));
    expect(wal.commitStats).toEqual({ transactions: 2, entries: 3, largestGroup: 2 });
  });

  test("refuses appends beyond the queue bound instead of growing without limit", async () => {
    const store = openLocalStore(tempDir());
    opened.push(store);
    const wal = new WriteAheadLog(store, instances, { appendQueueMax: 3 });
    const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => wal.append(add(colA, [`r${i}`]))));
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "rejected", "rejected"]);
    expect(wal.headSeq()).toBe(3);
  });
});

describe("durability", () => {
  test("entries and pending rows survive closing and reopening the store", async () => {
    const dir = tempDir();
    const first = open(dir);
    const seqs = await Promise.all([seqOf(first.wal.append(add(colA, ["a"]))), seqOf(first.wal.append(add(colA, ["b"]))), seqOf(first.wal.append(add(colB, ["c"])))]);
    for (const seq of seqs) first.wal.markReady(seq, "primary");
    first.wal.markApplied("primary", seqs);
    first.store.close();

    const second = open(dir);
    expect(second.wal.headSeq()).toBe(3);
    expect([second.wal.pendingCount("primary"), second.wal.pendingCount("replica")]).toEqual([0, 3]);
    expect(second.wal.nextPending("replica", colA, 10).map(shape)).toEqual([
      { seq: 1, partition: colA, op: "add", state: "ready", body: '{"ids":["a"],"embeddings":[[0,0.5]]}', attempts: 0 },
      { seq: 2, partition: colA, op: "add", state: "ready", body: '{"ids":["b"],"embeddings":[[0,0.5]]}', attempts: 0 },
    ]);
    // The next append continues after the reopened head.
    expect(await seqOf(second.wal.append(add(colA, ["d"])))).toBe(4);
  });

  test("an append acknowledged before the process is killed is on disk", async () => {
    const dir = tempDir();
    const root = join(import.meta.dir, "..", "..");
    // The child acknowledges each append on stdout as soon as it resolves, then dies by SIGKILL
    // with no chance to close the database.
    const script = `
      import { openLocalStore } from ${JSON.stringify(join(root, "src/db/index.ts"))};
      import { WriteAheadLog } from ${JSON.stringify(join(root, "src/wal/log.ts"))};
      const wal = new WriteAheadLog(openLocalStore(process.argv[2]), ["primary", "replica"]);
      const body = new TextEncoder().encode('{"ids":["x"]}');
      const entry = { partition: "p", kind: "records", op: "add", tenant: "t", database: "d", collectionId: "p", name: null, body };
      for (let round = 0; round < 20; round++) {
        const seqs = (await Promise.all(Array.from({ length: 5 }, () => wal.append(entry)))).map((e) => e.seq);
        process.stdout.write(seqs.join("\\n") + "\\n");
      }
      process.kill(process.pid, "SIGKILL");
    `;
    const scriptPath = join(dir, "append-and-die.ts");
    await Bun.write(scriptPath, script);
    const child = Bun.spawn(["bun", scriptPath, dir], { stdout: "pipe", stderr: "pipe" });
    const [stdout, , exitCode] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
    expect(child.signalCode).toBe("SIGKILL");
    expect(exitCode).not.toBe(0);
    const acknowledged = stdout.split("\n").filter(Boolean).map(Number);
    expect(acknowledged).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));

    const { wal, store } = open(dir);
    const rows = store.sqlite.query("SELECT seq FROM wal_entries ORDER BY seq").all() as Array<{ seq: number }>;
    expect(rows.map((r) => r.seq)).toEqual(acknowledged);
    expect([wal.pendingCount("primary"), wal.pendingCount("replica")]).toEqual([100, 100]);
  });
});

describe("replay reads", () => {
  test("nextPending returns ready entries of one partition in order and stops at a new one", async () => {
    const { wal } = open(tempDir());
    const [s1, s2, s3, s4, s5] = await Promise.all([
      seqOf(wal.append(add(colA, ["a"]))),
      seqOf(wal.append(add(colB, ["other"]))),
      seqOf(wal.append(add(colA, ["b"]))),
      seqOf(wal.append(add(colA, ["c"]))),
      seqOf(wal.append(add(colA, ["d"]))),
    ]);
    for (const seq of [s1!, s2!, s3!, s5!]) wal.markReady(seq, "primary");
    // s4 is still being applied by its write target: nothing after it may be replayed yet.
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([s1, s3]);
    expect(wal.nextPending("replica", colA, 1).map((e) => e.seq)).toEqual([s1]);
    expect(wal.nextPending("replica", colA, 10, s1).map((e) => e.seq)).toEqual([s1]);
    expect(wal.nextPending("replica", colB, 10).map((e) => e.seq)).toEqual([s2]);
    wal.markReady(s4!, "primary");
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([s1, s3, s4, s5]);
    wal.markApplied("replica", [s1!, s3!]);
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([s4, s5]);
    expect(wal.pendingCount("replica")).toBe(3);
  });

  test("nextPending carries the failure count and last error of a retried entry", async () => {
    const { wal } = open(tempDir());
    const seq = await seqOf(wal.append(add(colA, ["a"])));
    wal.markReady(seq, "primary");
    wal.recordFailure("replica", seq, "instance answered 500");
    wal.recordFailure("replica", seq, "instance answered 503");
    const [entry] = wal.nextPending("replica", colA, 10);
    expect({ attempts: entry!.attempts, lastError: entry!.lastError }).toEqual({ attempts: 2, lastError: "instance answered 503" });
    expect(wal.failedEntries(10)).toEqual([
      { instance: "replica", seq, partition: colA, attempts: 2, lastError: "instance answered 503", lastAttemptAtMs: expect.any(Number), op: "add" },
    ]);
  });

  test("isCaughtUp ignores entries not yet acknowledged", async () => {
    const { wal } = open(tempDir());
    const s1 = await seqOf(wal.append(add(colA, ["a"])));
    // Appended but unanswered: no read has been promised this write yet.
    expect(wal.isCaughtUp("replica", colA)).toBe(true);
    wal.markReady(s1, "primary");
    wal.markApplied("primary", [s1]);
    expect([wal.isCaughtUp("primary", colA), wal.isCaughtUp("replica", colA)]).toEqual([true, false]);
    // A reader that needs only what came before s1 is served by either.
    expect(wal.isCaughtUp("replica", colA, s1 - 1)).toBe(true);
    expect(wal.isCaughtUp("replica", colB)).toBe(true);
    wal.markApplied("replica", [s1]);
    expect(wal.isCaughtUp("replica", colA)).toBe(true);
  });

  test("reject removes the entry's pending rows everywhere", async () => {
    const { wal } = open(tempDir());
    const [s1, s2] = await Promise.all([seqOf(wal.append(add(colA, ["a"]))), seqOf(wal.append(add(colA, ["bad"])))]);
    wal.markReady(s1!, "primary");
    expect(wal.appliedNowhere(s2!)).toBe(true);
    wal.reject(s2!);
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([s1]);
    expect([wal.pendingCount("primary"), wal.pendingCount("replica")]).toEqual([1, 1]);
    expect(wal.counts()).toEqual({ total: 2, pendingEntries: 1, rejected: 1 });
    // The rejected entry no longer blocks later ones.
    const s3 = await seqOf(wal.append(add(colA, ["c"])));
    wal.markReady(s3, "primary");
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([s1, s3]);
  });

  test("recoverUnanswered turns entries left new by a crash into ready ones", async () => {
    const dir = tempDir();
    const first = open(dir);
    const [s1, s2] = await Promise.all([seqOf(first.wal.append(add(colA, ["a"]))), seqOf(first.wal.append(add(colA, ["b"])))]);
    first.wal.markReady(s1!, "primary");
    first.store.close();

    const { wal } = open(dir);
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([s1]);
    expect(wal.recoverUnanswered()).toBe(1);
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([s1, s2]);
    expect(wal.nextPending("primary", colA, 10).map((e) => e.seq)).toEqual([s1, s2]);
    expect(wal.recoverUnanswered()).toBe(0);
  });
});

describe("cleanup", () => {
  test("removes old entries applied everywhere and never one still pending for any instance", async () => {
    const { wal, store } = open(tempDir());
    const [done, halfDone, untouched, unanswered, rejected] = await Promise.all([
      seqOf(wal.append(add(colA, ["a"]))),
      seqOf(wal.append(add(colA, ["b"]))),
      seqOf(wal.append(add(colB, ["c"]))),
      seqOf(wal.append(add(colB, ["d"]))),
      seqOf(wal.append(add(colB, ["e"]))),
    ]);
    for (const seq of [done!, halfDone!, untouched!]) wal.markReady(seq, "primary");
    wal.markApplied("primary", [done!, halfDone!]);
    wal.markApplied("replica", [done!]);
    wal.reject(rejected!);
    // `unanswered` is still `new`: owed by both, and never removed.

    // Nothing is old enough yet.
    expect(wal.cleanup(60 * 60 * 1000)).toEqual({ deletedEntries: 0 });
    expect(wal.cleanup(0)).toEqual({ deletedEntries: 2 });
    const left = store.sqlite.query("SELECT seq, state FROM wal_entries ORDER BY seq").all();
    expect(left).toEqual([
      { seq: halfDone, state: "ready" },
      { seq: untouched, state: "ready" },
      { seq: unanswered, state: "new" },
    ]);
    expect(wal.nextPending("replica", colA, 10).map((e) => e.seq)).toEqual([halfDone]);
    expect(wal.nextPending("replica", colB, 10).map((e) => e.seq)).toEqual([untouched]);

    wal.markApplied("replica", [halfDone!]);
    expect(wal.cleanup(0)).toEqual({ deletedEntries: 1 });
    // The head is the last position handed out, even though that entry was removed.
    expect(wal.headSeq()).toBe(rejected!);
  });

  test("the head position never goes back when cleanup removes the newest entries", async () => {
    const dir = tempDir();
    const first = open(dir);
    const seqs = await Promise.all([seqOf(first.wal.append(add(colA, ["a"]))), seqOf(first.wal.append(add(colA, ["b"])))]);
    for (const seq of seqs) {
      first.wal.markReady(seq, "primary");
      first.wal.markApplied("primary", [seq]);
      first.wal.markApplied("replica", [seq]);
    }
    expect(first.wal.cleanup(0)).toEqual({ deletedEntries: 2 });
    expect(first.wal.counts()).toEqual({ total: 0, pendingEntries: 0, rejected: 0 });
    expect(first.wal.headSeq()).toBe(2);
    first.store.close();

    const { wal } = open(dir);
    expect(wal.headSeq()).toBe(2);
    expect(await seqOf(wal.append(add(colA, ["c"])))).toBe(3);
    expect(wal.headSeq()).toBe(3);
  });

  test("an entry skipped by an operator for its last instance becomes removable", async () => {
    const { wal } = open(tempDir());
    const seq = await seqOf(wal.append(add(colA, ["a"])));
    wal.markReady(seq, "primary");
    wal.markApplied("primary", [seq]);
    expect(wal.skip("replica", seq)).toBe(true);
    expect(wal.skip("replica", seq)).toBe(false);
    expect(wal.pendingCount("replica")).toBe(0);
    expect(wal.cleanup(0)).toEqual({ deletedEntries: 1 });
  });
});
