/**
 * The durable, ordered write-ahead log. Every write is appended here before any instance
 * sees it; each instance then owes every entry a row in wal_pending until it has applied it.
 *
 * Ordering rules (see README "Guarantees"):
 * - entries of one partition (one logical collection, or `meta` for tenants and databases)
 *   are applied by every instance in seq order;
 * - a collection entry is applied only after every earlier `meta` entry (its database exists);
 * - a `meta` entry is applied only after every earlier entry (deleting a database comes last).
 */
import { and, asc, count, eq, gt, inArray, lt, lte, min, ne, sql } from "drizzle-orm";
import { statSync } from "node:fs";
import type { LocalStore } from "../db";
import { walBodies, walDiverged, walEntries, walPending } from "../db/sqlite-schema";
import { isStorageFullError, StorageFullError, type StorageReserve } from "./storage";

export type EntryKind = "records" | "collection" | "meta";

export type EntryOp =
  | "add"
  | "upsert"
  | "update"
  | "delete"
  | "create_collection"
  | "modify_collection"
  | "delete_collection"
  | "create_tenant"
  | "update_tenant"
  | "create_database"
  | "delete_database";

export const META_PARTITION = "meta";

export interface NewEntry {
  partition: string;
  kind: EntryKind;
  op: EntryOp;
  tenant: string;
  database: string;
  collectionId: string | null;
  name: string | null;
  body: Uint8Array | null;
}

export interface Entry extends NewEntry {
  seq: number;
  createdAtMs: number;
  state: "new" | "ready" | "rejected";
  appliedBy: string | null;
  bodyBytes: number;
}

export interface PendingEntry extends Entry {
  attempts: number;
  lastError: string | null;
}

/** What disk listeners hear: full or not, and whether the file system (not WAL_MAX_DISK_MB) is the cause. */
export interface DiskState {
  full: boolean;
  bytes: number;
  bytesMax: number;
  filesystem: boolean;
}

export interface Limits {
  /** Appends waiting for their group commit; more are refused so memory stays bounded. */
  appendQueueMax: number;
}

/** A collection an instance refused an entry of, while another instance applied it. */
export interface Divergence {
  instance: string;
  partition: string;
  seq: number;
  op: string;
  error: string;
  refusedEntries: number;
  atMs: number;
}

/**
 * A change of entries' state that could not be recorded yet (the file system was full, or
 * SQLite failed otherwise). Its entries stay `new` in the table, which holds back replay of
 * their partition (nothing may overtake them), until `resolveOnce` records it.
 */
interface UnresolvedChange {
  seqs: number[];
  partition: string;
  /** What is to be recorded, for /wal/status. */
  action: string;
  error: string;
  run: () => void;
}

/** An unresolved state change as /wal/status shows it. */
export interface UnresolvedView {
  positions: number[];
  partition: string;
  action: string;
  error: string;
}

interface QueuedAppend {
  entry: NewEntry;
  resolve: (entry: Entry) => void;
  reject: (error: unknown) => void;
}

const p = sql.placeholder;

/**
 * The log's hot-path statements, built and prepared once: building a Drizzle query and
 * preparing its SQL on every call cost more than running it (a profile of one-record adds
 * showed two thirds of chroma-lb's CPU time there).
 */
