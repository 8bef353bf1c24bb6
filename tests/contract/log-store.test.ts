/**
 * The log store contract: every test runs against every store (tests/support/log-stores.ts),
 * through the interface chroma-lb uses (WriteAheadLog over a LogStore, and the ordering
 * rules of replay/order.ts), never through a store's internals.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { nextStep, nothingAhead } from "../../src/replay/order";
import type { Entry, NewEntry } from "../../src/wal/log";
import { logStoreFixtures, type LogStoreFixture, type OpenedLog } from "../support/log-stores";

const instances = ["primary", "replica"];
const encoder = new TextEncoder();
const colA = "0a0a0a0a-0000-4000-8000-00000000000a";
const colB = "0b0b0b0b-0000-4000-8000-00000000000b";
const seqOf = (appended: Promise<Entry>) => appended.then((entry) => entry.seq);

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

function createCollection(id: string, name: string): NewEntry {
  return { partition: id, kind: "collection", op: "create_collection", tenant: "default_tenant", database: "default_database", collectionId: id, name, body: encoder.encode(`{"name":"${name}"}`) };
}

function createDatabase(name: string): NewEntry {
  return { partition: "meta", kind: "meta", op: "create_database", tenant: "default_tenant", database: name, collectionId: null, name: null, body: encoder.encode(`{"name":"${name}"}`) };
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

const seqsOf = (entries: Array<{ seq: number }>) => entries.map((e) => e.seq);

for (const { name, make } of logStoreFixtures) {
  describe(`${name} log store`, () => {
    let fixture: LogStoreFixture | null = null;
    const logs: OpenedLog[] = [];

    afterEach(async () => {
      for (const log of logs.splice(0)) await log.close().catch(() => {});
      await fixture?.destroy();
      fixture = null;
    });

    async function open(limits?: { appendQueueMax: number }) {
      fixture ??= await make();
      const log = await fixture.open(instances, limits);
      logs.push(log);
      return log.wal;
    }

    /** Closes every log open on the fixture and opens it again (a restart). */
    async function reopen() {
      for (const log of logs.splice(0)) await log.close();
      return open();
    }

    /** Appends entries together (one group) and marks them answered by the primary. */
    async function appendReady(entries: NewEntry[]) {
      const wal = logs.at(-1)!.wal;
      const appended = await Promise.all(entries.map((e) => wal.append(e)));
      await wal.markReady(appended, "primary");
      return appended;
    }

    describe("append", () => {
      test("concurrent appends get increasing seqs in call order and share one group commit", async () => {
        const wal = await open();
        const n = 100;
        const seqs = await Promise.all(Array.from({ length: n }, (_, i) => seqOf(wal.append(add(colA, [`r${i}`])))));
        expect(seqs).toEqual(Array.from({ length: n }, (_, i) => i + 1));
        expect(wal.commitStats).toEqual({ transactions: 1, entries: n, largestGroup: n });
        expect(wal.headSeq()).toBe(n);
        expect(instances.map((i) => wal.pendingCount(i))).toEqual([n, n]);
      });

      test("appends made after a commit start a new group", async () => {
        const wal = await open();
        await Promise.all([seqOf(wal.append(add(colA, ["a"]))), seqOf(wal.append(add(colA, ["b"])))]);
        await seqOf(wal.append(add(colB, ["c"])));
        expect(wal.commitStats).toEqual({ transactions: 2, entries: 3, largestGroup: 2 });
      });

      test("refuses appends beyond the queue bound instead of growing without limit", async () => {
        const wal = await open({ appendQueueMax: 3 });
        const results = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => wal.append(add(colA, [`r${i}`]))));
        expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "fulfilled", "rejected", "rejected"]);
        expect(wal.headSeq()).toBe(3);
      });
    });

    describe("order within a collection", () => {
      test("nextPending returns ready entries of one partition in order and stops at one not answered", async () => {
        const wal = await open();
        const [e1, e2, e3, e4, e5] = await Promise.all([add(colA, ["a"]), add(colB, ["other"]), add(colA, ["b"]), add(colA, ["c"]), add(colA, ["d"])].map((e) => wal.append(e)));
        await wal.markReady([e1!, e2!, e3!, e5!], "primary");
        // e4 is still being applied by its write target: nothing after it may be replayed yet.
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e1!.seq, e3!.seq]);
        expect(seqsOf(await wal.nextPending("replica", colA, 1))).toEqual([e1!.seq]);
        expect(seqsOf(await wal.nextPending("replica", colA, 10, e1!.seq))).toEqual([e1!.seq]);
        expect(seqsOf(await wal.nextPending("replica", colB, 10))).toEqual([e2!.seq]);
        expect(wal.isCaughtUp("replica", colA, e4!.seq - 1)).toBe(false);
        await wal.markReady([e4!], "primary");
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e1, e3, e4, e5].map((e) => e!.seq));
        await wal.markApplied("replica", [e1!, e3!]);
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e4!.seq, e5!.seq]);
        expect(wal.pendingCount("replica")).toBe(3);
        expect(await wal.pendingPartitions("replica", 10)).toEqual([
          { partition: colB, firstSeq: e2!.seq },
          { partition: colA, firstSeq: e4!.seq },
        ]);
      });

      test("bodies are read only for the leading entries that fit the byte bound, at least one", async () => {
        const wal = await open();
        const entries = await appendReady([add(colA, ["a"]), add(colA, ["b"]), add(colA, ["c"])]);
        const bytes = entries[0]!.bodyBytes;
        expect((await wal.nextPending("replica", colA, 10, undefined, bytes * 2)).map(shape)).toEqual([
          { seq: 1, partition: colA, op: "add", state: "ready", body: '{"ids":["a"],"embeddings":[[0,0.5]]}', attempts: 0 },
          { seq: 2, partition: colA, op: "add", state: "ready", body: '{"ids":["b"],"embeddings":[[0,0.5]]}', attempts: 0 },
        ]);
        expect(seqsOf(await wal.nextPending("replica", colA, 10, undefined, 1))).toEqual([1]);
      });

      test("isCaughtUp ignores entries not yet acknowledged", async () => {
        const wal = await open();
        const entry = await wal.append(add(colA, ["a"]));
        expect(wal.isCaughtUp("replica", colA)).toBe(true);
        await wal.markReady([entry], "primary");
        await wal.markApplied("primary", [entry]);
        expect([wal.isCaughtUp("primary", colA), wal.isCaughtUp("replica", colA)]).toEqual([true, false]);
        expect(wal.isCaughtUp("replica", colA, entry.seq - 1)).toBe(true);
        expect(wal.isCaughtUp("replica", colB)).toBe(true);
        await wal.markApplied("replica", [entry]);
        expect(wal.isCaughtUp("replica", colA)).toBe(true);
      });

      test("the write target's outcome makes its entries ready and applied there in one step", async () => {
        const wal = await open();
        const [e1, e2] = await Promise.all([wal.append(add(colA, ["a"])), wal.append(add(colA, ["b"]))]);
        const told: string[] = [];
        wal.onAppend((partition) => told.push(partition));
        await wal.completeOnTarget("primary", colA, [e1!.seq, e2!.seq]);
        expect(told).toEqual([colA]);
        expect([wal.pendingCount("primary"), wal.pendingCount("replica")]).toEqual([0, 2]);
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e1!.seq, e2!.seq]);
      });
    });

    describe("catalog entries ordered against collection entries", () => {
      test("a record write waits for an earlier database entry; a database entry waits for everything before it", async () => {
        const wal = await open();
        const [database, created, write, deleteDatabase] = await appendReady([
          createDatabase("other"),
          createCollection(colA, "docs"),
          add(colA, ["a"]),
          { ...createDatabase("other"), op: "delete_database" },
        ]);
        expect(await nextStep(wal, "replica", colA, { limit: 10 })).toEqual({ kind: "blocked", by: { seq: database!.seq, partition: "meta" } });
        // The meta partition's first entry has nothing before it; its delete waits for the collection's entries.
        const meta = await nextStep(wal, "replica", "meta", { limit: 10 });
        expect(meta.kind === "entries" && seqsOf(meta.entries)).toEqual([database!.seq]);
        await wal.markApplied("replica", [database!]);
        // A collection entry goes alone (only record writes merge).
        const collection = await nextStep(wal, "replica", colA, { limit: 10 });
        expect(collection.kind === "entries" && seqsOf(collection.entries)).toEqual([created!.seq]);
        expect(await nextStep(wal, "replica", "meta", { limit: 10 })).toEqual({ kind: "blocked", by: { seq: created!.seq, partition: colA } });
        await wal.markApplied("replica", [created!]);
        const records = await nextStep(wal, "replica", colA, { limit: 10 });
        expect(records.kind === "entries" && seqsOf(records.entries)).toEqual([write!.seq]);
        expect(await nextStep(wal, "replica", "meta", { limit: 10 })).toEqual({ kind: "blocked", by: { seq: write!.seq, partition: colA } });
        await wal.markApplied("replica", [write!]);
        const last = await nextStep(wal, "replica", "meta", { limit: 10 });
        expect(last.kind === "entries" && seqsOf(last.entries)).toEqual([deleteDatabase!.seq]);
      });

      test("the write path's check sees an unanswered entry of the partition and an earlier barrier, in one call", async () => {
        const wal = await open();
        const [database] = await appendReady([createDatabase("other")]);
        const unanswered = await wal.append(add(colA, ["a"]));
        const next = await wal.append(add(colA, ["b"]));
        // The database entry is a barrier for colA's entries; the unanswered one holds back the next.
        expect(await nothingAhead(wal, "replica", unanswered)).toBe(false);
        await wal.markApplied("replica", [database!]);
        expect(await nothingAhead(wal, "replica", unanswered)).toBe(true);
        expect(await nothingAhead(wal, "replica", next)).toBe(false);
        await wal.markApplied("replica", [unanswered]);
        expect(await nothingAhead(wal, "replica", next)).toBe(true);
        expect(await nothingAhead(wal, "primary", { ...createDatabase("x"), seq: next.seq + 1 })).toBe(false);
      });

      test("creating a collection waits for earlier collection changes of other collections", async () => {
        const wal = await open();
        const [dropped, recreated] = await appendReady([
          { ...createCollection(colA, "docs"), op: "delete_collection" },
          createCollection(colB, "docs"),
        ]);
        expect(await nextStep(wal, "replica", colB, { limit: 10 })).toEqual({ kind: "blocked", by: { seq: dropped!.seq, partition: colA } });
        expect(wal.isCatalogCaughtUp("replica")).toBe(false);
        await wal.markApplied("replica", [dropped!, recreated!]);
        expect(wal.isCatalogCaughtUp("replica")).toBe(true);
      });

      test("record writes merge up to a later database entry they must follow, not past it", async () => {
        const wal = await open();
        const [first, , second] = await appendReady([add(colA, ["a"]), createDatabase("other"), add(colA, ["b"])]);
        const step = await nextStep(wal, "replica", colA, { limit: 10 });
        expect(step.kind === "entries" && seqsOf(step.entries)).toEqual([first!.seq]);
        await wal.markApplied("replica", [first!]);
        expect((await nextStep(wal, "replica", colA, { limit: 10 })).kind).toBe("blocked");
        expect(second!.seq).toBe(3);
      });
    });

    describe("crash recovery of unanswered entries", () => {
      test("entries and positions survive a restart; the next append continues after the head", async () => {
        let wal = await open();
        const entries = await appendReady([add(colA, ["a"]), add(colA, ["b"]), add(colB, ["c"])]);
        await wal.markApplied("primary", entries);
        wal = await reopen();
        expect(wal.headSeq()).toBe(3);
        expect([wal.pendingCount("primary"), wal.pendingCount("replica")]).toEqual([0, 3]);
        expect((await wal.nextPending("replica", colA, 10)).map(shape)).toEqual([
          { seq: 1, partition: colA, op: "add", state: "ready", body: '{"ids":["a"],"embeddings":[[0,0.5]]}', attempts: 0 },
          { seq: 2, partition: colA, op: "add", state: "ready", body: '{"ids":["b"],"embeddings":[[0,0.5]]}', attempts: 0 },
        ]);
        expect(wal.isCaughtUp("replica", colA)).toBe(false);
        expect(await seqOf(wal.append(add(colA, ["d"])))).toBe(4);
      });

      test("entries left unanswered by a crash are replayed everywhere after recovery", async () => {
        let wal = await open();
        const [e1, e2] = await Promise.all([wal.append(add(colA, ["a"])), wal.append(add(colA, ["b"]))]);
        await wal.markReady([e1!], "primary");
        wal = await reopen();
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e1!.seq]);
        expect(wal.isCaughtUp("primary", colA)).toBe(false);
        expect(await wal.recoverUnanswered()).toBe(1);
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e1!.seq, e2!.seq]);
        expect(seqsOf(await wal.nextPending("primary", colA, 10))).toEqual([e1!.seq, e2!.seq]);
        expect(await wal.recoverUnanswered()).toBe(0);
      });

      test("an append acknowledged before the process is killed is in the store", async () => {
        fixture ??= await make();
        const root = join(import.meta.dir, "..", "..");
        // The child acknowledges each append on stdout as soon as it resolves, then dies by
        // SIGKILL with no chance to close anything.
        const script = `
          ${fixture.childOpen(root)}
          const body = new TextEncoder().encode('{"ids":["x"]}');
          const entry = { partition: "p", kind: "records", op: "add", tenant: "t", database: "d", collectionId: "p", name: null, body };
          for (let round = 0; round < 20; round++) {
            const seqs = (await Promise.all(Array.from({ length: 5 }, () => wal.append(entry)))).map((e) => e.seq);
            process.stdout.write(seqs.join("\\n") + "\\n");
          }
          process.kill(process.pid, "SIGKILL");
        `;
        const child = Bun.spawn(["bun", "-e", script], { stdout: "pipe", stderr: "pipe" });
        const [stdout, stderr] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
        expect({ signal: child.signalCode, stderr }).toEqual({ signal: "SIGKILL", stderr: "" });
        const acknowledged = stdout.split("\n").filter(Boolean).map(Number);
        expect(acknowledged).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
        const wal = await open();
        expect(wal.headSeq()).toBe(100);
        expect(await wal.counts()).toEqual({ total: 100, pendingEntries: 100, rejected: 0 });
        expect([wal.pendingCount("primary"), wal.pendingCount("replica")]).toEqual([100, 100]);
      });
    });

    describe("refusals and divergence", () => {
      test("reject removes the entry everywhere and no longer blocks later ones", async () => {
        const wal = await open();
        const [e1, bad] = await Promise.all([wal.append(add(colA, ["a"])), wal.append(add(colA, ["bad"]))]);
        await wal.markReady([e1!], "primary");
        expect(await wal.appliedNowhere(bad!.seq)).toBe(true);
        await wal.reject(bad!);
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e1!.seq]);
        expect([wal.pendingCount("primary"), wal.pendingCount("replica")]).toEqual([1, 1]);
        expect(await wal.counts()).toEqual({ total: 2, pendingEntries: 1, rejected: 1 });
        const [e3] = await appendReady([add(colA, ["c"])]);
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e1!.seq, e3!.seq]);
      });

      test("a refusal is kept per instance until every instance that owes the entry refused it", async () => {
        const wal = await open();
        const [entry] = await appendReady([add(colA, ["a"])]);
        await wal.recordRefusal("primary", entry!, "instance answered 400");
        expect([await wal.appliedNowhere(entry!.seq), await wal.refusedEverywhere(entry!.seq)]).toEqual([true, false]);
        expect(wal.failingCount("primary")).toBe(1);
        await wal.recordRefusal("replica", entry!, "instance answered 400");
        expect(await wal.refusedEverywhere(entry!.seq)).toBe(true);
      });

      test("failures are counted on the owed entry and listed with their last error", async () => {
        const wal = await open();
        const [entry] = await appendReady([add(colA, ["a"])]);
        await wal.recordFailure("replica", entry!, "instance answered 500");
        await wal.recordFailure("replica", entry!, "instance answered 503");
        const [owed] = await wal.nextPending("replica", colA, 10);
        expect({ attempts: owed!.attempts, lastError: owed!.lastError }).toEqual({ attempts: 2, lastError: "instance answered 503" });
        expect(await wal.failedEntries(10)).toEqual([
          { instance: "replica", seq: entry!.seq, partition: colA, attempts: 2, lastError: "instance answered 503", lastAttemptAtMs: expect.any(Number), op: "add" },
        ]);
        expect(wal.lag("replica")).toEqual({ entries: 1, oldestAgeMs: expect.any(Number), firstSeq: entry!.seq, failing: 1, lastError: "instance answered 503" });
        await wal.markApplied("replica", [entry!]);
        expect(wal.failingCount("replica")).toBe(0);
      });

      test("a divergence mark stops owing the refused entry, counts later refusals and survives a restart", async () => {
        let wal = await open();
        const [e1, e2, e3] = await appendReady([add(colA, ["a"]), add(colA, ["b"]), add(colA, ["c"])]);
        await wal.markApplied("primary", [e1!, e2!, e3!]);
        expect(await wal.markDiverged("replica", e1!, "refused")).toEqual({ first: true });
        expect(await wal.markDiverged("replica", e2!, "refused again")).toEqual({ first: false });
        expect([wal.isDiverged("replica", colA), wal.isUnderRepair("replica", colA), wal.isDiverged("primary", colA)]).toEqual([true, false, false]);
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e3!.seq]);
        wal = await reopen();
        expect(wal.divergences()).toEqual([{ instance: "replica", partition: colA, seq: e1!.seq, op: "add", error: "refused", refusedEntries: 2, atMs: expect.any(Number) }]);
        expect(wal.isDiverged("replica", colA)).toBe(true);
        expect(await wal.clearDiverged("replica", colA)).toBe(true);
        expect(await wal.clearDiverged("replica", colA)).toBe(false);
        expect(wal.divergences()).toEqual([]);
      });

      test("a repair mark keeps an existing mark, and a copy made at a position covers what came before", async () => {
        let wal = await open();
        const [e1, e2, e3] = await appendReady([add(colA, ["a"]), add(colA, ["b"]), add(colA, ["c"])]);
        await wal.markUnderRepair("replica", colA, "lost its disk");
        await wal.markUnderRepair("replica", colA, "again");
        expect([wal.isUnderRepair("replica", colA), wal.isDiverged("replica", colA)]).toEqual([true, true]);
        expect(wal.divergences()).toEqual([{ instance: "replica", partition: colA, seq: 3, op: "repair", error: "lost its disk", refusedEntries: 0, atMs: expect.any(Number) }]);
        expect(await wal.markCopiedUpTo("replica", colA, e2!.seq)).toBe(2);
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([e3!.seq]);
        expect(wal.pendingCount("replica")).toBe(1);
        wal = await reopen();
        expect(wal.isUnderRepair("replica", colA)).toBe(true);
        expect(wal.pendingCount("replica")).toBe(1);
        expect(e1!.seq).toBe(1);
      });
    });

    describe("skip", () => {
      test("an entry skipped by an operator for its last instance becomes removable", async () => {
        const wal = await open();
        const [entry] = await appendReady([add(colA, ["a"])]);
        await wal.markApplied("primary", [entry!]);
        expect(await wal.skip("replica", entry!.seq)).toBe(true);
        expect(await wal.skip("replica", entry!.seq)).toBe(false);
        expect(wal.pendingCount("replica")).toBe(0);
        expect(wal.isCaughtUp("replica", colA)).toBe(true);
        expect(await wal.cleanup(0)).toEqual({ deletedEntries: 1 });
      });
    });

    describe("retention", () => {
      test("removes old entries applied everywhere and never one still owed or unanswered", async () => {
        const wal = await open();
        const [done, halfDone, untouched, unanswered, rejected] = await Promise.all(
          [add(colA, ["a"]), add(colA, ["b"]), add(colB, ["c"]), add(colB, ["d"]), add(colB, ["e"])].map((e) => wal.append(e)),
        );
        await wal.markReady([done!, halfDone!, untouched!], "primary");
        await wal.markApplied("primary", [done!, halfDone!]);
        await wal.markApplied("replica", [done!]);
        await wal.reject(rejected!);
        expect(await wal.cleanup(60 * 60 * 1000)).toEqual({ deletedEntries: 0 });
        expect(await wal.cleanup(0)).toEqual({ deletedEntries: 2 });
        expect(await wal.counts()).toEqual({ total: 3, pendingEntries: 3, rejected: 0 });
        expect(seqsOf(await wal.nextPending("replica", colA, 10))).toEqual([halfDone!.seq]);
        expect(seqsOf(await wal.nextPending("replica", colB, 10))).toEqual([untouched!.seq]);
        expect((await wal.partitionState(colB)).unanswered).toBe(1);
        await wal.markApplied("replica", [halfDone!]);
        expect(await wal.cleanup(0)).toEqual({ deletedEntries: 1 });
        expect(unanswered!.seq).toBe(4);
        expect(wal.headSeq()).toBe(rejected!.seq);
      });

      test("the head position never goes back when retention removes the newest entries", async () => {
        let wal = await open();
        const entries = await appendReady([add(colA, ["a"]), add(colA, ["b"])]);
        await wal.markApplied("primary", entries);
        await wal.markApplied("replica", entries);
        expect(await wal.cleanup(0)).toEqual({ deletedEntries: 2 });
        expect(await wal.counts()).toEqual({ total: 0, pendingEntries: 0, rejected: 0 });
        expect(await wal.partitionState(colA)).toEqual({ headSeq: 0, unanswered: 0 });
        expect(wal.headSeq()).toBe(2);
        wal = await reopen();
        expect(wal.headSeq()).toBe(2);
        expect(await seqOf(wal.append(add(colA, ["c"])))).toBe(3);
      });
    });

    describe("the disk bound", () => {
      test("the log's size grows with appends and diskFull tells listeners of each crossing", async () => {
        const wal = await open();
        await wal.sampleDisk();
        const empty = wal.diskBytes();
        // Random bytes: Postgres compresses what it can, so a body of one repeated byte would hardly count.
        const big = { ...add(colA, ["a"]), body: crypto.getRandomValues(new Uint8Array(512 * 1024)) };
        await Promise.all(Array.from({ length: 4 }, () => wal.append({ ...big, body: crypto.getRandomValues(new Uint8Array(512 * 1024)) })));
        await wal.sampleDisk();
        expect(wal.diskBytes()).toBeGreaterThanOrEqual(empty + 2 * 1024 * 1024);
        expect(wal.diskFileBytes()).toBeGreaterThanOrEqual(wal.diskBytes() / 2);
        const crossings: boolean[] = [];
        wal.onDiskFull(({ full }) => crossings.push(full));
        expect(wal.diskFull(0)).toBe(false);
        expect(wal.diskFull(wal.diskBytes() + 1024 * 1024)).toBe(false);
        expect(wal.diskFull(2 * 1024 * 1024)).toBe(true);
        expect(wal.diskFull(2 * 1024 * 1024)).toBe(true);
        expect(wal.diskFull(1024 * 1024 * 1024)).toBe(false);
        expect(crossings).toEqual([true, false]);
      });
    });

    describe("reset", () => {
      test("clear wipes entries, positions and marks; positions keep growing", async () => {
        let wal = await open();
        const [e1] = await appendReady([add(colA, ["a"]), add(colB, ["b"])]);
        await wal.markDiverged("replica", e1!, "refused");
        await wal.clear();
        expect([wal.pendingCount("primary"), wal.pendingCount("replica"), wal.divergences().length]).toEqual([0, 0, 0]);
        expect(await wal.counts()).toEqual({ total: 0, pendingEntries: 0, rejected: 0 });
        expect(await wal.pendingPartitions("replica", 10)).toEqual([]);
        wal = await reopen();
        expect([wal.pendingCount("replica"), wal.divergences().length]).toEqual([0, 0]);
        expect(await seqOf(wal.append(add(colA, ["c"])))).toBe(3);
      });
    });
  });
}
