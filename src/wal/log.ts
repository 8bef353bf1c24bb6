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
  ) {
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
    const result = this.store.sqlite.run(`UPDATE wal_entries SET state = 'ready' WHERE state = 'new'`);
    return result.changes;
  }

  /**
   * Appends one entry, durable when the promise resolves with it. Appends arriving together
   * share one transaction (group commit), so durability costs one fsync per group, not per write.
   */
  append(entry: NewEntry): Promise<Entry> {
    if (this.queue.length >= this.limits.appendQueueMax) {
      return Promise.reject(new Error("write-ahead log append queue is full"));
    }
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
      for (const item of group) item.reject(error);
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
  markReady(seq: number, appliedBy: string | null) {
    this.statements.setState.run({ seq, state: "ready", appliedBy });
    const entry = this.statements.partitionOf.get({ seq });
    if (entry) for (const listener of this.listeners) listener(entry.partition);
  }

  /**
   * The write target applied these entries of one partition: in one transaction, they are
   * applied there and ready for every other instance.
   */
  completeOnTarget(instance: string, partition: string, seqs: number[]) {
    const st = this.statements;
    this.store.db.transaction(() => {
      let removed = 0;
      for (const seq of seqs) {
        st.setState.run({ seq, state: "ready", appliedBy: instance });
        removed += st.deletePending.all({ instance, seq }).length;
      }
      this.pendingByInstance.set(instance, Math.max(0, (this.pendingByInstance.get(instance) ?? 0) - removed));
    });
    for (const listener of this.listeners) listener(partition);
  }

  /**
   * No instance may apply this entry (the write target refused it as bad input). Its body
   * is dropped at once: nothing will ever read it, and refused bodies can be large.
   */
  reject(seq: number) {
    const st = this.statements;
    this.store.db.transaction(() => {
      st.setState.run({ seq, state: "rejected", appliedBy: null });
      st.deleteBody.run({ seq });
      const removed = st.deletePendingOfEntry.all({ seq });
      for (const row of removed) this.pendingByInstance.set(row.instance, (this.pendingByInstance.get(row.instance) ?? 1) - 1);
    });
  }

  /** The instance has applied these entries. */
  markApplied(instance: string, seqs: number[]) {
    if (seqs.length === 0) return;
    const removed = this.store.db.transaction(() => seqs.reduce((n, seq) => n + this.statements.deletePending.all({ instance, seq }).length, 0));
    this.pendingByInstance.set(instance, Math.max(0, (this.pendingByInstance.get(instance) ?? 0) - removed));
  }

  /** A replay attempt failed; the error stays visible on the entry until it succeeds. */
  recordFailure(instance: string, seq: number, error: string) {
    this.statements.recordFailure.run({ instance, seq, error: error.slice(0, 2000), atMs: Date.now() });
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
    this.statements.recordFailure.run({ instance, seq, error: `${refusedPrefix}${error}`.slice(0, 2000), atMs: Date.now() });
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
    const deletedEntries = this.store.sqlite.transaction(() => {
      const result = this.store.sqlite.run(
        `DELETE FROM wal_entries WHERE created_at_ms <= ? AND state != 'new'
           AND NOT EXISTS (SELECT 1 FROM wal_pending p WHERE p.seq = wal_entries.seq)`,
        [cutoff],
      );
      this.store.sqlite.run(`DELETE FROM wal_bodies WHERE NOT EXISTS (SELECT 1 FROM wal_entries e WHERE e.seq = wal_bodies.seq)`);
      return result.changes;
    })();
    return { deletedEntries };
  }

  private diskSample: { bytes: number; fileBytes: number; atMs: number } | null = null;
  private diskWasFull = false;
  private diskListeners: Array<(state: { full: boolean; bytes: number; bytesMax: number }) => void> = [];

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
    if (bytesMax <= 0) return false;
    const bytes = this.diskBytes();
    const full = bytes >= bytesMax;
    if (full !== this.diskWasFull) {
      this.diskWasFull = full;
      for (const listener of this.diskListeners) listener({ full, bytes, bytesMax });
    }
    return full;
  }

  /** Called when the log reaches its disk bound, and when it is below it again. */
  onDiskFull(listener: (state: { full: boolean; bytes: number; bytesMax: number }) => void) {
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