function prepareStatements(db: LocalStore["db"]) {
  const pendingOf = and(eq(walPending.instance, p("instance")), eq(walPending.seq, p("seq")));
  return {
    insertEntry: db
      .insert(walEntries)
      .values({
        createdAtMs: p("createdAtMs"),
        partition: p("partition"),
        kind: p("kind"),
        op: p("op"),
        tenant: p("tenant"),
        database: p("database"),
        collectionId: p("collectionId"),
        name: p("name"),
        bodyBytes: p("bodyBytes"),
        state: "new",
      })
      .returning({ seq: walEntries.seq })
      .prepare(),
    insertBody: db.insert(walBodies).values({ seq: p("seq"), body: p("body") }).prepare(),
    insertPending: db.insert(walPending).values({ instance: p("instance"), seq: p("seq"), partition: p("partition"), kind: p("kind") }).prepare(),
    setState: db.update(walEntries).set({ state: sql`${p("state")}`, appliedBy: sql`${p("appliedBy")}` }).where(eq(walEntries.seq, p("seq"))).prepare(),
    partitionOf: db.select({ partition: walEntries.partition }).from(walEntries).where(eq(walEntries.seq, p("seq"))).prepare(),
    deletePending: db.delete(walPending).where(pendingOf).returning({ seq: walPending.seq }).prepare(),
    deletePendingOfEntry: db.delete(walPending).where(eq(walPending.seq, p("seq"))).returning({ instance: walPending.instance }).prepare(),
    deleteBody: db.delete(walBodies).where(eq(walBodies.seq, p("seq"))).prepare(),
    recordFailure: db
      .update(walPending)
      .set({ attempts: sql`${walPending.attempts} + 1`, lastError: sql`${p("error")}`, lastAttemptAtMs: sql`${p("atMs")}` })
      .where(pendingOf)
      .prepare(),
    failingCount: db
      .select({ n: count() })
      .from(walPending)
      .where(and(eq(walPending.instance, p("instance")), gt(walPending.attempts, 0)))
      .prepare(),
    owedBefore: db
      .select({ seq: walPending.seq })
      .from(walPending)
      .where(and(eq(walPending.instance, p("instance")), eq(walPending.partition, p("partition")), lt(walPending.seq, p("beforeSeq"))))
      .orderBy(asc(walPending.seq))
      .limit(1)
      .prepare(),
    pendingRowsOfEntry: db.select({ n: count() }).from(walPending).where(eq(walPending.seq, p("seq"))).prepare(),
    heads: db
      .select({ seq: walPending.seq, state: walEntries.state, bodyBytes: walEntries.bodyBytes })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .where(and(eq(walPending.instance, p("instance")), eq(walPending.partition, p("partition")), lte(walPending.seq, p("uptoSeq"))))
      .orderBy(asc(walPending.seq))
      .limit(p("limit"))
      .prepare(),
    pendingWithBodies: db
      .select({ entry: walEntries, body: walBodies.body, attempts: walPending.attempts, lastError: walPending.lastError })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .leftJoin(walBodies, eq(walBodies.seq, walPending.seq))
      .where(and(eq(walPending.instance, p("instance")), eq(walPending.partition, p("partition")), lte(walPending.seq, p("lastSeq"))))
      .orderBy(asc(walPending.seq))
      .prepare(),
    owedReady: db
      .select({ seq: walPending.seq })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .where(
        and(
          eq(walPending.instance, p("instance")),
          eq(walPending.partition, p("partition")),
          lte(walPending.seq, p("uptoSeq")),
          eq(walEntries.state, "ready"),
        ),
      )
      .limit(1)
      .prepare(),
    catalogOwed: db
      .select({ seq: walPending.seq })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .where(and(eq(walPending.instance, p("instance")), ne(walPending.kind, "records"), eq(walEntries.state, "ready")))
      .limit(1)
      .prepare(),
  };
}

/** `firstPendingBefore` for one set of kinds, with or without a partition left out. */
function prepareFirstPending(db: LocalStore["db"], kinds: EntryKind[] | undefined, withExcept: boolean) {
  const conditions = [eq(walPending.instance, p("instance")), lt(walPending.seq, p("beforeSeq"))];
  if (kinds) conditions.push(inArray(walPending.kind, kinds));
  if (withExcept) conditions.push(ne(walPending.partition, p("exceptPartition")));
  return db
    .select({ seq: walPending.seq, partition: walPending.partition })
    .from(walPending)
    .where(and(...conditions))
    .orderBy(asc(walPending.seq))
    .limit(1)
    .prepare();
}

export class WriteAheadLog {
  private queue: QueuedAppend[] = [];
  /** State changes not recorded yet, oldest first (see settle). */
  private readonly unresolved: UnresolvedChange[] = [];
  /** The file system under the log was found full (see noteStorageFull and recoverStorageOnce). */
  private storageFull = false;
  private lastRecoveryAtMs = 0;
  /** The bound the disk check was last asked about, so a full file system is reported at once with it. */
  private lastBytesMax = 0;
  private flushScheduled = false;
  /** Pending rows per instance, kept in memory so routing never counts rows on the hot path. */
  private readonly pendingByInstance = new Map<string, number>();
  /** Group-commit figures: transactions and entries, for /wal/status. */
  readonly commitStats = { transactions: 0, entries: 0, largestGroup: 0 };
  private listeners: Array<(partition: string) => void> = [];
  /** `instance\0partition` of every diverged collection, so reads check it without a query. */
  private readonly divergedKeys = new Set<string>();
  /** The subset of divergedKeys whose copy is lost or being rebuilt: it serves nothing until repaired. */
  private readonly repairKeys = new Set<string>();

  private readonly statements: ReturnType<typeof prepareStatements>;
  private readonly syncFull: { run(): unknown };
  private readonly syncNormal: { run(): unknown };
  private readonly firstPendingStatements = new Map<string, ReturnType<typeof prepareFirstPending>>();

  constructor(
    private readonly store: LocalStore,
    private instances: string[],
    private readonly limits: Limits = { appendQueueMax: 10_000 },
    /** The spare file given up when the file system fills (see storage.ts); null = none. */
    private readonly reserve: StorageReserve | null = null,
  ) {
    // A disk already full at start (a previous run filled it) is found here, not by a
    // failed write: the spare file cannot be written back, so new writes are refused.
    if (reserve && !reserve.restore()) this.storageFull = true;
    this.statements = prepareStatements(store.db);
    // Run as text each time, not prepared: SQLite applies this pragma when it compiles the
    // statement, so a prepared one would take effect once, at prepare time.
    this.syncFull = { run: () => store.sqlite.run("PRAGMA synchronous = FULL") };
    this.syncNormal = { run: () => store.sqlite.run("PRAGMA synchronous = NORMAL") };
    // Only appends wait for the disk (see flush); every other change is redone by replay
    // if a machine crash loses it.
    this.syncNormal.run();
    for (const name of instances) this.pendingByInstance.set(name, 0);
    const rows = this.store.db
      .select({ instance: walPending.instance, n: count() })
      .from(walPending)
      .groupBy(walPending.instance)
      .all();
    for (const row of rows) this.pendingByInstance.set(row.instance, row.n);
    for (const row of this.store.db.select().from(walDiverged).all()) {
      this.divergedKeys.add(divergedKey(row.instance, row.partition));
      if (row.op === "repair") this.repairKeys.add(divergedKey(row.instance, row.partition));
    }
  }

  /** Called after each commit with the partitions that gained entries (replay starts at once). */
  onAppend(listener: (partition: string) => void) {
    this.listeners.push(listener);
  }

  /**
   * Entries left in state `new` by a crash were never answered; the client may still have
   * waited for them, so they are kept and replayed everywhere like any other entry.
   */
  recoverUnanswered(): number {
    let changes = 0;
    const run = () => {
      changes = this.store.sqlite.run(`UPDATE wal_entries SET state = 'ready' WHERE state = 'new'`).changes;
    };
    this.settle({ seqs: [], partition: "*", action: "ready (left unanswered by a crash)", run });
    return changes;
  }

  /**
   * Appends one entry, durable when the promise resolves with it. Appends arriving together
   * share one transaction (group commit), so durability costs one fsync per group, not per write.
   */
  append(entry: NewEntry): Promise<Entry> {
    if (this.queue.length >= this.limits.appendQueueMax) {
      return Promise.reject(new Error("write-ahead log append queue is full"));
    }
    // The room left (the released spare file) is kept for recording entries already
    // appended and for cleanup; a new entry would take it.
    if (this.storageFull) return Promise.reject(new StorageFullError());
    return new Promise<Entry>((resolve, reject) => {
      this.queue.push({ entry, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush() {
    this.flushScheduled = false;
    const group = this.queue;
    this.queue = [];
    if (group.length === 0) return;
    const now = Date.now();
    let seqs: number[];
    try {
      const st = this.statements;
      // The one commit that must reach the disk before anything is answered. In WAL mode
      // its fsync also makes every earlier commit durable (the log file is written in order).
      this.syncFull.run();
      seqs = this.store.db.transaction(() => {
        const out: number[] = [];
        for (const { entry } of group) {
          const row = st.insertEntry.get({
            createdAtMs: now,
            partition: entry.partition,
            kind: entry.kind,
            op: entry.op,
            tenant: entry.tenant,
            database: entry.database,
            collectionId: entry.collectionId,
            name: entry.name,
            bodyBytes: entry.body?.byteLength ?? 0,
          })!;
          if (entry.body) st.insertBody.run({ seq: row.seq, body: Buffer.from(entry.body.buffer, entry.body.byteOffset, entry.body.byteLength) });
          for (const instance of this.instances) st.insertPending.run({ instance, seq: row.seq, partition: entry.partition, kind: entry.kind });
          out.push(row.seq);
        }
        return out;
      });
    } catch (error) {
      // Nothing of the group was committed (the transaction rolled back). A full file
      // system refuses the group as a whole (507), and the spare file is given up at once
      // for the state changes of entries appended before.
      this.rollBackLeftover();
      const full = isStorageFullError(error);
      if (full) this.noteStorageFull();
      for (const item of group) item.reject(full ? new StorageFullError() : error);
      return;
    } finally {
      this.syncNormal.run();
    }
    for (const name of this.instances) this.pendingByInstance.set(name, (this.pendingByInstance.get(name) ?? 0) + group.length);
    this.commitStats.transactions += 1;
    this.commitStats.entries += group.length;
    this.commitStats.largestGroup = Math.max(this.commitStats.largestGroup, group.length);
    group.forEach((item, i) =>
      item.resolve({ ...item.entry, seq: seqs[i]!, createdAtMs: now, state: "new", appliedBy: null, bodyBytes: item.entry.body?.byteLength ?? 0 }),
    );
  }

  /** The write target answered: the entry may now be replayed to every other instance. */
  markReady(seq: number, appliedBy: string | null, partition = this.partitionOf(seq)): boolean {
    return this.settle({
      seqs: [seq],
      partition,
      action: "ready",
      run: () => {
        this.statements.setState.run({ seq, state: "ready", appliedBy });
        for (const listener of this.listeners) listener(partition);
      },
    });
  }

  /**
   * The outcome of these entries is unknown (the write path failed after appending them):
   * any still `new` becomes ready for every instance, as after a crash (see
   * recoverUnanswered), so it neither blocks its partition nor is lost.
   */
  keepUnanswered(partition: string, seqs: number[]): boolean {
    return this.settle({
      seqs,
      partition,
      action: "ready (outcome unknown)",
      run: () => {
        this.store.db.transaction(() => {
          for (const seq of seqs) this.store.sqlite.run(`UPDATE wal_entries SET state = 'ready', applied_by = NULL WHERE seq = ? AND state = 'new'`, [seq]);
        });
        for (const listener of this.listeners) listener(partition);
      },
    });
  }

  /**
   * The write target applied these entries of one partition: in one transaction, they are
   * applied there and ready for every other instance.
   */
  completeOnTarget(instance: string, partition: string, seqs: number[]): boolean {
    const st = this.statements;
    return this.settle({
      seqs,
      partition,
      action: `applied by ${instance}`,
      run: () => {
        const removed = this.store.db.transaction(() => {
          let n = 0;
          for (const seq of seqs) {
            st.setState.run({ seq, state: "ready", appliedBy: instance });
            n += st.deletePending.all({ instance, seq }).length;
          }
          return n;
        });
        // After the commit: a failed commit changes nothing, and the change is tried again.
        this.pendingByInstance.set(instance, Math.max(0, (this.pendingByInstance.get(instance) ?? 0) - removed));
        for (const listener of this.listeners) listener(partition);
      },
    });
  }

  /**
   * No instance may apply this entry (the write target refused it as bad input). Its body
   * is dropped at once: nothing will ever read it, and refused bodies can be large.
   */
  reject(seq: number, partition = this.partitionOf(seq)): boolean {
    const st = this.statements;
    return this.settle({
      seqs: [seq],
      partition,
      action: "rejected",
      run: () => {
        const removed = this.store.db.transaction(() => {
          st.setState.run({ seq, state: "rejected", appliedBy: null });
          st.deleteBody.run({ seq });
          return st.deletePendingOfEntry.all({ seq });
        });
        for (const row of removed) this.pendingByInstance.set(row.instance, (this.pendingByInstance.get(row.instance) ?? 1) - 1);
      },
    });
  }

  private partitionOf(seq: number): string {
    return this.statements.partitionOf.get({ seq })?.partition ?? "";
  }

  /**
   * Runs one change of the log's tables. A full file system is noticed here, in one place:
   * the spare file is given up (new writes are refused from then on, see `append`) and the
   * change is tried once more in the room it leaves. Other errors are thrown as they are.
   */
  private write<T>(change: () => T): T {
    try {
      return change();
    } catch (error) {
      this.rollBackLeftover();
      if (!isStorageFullError(error)) throw error;
      if (!this.noteStorageFull()) throw error;
      return change();
    }
  }

  /**
   * SQLite may keep a transaction open after a COMMIT that failed for lack of room; the
   * next statement would then join it. Rolled back here so every change starts clean.
   */
  private rollBackLeftover() {
    if (!this.store.sqlite.inTransaction) return;
    try {
      this.store.sqlite.run("ROLLBACK");
    } catch {
      // Already rolled back by SQLite.
    }
  }

  /**
   * Records a state change of entries appended before. It must never be lost: an entry left
   * `new` blocks its partition's replay, and an entry that let later ones pass would reach
   * instances out of order. So a change that fails is kept, in order, and `resolveOnce`
   * tries it again (the schedule, the disk check and the write path call it); until then
   * /wal/status lists it and the partition takes no new write. False when it was kept.
   */
  private settle(change: Omit<UnresolvedChange, "error">): boolean {
    // Behind an earlier unresolved change of the same partition, to keep their order.
    if (!this.unresolved.some((u) => u.partition === change.partition || u.partition === "*")) {
      try {
        this.write(change.run);
        return true;
      } catch (error) {
        this.unresolved.push({ ...change, error: String((error as Error)?.message ?? error).slice(0, 500) });
        return false;
      }
    }
    this.unresolved.push({ ...change, error: "waiting for an earlier change of the partition" });
    return false;
  }

  /** Tries the unresolved state changes again, oldest first; answers how many remain. */
  resolveOnce(): number {
    while (this.unresolved.length > 0) {
      const change = this.unresolved[0]!;
      try {
        this.write(change.run);
      } catch (error) {
        change.error = String((error as Error)?.message ?? error).slice(0, 500);
        return this.unresolved.length;
      }
      this.unresolved.shift();
    }
    return 0;
  }

  /** Whether a state change of the partition is still to be recorded (it takes no new write until then). */
  hasUnresolved(partition: string): boolean {
    return this.unresolved.some((u) => u.partition === partition || u.partition === "*");
  }

  /** The state changes still to be recorded, oldest first (for /wal/status). */
  unresolvedChanges(limit = 100): UnresolvedView[] {
    return this.unresolved.slice(0, limit).map((u) => ({ positions: u.seqs, partition: u.partition, action: u.action, error: u.error }));
  }

  /**
   * True when the instance still owes an entry of the partition before `beforeSeq`, in any
   * state. The write path checks it after catching an instance up: an entry that is not
   * ready yet is skipped by replay, and a later write must not overtake it.
   */
  owesBefore(instance: string, partition: string, beforeSeq: number): { seq: number } | null {
    return this.statements.owedBefore.get({ instance, partition, beforeSeq }) ?? null;
  }

  /** The file system under the log was found full; gives up the spare file. True when it was there to give. */
  private noteStorageFull(): boolean {
    this.storageFull = true;
    this.lastRecoveryAtMs = Date.now();
    const released = this.reserve?.release() ?? false;
    this.diskFull(this.lastBytesMax);
    return released;
  }

  /**
   * One step out of "file system full": records what is unresolved, then writes the spare
   * file back; new writes are taken again only once both succeeded.
   */
  recoverStorageOnce(): boolean {
    if (!this.storageFull) return true;
    this.lastRecoveryAtMs = Date.now();
    if (this.resolveOnce() > 0) return false;
    // Gives the -wal file's room back first: it holds every change since the last
    // checkpoint, often many times the pages it adds to the database file.
    this.checkpoint();
    if (this.reserve && !this.reserve.restore()) return false;
    this.storageFull = false;
    return true;
  }

  /** Whether the file system under the log was found full and has not given its room back yet. */
  get storageIsFull(): boolean {
    return this.storageFull;
  }

  /** The instance has applied these entries. */
  markApplied(instance: string, seqs: number[]) {
    if (seqs.length === 0) return;
    const removed = this.write(() => this.store.db.transaction(() => seqs.reduce((n, seq) => n + this.statements.deletePending.all({ instance, seq }).length, 0)));
    this.pendingByInstance.set(instance, Math.max(0, (this.pendingByInstance.get(instance) ?? 0) - removed));
  }

  /** A replay attempt failed; the error stays visible on the entry until it succeeds. */
  recordFailure(instance: string, seq: number, error: string) {
    this.write(() => this.statements.recordFailure.run({ instance, seq, error: error.slice(0, 2000), atMs: Date.now() }));
  }

  pendingCount(instance: string): number {
    return this.pendingByInstance.get(instance) ?? 0;
  }

  /** Entries the instance owes whose replay failed at least once (each is retried with backoff). */
  failingCount(instance: string): number {
    return this.statements.failingCount.get({ instance })?.n ?? 0;
  }

  /**
   * The instance refused an entry that another instance applied: it no longer owes the
   * entry (it will never take it), and its copy of the partition is marked diverged until
   * a repair clears the mark. Later entries of the partition still replay.
   */
  markDiverged(instance: string, entry: Pick<Entry, "seq" | "partition" | "op">, error: string): { first: boolean } {
    const atMs = Date.now();
    const first = this.store.db.transaction((tx) => {
      const removed = tx
        .delete(walPending)
        .where(and(eq(walPending.instance, instance), eq(walPending.seq, entry.seq)))
        .returning({ seq: walPending.seq })
        .all();
      this.pendingByInstance.set(instance, Math.max(0, (this.pendingByInstance.get(instance) ?? 0) - removed.length));
      const existing = tx
        .select({ n: walDiverged.refusedEntries })
        .from(walDiverged)
        .where(and(eq(walDiverged.instance, instance), eq(walDiverged.partition, entry.partition)))
        .get();
      if (existing) {
        tx.update(walDiverged)
          .set({ refusedEntries: existing.n + 1 })
          .where(and(eq(walDiverged.instance, instance), eq(walDiverged.partition, entry.partition)))
          .run();
        return false;
      }
      tx.insert(walDiverged)
        .values({ instance, partition: entry.partition, seq: entry.seq, op: entry.op, error: error.slice(0, 2000), atMs })
        .run();
      return true;
    });
    this.divergedKeys.add(divergedKey(instance, entry.partition));
    return { first };
  }

  /**
   * Marks the instance's copy of the partition as under repair (reads and writes avoid it)
   * without touching what it owes; an existing mark is kept as it is.
   */
  markUnderRepair(instance: string, partition: string, reason: string) {
    this.store.db
      .insert(walDiverged)
      .values({ instance, partition, seq: this.headSeq(), op: "repair", error: reason.slice(0, 2000), refusedEntries: 0, atMs: Date.now() })
      .onConflictDoNothing()
      .run();
    this.divergedKeys.add(divergedKey(instance, partition));
    this.repairKeys.add(divergedKey(instance, partition));
  }

  /** Whether the instance's copy of the partition is lost or being rebuilt (see markUnderRepair). */
  isUnderRepair(instance: string, partition: string): boolean {
    return this.repairKeys.size > 0 && this.repairKeys.has(divergedKey(instance, partition));
  }

  /**
   * A copy of the partition made at `uptoSeq` replaces what the instance held: it no longer
   * owes the entries up to there (the copy has them). Later entries are still owed.
   */
  markCopiedUpTo(instance: string, partition: string, uptoSeq: number): number {
    const removed = this.store.db
      .delete(walPending)
      .where(and(eq(walPending.instance, instance), eq(walPending.partition, partition), lte(walPending.seq, uptoSeq)))
      .returning({ seq: walPending.seq })
      .all();
    this.pendingByInstance.set(instance, Math.max(0, (this.pendingByInstance.get(instance) ?? 0) - removed.length));
    return removed.length;
  }

  /** The newest position of a partition and how many of its entries are still unanswered. */
  partitionState(partition: string): { headSeq: number; unanswered: number } {
    const row = this.store.sqlite
      .query(`SELECT coalesce(max(seq), 0) AS head, coalesce(sum(state = 'new'), 0) AS unanswered FROM wal_entries WHERE partition = ?`)
      .get(partition) as { head: number; unanswered: number };
    return { headSeq: row.head, unanswered: row.unanswered };
  }

  /** Whether the instance's copy of the partition is marked diverged. */
  isDiverged(instance: string, partition: string): boolean {
    return this.divergedKeys.size > 0 && this.divergedKeys.has(divergedKey(instance, partition));
  }

  /** Every diverged (instance, partition), oldest first. */
  divergences(): Divergence[] {
    return this.store.db.select().from(walDiverged).orderBy(asc(walDiverged.atMs)).all();
  }

  /** A repair made the instance's copy whole again (or an operator vouches for it). */
  clearDiverged(instance: string, partition: string): boolean {
    const removed = this.store.db
      .delete(walDiverged)
      .where(and(eq(walDiverged.instance, instance), eq(walDiverged.partition, partition)))
      .returning({ seq: walDiverged.seq })
      .all();
    this.divergedKeys.delete(divergedKey(instance, partition));
    this.repairKeys.delete(divergedKey(instance, partition));
    return removed.length > 0;
  }

  /** The instance refused an entry no instance has applied (see refusedEverywhere). */
  recordRefusal(instance: string, seq: number, error: string) {
    this.write(() => this.statements.recordFailure.run({ instance, seq, error: `${refusedPrefix}${error}`.slice(0, 2000), atMs: Date.now() }));
  }

  /** True when every instance that owes the entry has refused it. */
  refusedEverywhere(seq: number): boolean {
    const row = this.store.sqlite
      .query(`SELECT count(*) AS owed, coalesce(sum(last_error LIKE '${refusedPrefix}%'), 0) AS refused FROM wal_pending WHERE seq = ?`)
      .get(seq) as { owed: number; refused: number };
    return row.owed > 0 && row.refused === row.owed;
  }

  /** True when no other instance has applied the entry yet, so rejecting it changes nothing. */
  appliedNowhere(seq: number): boolean {
    return (this.statements.pendingRowsOfEntry.get({ seq })?.n ?? 0) >= this.instances.length;
  }

  /**
   * The next entries of one partition that the instance still owes, in order (ready ones
   * only). Bodies are read only for the leading entries that fit in `bytesMax` (at least
   * one), so a long backlog never sits in memory at once.
   */
  nextPending(
    instance: string,
    partition: string,
    limit: number,
    uptoSeq = Number.MAX_SAFE_INTEGER,
    bytesMax = Number.MAX_SAFE_INTEGER,
  ): PendingEntry[] {
    const heads = this.statements.heads.all({ instance, partition, uptoSeq, limit });
    let last = -1;
    let bytes = 0;
    for (const head of heads) {
      // An entry still being applied by the write target blocks everything after it.
      if (head.state !== "ready") break;
      if (last !== -1 && bytes + head.bodyBytes > bytesMax) break;
      bytes += head.bodyBytes;
      last = head.seq;
    }
    if (last === -1) return [];
    const rows = this.statements.pendingWithBodies.all({ instance, partition, lastSeq: last });
    return rows.map((row) => toEntry(row.entry, row.body, row.attempts, row.lastError));
  }

  /** The lowest pending seq of the instance among the given kinds, before `beforeSeq`, outside `exceptPartition`. */
  firstPendingBefore(
    instance: string,
    beforeSeq: number,
    kinds?: EntryKind[],
    exceptPartition?: string,
  ): { seq: number; partition: string } | null {
    const key = `${kinds?.join(",") ?? "*"}|${exceptPartition !== undefined}`;
    let statement = this.firstPendingStatements.get(key);
    if (!statement) {
      statement = prepareFirstPending(this.store.db, kinds, exceptPartition !== undefined);
      this.firstPendingStatements.set(key, statement);
    }
    return statement.get({ instance, beforeSeq, exceptPartition: exceptPartition ?? "" }) ?? null;
  }

  /** Partitions in which the instance owes entries, oldest first. */
  pendingPartitions(instance: string, limit: number): Array<{ partition: string; firstSeq: number }> {
    return this.store.db
      .select({ partition: walPending.partition, firstSeq: min(walPending.seq) })
      .from(walPending)
      .where(eq(walPending.instance, instance))
      .groupBy(walPending.partition)
      .orderBy(asc(min(walPending.seq)))
      .limit(limit)
      .all()
      .map((row) => ({ partition: row.partition, firstSeq: row.firstSeq ?? 0 }));
  }

  /**
   * True when the instance has applied every acknowledged entry of the partition up to
   * `uptoSeq`; entries still being applied by the write target were not acknowledged yet.
   */
  isCaughtUp(instance: string, partition: string, uptoSeq = Number.MAX_SAFE_INTEGER): boolean {
    return this.statements.owedReady.get({ instance, partition, uptoSeq }) === undefined;
  }

  /** True when the instance owes no acknowledged collection or meta entry (lists and counts are current). */
  isCatalogCaughtUp(instance: string): boolean {
    return this.statements.catalogOwed.get({ instance }) === undefined;
  }

  /**
   * The last position handed out. Read from sqlite_sequence (seq is AUTOINCREMENT), not
   * max(seq): cleanup removes the newest entries too once every instance applied them, and
   * the head must not go back then.
   */
  headSeq(): number {
    const row = this.store.sqlite.query(`SELECT seq FROM sqlite_sequence WHERE name = 'wal_entries'`).get() as { seq: number } | null;
    return row?.seq ?? 0;
  }

  /** Lag of one instance: entries owed, and the age of the oldest one. */
  lag(instance: string): { entries: number; oldestAgeMs: number; firstSeq: number | null; failing: number; lastError: string | null } {
    const oldest = this.store.db
      .select({ seq: walEntries.seq, createdAtMs: walEntries.createdAtMs })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .where(eq(walPending.instance, instance))
      .orderBy(asc(walPending.seq))
      .limit(1)
      .get();
    const failing = this.store.db
      .select({ n: count(), lastError: sql<string | null>`max(${walPending.lastError})` })
      .from(walPending)
      .where(and(eq(walPending.instance, instance), gt(walPending.attempts, 0)))
      .get();
    return {
      entries: this.pendingCount(instance),
      oldestAgeMs: oldest ? Date.now() - oldest.createdAtMs : 0,
      firstSeq: oldest?.seq ?? null,
      failing: failing?.n ?? 0,
      lastError: failing?.lastError ?? null,
    };
  }

  /** Entries whose replay failed at least once, with their errors. */
  failedEntries(limit: number) {
    return this.store.db
      .select({
        instance: walPending.instance,
        seq: walPending.seq,
        partition: walPending.partition,
        attempts: walPending.attempts,
        lastError: walPending.lastError,
        lastAttemptAtMs: walPending.lastAttemptAtMs,
        op: walEntries.op,
      })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .where(gt(walPending.attempts, 0))
      .orderBy(asc(walPending.seq))
      .limit(limit)
      .all();
  }

  /** An operator gives up on one entry for one instance; the skip is logged by the caller. */
  skip(instance: string, seq: number): boolean {
    const removed = this.store.db
      .delete(walPending)
      .where(and(eq(walPending.instance, instance), eq(walPending.seq, seq)))
      .returning({ seq: walPending.seq })
      .all();
    if (removed.length) this.pendingByInstance.set(instance, Math.max(0, (this.pendingByInstance.get(instance) ?? 0) - 1));
    return removed.length > 0;
  }

  counts(): { total: number; pendingEntries: number; rejected: number } {
    const total = this.store.db.select({ n: count() }).from(walEntries).get()?.n ?? 0;
    const rejected = this.store.db.select({ n: count() }).from(walEntries).where(eq(walEntries.state, "rejected")).get()?.n ?? 0;
    const pendingEntries =
      this.store.db.select({ n: sql<number>`count(distinct ${walPending.seq})` }).from(walPending).get()?.n ?? 0;
    return { total, pendingEntries, rejected };
  }

  /**
   * Removes entries older than `maxAgeMs` that every instance has applied (or that were
   * rejected). An entry any instance still owes is never removed.
   */
  cleanup(maxAgeMs: number): { deletedEntries: number } {
    const cutoff = Date.now() - maxAgeMs;
    const sqlite = this.store.sqlite;
    const chunk = sqlite.query(
      `DELETE FROM wal_entries WHERE seq IN (
         SELECT seq FROM wal_entries WHERE created_at_ms <= ? AND state != 'new'
           AND NOT EXISTS (SELECT 1 FROM wal_pending p WHERE p.seq = wal_entries.seq)
         ORDER BY seq LIMIT ?)
       RETURNING seq`,
    );
    const deleteBodies = sqlite.query(`DELETE FROM wal_bodies WHERE seq IN (SELECT value FROM json_each(?))`);
    let deletedEntries = 0;
    // In chunks, each its own transaction followed by a checkpoint that empties the -wal file:
    // a delete is written to the -wal file first, so one transaction over a large log would
    // need about as much free space as it removes, which a full disk does not have. A chunk
    // needs a bounded amount (the spare file covers it, see storage.ts).
    for (let guard = 0; guard < 1_000_000; guard++) {
      const seqs = this.write(() =>
        sqlite.transaction(() => {
          const rows = chunk.all(cutoff, cleanupChunkEntries) as Array<{ seq: number }>;
          const list = rows.map((r) => r.seq);
          if (list.length) deleteBodies.run(JSON.stringify(list));
          return list;
        })(),
      );
      deletedEntries += seqs.length;
      this.checkpoint();
      if (seqs.length < cleanupChunkEntries) break;
    }
    // Bodies left without an entry (none are expected; an older version could leave some).
    this.write(() => sqlite.run(`DELETE FROM wal_bodies WHERE NOT EXISTS (SELECT 1 FROM wal_entries e WHERE e.seq = wal_bodies.seq)`));
    this.checkpoint();
    this.diskSample = null;
    return { deletedEntries };
  }

  /**
   * Copies the -wal file into the database and truncates it, giving its room back to the
   * file system. Best effort: a reader in the way or a full disk leaves it for later.
   */
  private checkpoint() {
    try {
      this.store.sqlite.run("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch (error) {
      if (isStorageFullError(error)) this.noteStorageFull();
    }
  }

  private diskSample: { bytes: number; fileBytes: number; atMs: number } | null = null;
  private diskWasFull = false;
  private diskListeners: Array<(state: DiskState) => void> = [];

  /**
   * The log's size on disk: the pages of its SQLite database in use, committed ones still
   * in the -wal file included. Pages freed by retention or cleanup are reused by later
   * appends before the file grows, so they do not count (the files themselves never
   * shrink: see `diskFileBytes`). Sampled at most every `diskSampleMs`, so that checking it
   * before every write costs no query.
   */
  diskBytes(): number {
    return this.sampleDisk().bytes;
  }

  /** The size of the SQLite file and its -wal file as the file system sees them (same sampling). */
  diskFileBytes(): number {
    return this.sampleDisk().fileBytes;
  }

  private sampleDisk(): { bytes: number; fileBytes: number } {
    const now = Date.now();
    if (this.diskSample && now - this.diskSample.atMs < diskSampleMs) return this.diskSample;
    const pragma = (name: string) => (this.store.sqlite.query(`PRAGMA ${name}`).get() as Record<string, number>)[name] ?? 0;
    const bytes = (pragma("page_count") - pragma("freelist_count")) * pragma("page_size");
    const size = (path: string) => {
      try {
        return statSync(path).size;
      } catch {
        return 0; // No -wal file between connections.
      }
    };
    this.diskSample = { bytes, fileBytes: size(this.store.path) + size(`${this.store.path}-wal`), atMs: now };
    return this.diskSample;
  }

  /**
   * True when the log has reached `bytesMax` on disk (0 = no bound): new writes must be
   * refused until it shrinks. Listeners hear each change, not each call.
   */
  diskFull(bytesMax: number): boolean {
    this.lastBytesMax = bytesMax;
    // Out of "file system full" only by a successful step, tried at most every diskSampleMs.
    if (this.storageFull && Date.now() - this.lastRecoveryAtMs >= diskSampleMs) this.recoverStorageOnce();
    const bytes = this.diskBytes();
    const full = this.storageFull || (bytesMax > 0 && bytes >= bytesMax);
    if (full !== this.diskWasFull) {
      this.diskWasFull = full;
      for (const listener of this.diskListeners) listener({ full, bytes, bytesMax, filesystem: this.storageFull });
    }
    return full;
  }

  /**
   * Called when the log reaches its disk bound or finds its file system full (`filesystem`),
   * and when it takes writes again.
   */
  onDiskFull(listener: (state: DiskState) => void) {
    this.diskListeners.push(listener);
  }

  /** Wipes the log (used by reset, after every instance was reset). */
  clear() {
    this.store.sqlite.run("DELETE FROM wal_pending");
    this.store.sqlite.run("DELETE FROM wal_bodies");
    this.store.sqlite.run("DELETE FROM wal_entries");
    this.store.sqlite.run("DELETE FROM wal_diverged");
    this.divergedKeys.clear();
    this.repairKeys.clear();
    for (const name of this.instances) this.pendingByInstance.set(name, 0);
  }
}

/** Entries removed per cleanup transaction (see cleanup). */
const cleanupChunkEntries = 2000;

/** How long a sample of the log's size on disk is used before it is taken again. */
const diskSampleMs = 250;

const divergedKey = (instance: string, partition: string) => `${instance}\u0000${partition}`;
/** Marks a pending row's last error as a refusal by the instance (4xx), not a failure. */
const refusedPrefix = "refused: ";

function toEntry(row: typeof walEntries.$inferSelect, body: Buffer | null, attempts: number, lastError: string | null): PendingEntry {
  return {
    seq: row.seq,
    createdAtMs: row.createdAtMs,
    partition: row.partition,
    kind: row.kind as EntryKind,
    op: row.op as EntryOp,
    tenant: row.tenant,
    database: row.database,
    collectionId: row.collectionId,
    name: row.name,
    body: body ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength) : null,
    bodyBytes: row.bodyBytes,
    state: row.state as Entry["state"],
    appliedBy: row.appliedBy,
    attempts,
    lastError,
  };
}
