/**
 * The Postgres log store (LOG_STORE=postgres, DATABASE_URL): the log, its bodies, every
 * instance's owed entries and the divergence and repair marks in Postgres (tables in
 * db/pg-schema.ts). Every commit waits for synchronous_commit=on (see db/index.ts), so an
 * acknowledged append is on the server's disk.
 *
 * Order of appends: positions come from a sequence, and a sequence value can commit after a
 * larger one, so a reader of "everything after N" could miss a row. Appends therefore take
 * one transaction-scoped advisory lock for the whole log (`appendLockKey`): positions are
 * handed out and committed one group at a time, in order, by every chroma-lb node sharing the
 * database. Group commit keeps that at one round trip per group, not per write.
 */
import type postgres from "postgres";
import { bounded } from "../../cluster/bounded";
import { lastOwedWithin, type LogSnapshot, type LogStore, type OwedQuery } from "../store";
import type { TxScope } from "./tx-scope";
import { refusedPrefix, type Divergence, type Entry, type EntryKind, type EntryOp, type FailedEntry, type NewEntry, type OwedRow, type PendingEntry } from "../types";

/** How long the reachability probe waits for `SELECT 1` before it counts as no answer. */
const pingTimeoutMs = 2_000;

/** Tries of markUnderRepair when other nodes keep clearing the mark it read. */
const markAttemptsMax = 3;

/** The advisory lock appends hold for their transaction (an arbitrary constant: "chroma-lb log"). */
const appendLockKey = 0x63686c6f67;
const cleanupChunkEntries = 2000;
const unreachableCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);

export class PostgresLogStore implements LogStore {
  readonly kind = "postgres";

  /**
   * `durable` commits wait for the server's disk: appends and every change of an entry's
   * state (answered, ready, rejected), which ordering depends on. `sql` (relaxed) is the
   * pool for the rest (what an instance applied, failures, marks, retention): a crash of
   * the server may lose its last such commits, and replay then applies those entries again,
   * as after a machine crash with the SQLite store.
   */
  constructor(
    pools: { durable: postgres.Sql; relaxed: postgres.Sql },
    private readonly instances: string[],
    private readonly onClose: () => Promise<void> = async () => {},
    /** With several nodes: the apply lock's transaction, which state changes join while it is open (tx-scope.ts). */
    private readonly scope: TxScope | null = null,
  ) {
    this.durable = pools.durable;
    this.sql = pools.relaxed;
  }

  private readonly durable: postgres.Sql;
  private readonly sql: postgres.Sql;

  /** Where a state change or a read for a decision runs: the open apply-lock transaction, else the pool. */
  private get q(): postgres.Sql | postgres.TransactionSql {
    return this.scope?.current() ?? this.sql;
  }

  /** The same, for a change of an entry's state, which must be durable (see the constructor). */
  private get qd(): postgres.Sql | postgres.TransactionSql {
    return this.scope?.current() ?? this.durable;
  }

  /** One transaction: the open apply-lock transaction (its commit is the commit), else a new one. */
  private atomic<T>(fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
    const current = this.scope?.current();
    return current ? fn(current) : (this.sql.begin(fn) as Promise<T>);
  }

  // Append.

  /**
   * One statement, so one round trip and its own transaction: the advisory lock, positions
   * from the sequence in the group's order, the entries, their bodies and every instance's
   * owed row. Array parameters keep the number of
   * parameters fixed whatever the group's size.
   */
  async appendGroup(group: NewEntry[], nowMs: number): Promise<Entry[]> {
    // Each body its own parameter: a bytea array parameter costs Postgres far more to parse
    // than the same bytes alone (measured: 48 against 27 ms for a 760 KB body).
    const params: unknown[] = [
      appendLockKey,
      group.map((e) => e.partition),
      group.map((e) => e.kind),
      group.map((e) => e.op),
      group.map((e) => e.tenant),
      group.map((e) => e.database),
      group.map((e) => e.collectionId),
      group.map((e) => e.name),
      group.map((e) => e.body?.byteLength ?? 0),
      nowMs,
      this.instances,
    ];
    const bodyRows: string[] = [];
    group.forEach((e, i) => {
      if (!e.body) return;
      params.push(Buffer.from(e.body.buffer, e.body.byteOffset, e.body.byteLength));
      bodyRows.push(`($${params.length}::bytea, ${i + 1})`);
    });
    const rows = await this.durable.unsafe<Array<{ seq: number }>>(
      `WITH lock AS (SELECT pg_advisory_xact_lock($1)),
       src AS (
         SELECT nextval('chroma_lb_wal_entries_seq_seq') AS seq, s.*
           FROM (SELECT u.* FROM lock, unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int[])
                   WITH ORDINALITY AS u(partition, kind, op, tenant, database, collection_id, name, body_bytes, ord)
                 ORDER BY u.ord) s
       ),
       entries AS (
         INSERT INTO chroma_lb_wal_entries (seq, created_at_ms, partition, kind, op, tenant, database, collection_id, name, body_bytes, state)
         SELECT seq, $10, partition, kind, op, tenant, database, collection_id, name, body_bytes, 'new' FROM src
       ),
       ${
         bodyRows.length
           ? `bodies AS (
         INSERT INTO chroma_lb_wal_bodies (seq, body)
         SELECT src.seq, v.body FROM src JOIN (VALUES ${bodyRows.join(", ")}) AS v(body, ord) ON v.ord = src.ord
       ),`
           : ""
       }
       pending AS (
         INSERT INTO chroma_lb_wal_pending (instance, seq, partition, kind)
         SELECT instance, seq, partition, kind FROM src CROSS JOIN unnest($11::text[]) AS instance
       )
       SELECT seq FROM src ORDER BY ord`,
      params as never[],
    );
    return group.map((e, i) => ({ ...e, seq: rows[i]!.seq, createdAtMs: nowMs, state: "new" as const, appliedBy: null, bodyBytes: e.body?.byteLength ?? 0 }));
  }

  // Positions.

  async load(): Promise<LogSnapshot> {
    // The head first: every entry up to it is then among the owed rows read next.
    const headSeq = await this.headSeq();
    const owed = await this.sql<OwedRow[]>`
      SELECT p.instance, p.seq, p.partition, p.kind, e.created_at_ms AS "createdAtMs", e.state, p.attempts, p.last_error AS "lastError"
        FROM chroma_lb_wal_pending p JOIN chroma_lb_wal_entries e ON e.seq = p.seq ORDER BY p.seq`;
    const divergences = await this.sql<Divergence[]>`
      SELECT instance, partition, seq, op, error, refused_entries AS "refusedEntries", at_ms AS "atMs" FROM chroma_lb_wal_diverged ORDER BY at_ms`;
    return { headSeq, owed: [...owed], divergences: [...divergences] };
  }

  async owed(instance: string, partition: string, query: OwedQuery): Promise<PendingEntry[]> {
    const heads = await this.q<Array<{ seq: number; state: string; bodyBytes: number }>>`
      SELECT p.seq, e.state, e.body_bytes AS "bodyBytes" FROM chroma_lb_wal_pending p JOIN chroma_lb_wal_entries e ON e.seq = p.seq
       WHERE p.instance = ${instance} AND p.partition = ${partition} AND p.seq <= ${query.uptoSeq}
       ORDER BY p.seq LIMIT ${query.limit}`;
    const last = lastOwedWithin(heads, query.bytesMax);
    if (last === -1) return [];
    const rows = await this.q`
      SELECT e.*, b.body, p.attempts, p.last_error FROM chroma_lb_wal_pending p
        JOIN chroma_lb_wal_entries e ON e.seq = p.seq LEFT JOIN chroma_lb_wal_bodies b ON b.seq = p.seq
       WHERE p.instance = ${instance} AND p.partition = ${partition} AND p.seq <= ${last} ORDER BY p.seq`;
    return rows.map((row) => ({
      seq: row.seq,
      createdAtMs: row.created_at_ms,
      partition: row.partition,
      kind: row.kind as EntryKind,
      op: row.op as EntryOp,
      tenant: row.tenant,
      database: row.database,
      collectionId: row.collection_id,
      name: row.name,
      body: row.body ? new Uint8Array(row.body.buffer, row.body.byteOffset, row.body.byteLength) : null,
      bodyBytes: row.body_bytes,
      state: row.state,
      appliedBy: row.applied_by,
      attempts: row.attempts,
      lastError: row.last_error,
    }));
  }

  async firstOwedBefore(instance: string, beforeSeq: number, kinds?: EntryKind[], exceptPartition?: string) {
    const rows = await this.q<Array<{ seq: number; partition: string }>>`
      SELECT seq, partition FROM chroma_lb_wal_pending
       WHERE instance = ${instance} AND seq < ${beforeSeq}
         ${kinds ? this.q`AND kind = ANY(${kinds})` : this.q``}
         ${exceptPartition !== undefined ? this.q`AND partition <> ${exceptPartition}` : this.q``}
       ORDER BY seq LIMIT 1`;
    return rows[0] ? { seq: rows[0].seq, partition: rows[0].partition } : null;
  }

  async owedPartitions(instance: string, limit: number) {
    const rows = await this.q<Array<{ partition: string; firstSeq: number }>>`
      SELECT partition, min(seq) AS "firstSeq" FROM chroma_lb_wal_pending WHERE instance = ${instance}
       GROUP BY partition ORDER BY min(seq) LIMIT ${limit}`;
    return [...rows];
  }

  async owedAhead(instance: string, partition: string, beforeSeq: number, kinds: EntryKind[]) {
    const [row] = await this.q<Array<{ same: number | null; barrierSeq: number | null; barrierPartition: string | null }>>`
      SELECT (SELECT seq FROM chroma_lb_wal_pending WHERE instance = ${instance} AND partition = ${partition} AND seq < ${beforeSeq} ORDER BY seq LIMIT 1) AS same,
             b.seq AS "barrierSeq", b.partition AS "barrierPartition"
        FROM (SELECT 1) AS one
        LEFT JOIN LATERAL (
          SELECT seq, partition FROM chroma_lb_wal_pending
           WHERE instance = ${instance} AND seq < ${beforeSeq} AND kind = ANY(${kinds}::text[]) AND partition <> ${partition}
           ORDER BY seq LIMIT 1) AS b ON true`;
    return {
      samePartition: row?.same ?? null,
      barrier: row?.barrierSeq != null ? { seq: row.barrierSeq, partition: row.barrierPartition! } : null,
    };
  }

  async owesBefore(instance: string, partition: string, beforeSeq: number) {
    const rows = await this.q<Array<{ seq: number }>>`
      SELECT seq FROM chroma_lb_wal_pending WHERE instance = ${instance} AND partition = ${partition} AND seq < ${beforeSeq} ORDER BY seq LIMIT 1`;
    return rows[0] ? { seq: rows[0].seq } : null;
  }

  async owedBy(seq: number) {
    const [row] = await this.q<Array<{ owed: number; refused: number }>>`
      SELECT count(*) AS owed, count(*) FILTER (WHERE last_error LIKE ${refusedPrefix + "%"}) AS refused FROM chroma_lb_wal_pending WHERE seq = ${seq}`;
    return { owed: row?.owed ?? 0, refused: row?.refused ?? 0 };
  }

  // Outcomes.

  async recoverUnanswered() {
    return (await this.qd`UPDATE chroma_lb_wal_entries SET state = 'ready' WHERE state = 'new'`).count;
  }

  async markReady(seqs: number[], appliedBy: string | null) {
    await this.qd`UPDATE chroma_lb_wal_entries SET state = 'ready', applied_by = ${appliedBy} WHERE seq = ANY(${seqs})`;
  }

  async keepUnanswered(seqs: number[]) {
    await this.qd`UPDATE chroma_lb_wal_entries SET state = 'ready', applied_by = NULL WHERE seq = ANY(${seqs}) AND state = 'new'`;
  }

  async completeOnTarget(instance: string, seqs: number[]) {
    // One statement (one round trip, one transaction): ready for all, applied on the target.
    const removed = await this.qd<Array<{ seq: number }>>`
      WITH ready AS (UPDATE chroma_lb_wal_entries SET state = 'ready', applied_by = ${instance} WHERE seq = ANY(${seqs}::bigint[]))
      DELETE FROM chroma_lb_wal_pending WHERE instance = ${instance} AND seq = ANY(${seqs}::bigint[]) RETURNING seq`;
    return removed.map((r) => r.seq);
  }

  async reject(seq: number) {
    await this.qd`
      WITH rejected AS (UPDATE chroma_lb_wal_entries SET state = 'rejected', applied_by = NULL WHERE seq = ${seq}),
           body AS (DELETE FROM chroma_lb_wal_bodies WHERE seq = ${seq})
      DELETE FROM chroma_lb_wal_pending WHERE seq = ${seq}`;
  }

  async markApplied(instance: string, seqs: number[]) {
    if (seqs.length === 0) return [];
    const removed = await this.q<Array<{ seq: number }>>`DELETE FROM chroma_lb_wal_pending WHERE instance = ${instance} AND seq = ANY(${seqs}) RETURNING seq`;
    return removed.map((r) => r.seq);
  }

  async recordFailure(instance: string, seq: number, error: string, refused: boolean) {
    const text = (refused ? `${refusedPrefix}${error}` : error).slice(0, 2000);
    await this.q`UPDATE chroma_lb_wal_pending SET attempts = attempts + 1, last_error = ${text}, last_attempt_at_ms = ${Date.now()}
                    WHERE instance = ${instance} AND seq = ${seq}`;
  }

  async skip(instance: string, seq: number) {
    const rows = await this.q<Array<{ partition: string }>>`DELETE FROM chroma_lb_wal_pending WHERE instance = ${instance} AND seq = ${seq} RETURNING partition`;
    return rows[0]?.partition ?? null;
  }

  async markCopiedUpTo(instance: string, partition: string, uptoSeq: number) {
    const rows = await this.q<Array<{ seq: number }>>`
      DELETE FROM chroma_lb_wal_pending WHERE instance = ${instance} AND partition = ${partition} AND seq <= ${uptoSeq} RETURNING seq`;
    return rows.map((r) => r.seq);
  }

  // Divergence and repair marks.

  async markDiverged(instance: string, entry: Pick<Entry, "seq" | "partition" | "op">, error: string, atMs: number) {
    return this.atomic(async (tx) => {
      await tx`DELETE FROM chroma_lb_wal_pending WHERE instance = ${instance} AND seq = ${entry.seq}`;
      const [row] = await tx`
        INSERT INTO chroma_lb_wal_diverged (instance, partition, seq, op, error, refused_entries, at_ms)
        VALUES (${instance}, ${entry.partition}, ${entry.seq}, ${entry.op}, ${error.slice(0, 2000)}, 1, ${atMs})
        ON CONFLICT (instance, partition) DO UPDATE SET refused_entries = chroma_lb_wal_diverged.refused_entries + 1
        RETURNING instance, partition, seq, op, error, refused_entries AS "refusedEntries", at_ms AS "atMs", (xmax = 0) AS inserted`;
      const { inserted, ...mark } = row!;
      return { first: inserted as boolean, mark: mark as Divergence };
    }) as Promise<{ first: boolean; mark: Divergence }>;
  }

  async markUnderRepair(instance: string, partition: string, reason: string, atMs: number) {
    // Another node's repair may clear an existing mark between the insert (which then kept
    // it) and the read: insert again, a few times (a NODES=3 chaos run saw the read find none).
    for (let attempt = 1; ; attempt++) {
      const head = await this.headSeq();
      await this.q`
        INSERT INTO chroma_lb_wal_diverged (instance, partition, seq, op, error, refused_entries, at_ms)
        VALUES (${instance}, ${partition}, ${head}, 'repair', ${reason.slice(0, 2000)}, 0, ${atMs}) ON CONFLICT DO NOTHING`;
      const [mark] = await this.q<Divergence[]>`
        SELECT instance, partition, seq, op, error, refused_entries AS "refusedEntries", at_ms AS "atMs"
          FROM chroma_lb_wal_diverged WHERE instance = ${instance} AND partition = ${partition}`;
      if (mark) return mark;
      if (attempt >= markAttemptsMax) throw new Error(`the repair mark of ${instance}/${partition} was cleared by another node ${markAttemptsMax} times in a row`);
    }
  }

  async clearDiverged(instance: string, partition: string) {
    return (await this.sql`DELETE FROM chroma_lb_wal_diverged WHERE instance = ${instance} AND partition = ${partition}`).count > 0;
  }

  // Several nodes (cluster/).

  /**
   * Entries of the partition still `new` become ready for every instance. Called only while
   * holding the partition's write lock (cluster/apply-locks.ts): every writer holds it from
   * before its append until its outcome is recorded, so a `new` entry seen then was left by a
   * writer that is gone (killed, or cut off and its transaction ended).
   */
  async recoverOrphans(partition: string): Promise<number[]> {
    // A `new` entry is owed by every instance none applied it to, so the instances' owed rows
    // (indexed, as few as their lag) find them all without scanning the partition's log. Every
    // instance's, not one's: a resync or a divergence mark may have settled it for one
    // instance while it was in flight (NODES=3 chaos run, seed 734099232: a wiped primary's
    // resync settled an in-flight add for the primary, its writer was SIGKILLed, and the
    // replica owed a `new` entry no recovery looked for, which held back its partition).
    const rows = await this.qd<Array<{ seq: number }>>`
      UPDATE chroma_lb_wal_entries SET state = 'ready', applied_by = NULL
       WHERE seq IN (SELECT seq FROM chroma_lb_wal_pending WHERE instance = ANY(${this.instances}::text[]) AND partition = ${partition})
         AND state = 'new' RETURNING seq`;
    return rows.map((r) => r.seq);
  }

  /** Partitions with entries still `new` (being applied, or left by a writer that is gone). */
  async partitionsWithUnanswered(limit: number): Promise<string[]> {
    const rows = await this.sql<Array<{ partition: string }>>`
      SELECT DISTINCT p.partition FROM chroma_lb_wal_pending p JOIN chroma_lb_wal_entries e ON e.seq = p.seq
       WHERE p.instance = ANY(${this.instances}::text[]) AND e.state = 'new' LIMIT ${limit}`;
    return rows.map((r) => r.partition);
  }

  /**
   * Which of `instances` owe an acknowledged entry (not `new`) of the partition up to
   * `uptoSeq`: read at decision time, so entries other nodes acknowledged count.
   */
  async instancesBehind(instances: string[], partition: string, uptoSeq: number): Promise<Set<string>> {
    // EXISTS stops at the first such row: one index probe per instance, whatever its backlog.
    const rows = await this.sql<Array<{ instance: string }>>`
      SELECT i.name AS instance FROM unnest(${instances}::text[]) AS i(name)
       WHERE EXISTS (SELECT 1 FROM chroma_lb_wal_pending p JOIN chroma_lb_wal_entries e ON e.seq = p.seq
                      WHERE p.instance = i.name AND p.partition = ${partition} AND p.seq <= ${uptoSeq} AND e.state <> 'new')`;
    return new Set(rows.map((r) => r.instance));
  }

  // Retention.

  async cleanup(maxAgeMs: number) {
    const cutoff = Date.now() - maxAgeMs;
    let deletedEntries = 0;
    // In chunks, each its own transaction, so a large cleanup never holds locks for long.
    for (let guard = 0; guard < 1_000_000; guard++) {
      const n = (await this.sql.begin(async (tx) => {
        const rows = await tx<Array<{ seq: number }>>`
          DELETE FROM chroma_lb_wal_entries WHERE seq IN (
            SELECT seq FROM chroma_lb_wal_entries e WHERE created_at_ms <= ${cutoff} AND state <> 'new'
               AND NOT EXISTS (SELECT 1 FROM chroma_lb_wal_pending p WHERE p.seq = e.seq)
             ORDER BY seq LIMIT ${cleanupChunkEntries})
          RETURNING seq`;
        if (rows.length) await tx`DELETE FROM chroma_lb_wal_bodies WHERE seq = ANY(${rows.map((r) => r.seq)})`;
        return rows.length;
      })) as number;
      deletedEntries += n;
      if (n < cleanupChunkEntries) break;
    }
    return { deletedEntries };
  }

  async clear() {
    await this.sql.begin(async (tx) => {
      for (const table of ["chroma_lb_wal_pending", "chroma_lb_wal_bodies", "chroma_lb_wal_entries", "chroma_lb_wal_diverged"]) await tx`DELETE FROM ${tx(table)}`;
    });
  }

  async checkpoint() {
    // Postgres gives room back by itself (autovacuum); nothing to do here.
  }

  // Head and lag.

  private async headSeq(): Promise<number> {
    const [row] = await this.sql<Array<{ last: number; called: boolean }>>`SELECT last_value AS last, is_called AS called FROM chroma_lb_wal_entries_seq_seq`;
    return row?.called ? row.last : 0;
  }

  /**
   * Whether the collection `partition` names was dropped: a delete of it logged (not
   * refused), or its mapping marked deleted. Read in the write lock's transaction, so a drop
   * made through another node before this lock was taken is seen, whatever this node's
   * mappings say yet.
   */
  async collectionDropped(partition: string): Promise<boolean> {
    const [row] = await this.q<Array<{ dropped: boolean }>>`
      SELECT EXISTS (SELECT 1 FROM chroma_lb_wal_entries WHERE partition = ${partition} AND op = 'delete_collection' AND state <> 'rejected')
          OR EXISTS (SELECT 1 FROM chroma_lb_collections WHERE id = ${partition} AND status = 'deleted') AS dropped`;
    return row?.dropped === true;
  }

  /**
   * Marks deleted the mappings of collections that will never exist: active, made before
   * `createdBeforeMs`, held by no instance, and with no create of theirs in the log. A create
   * answered "may have been logged" (Postgres went away midway) keeps its mapping, since its
   * entry may replay; when the entry was not logged, this is where the mapping goes.
   * Returns the ids marked.
   */
  async dropNeverCreated(createdBeforeMs: number): Promise<string[]> {
    const rows = await this.q<Array<{ id: string }>>`
      UPDATE chroma_lb_collections c SET status = 'deleted', updated_at_ms = ${Date.now()}
      WHERE c.status = 'active' AND c.created_at_ms < ${createdBeforeMs}
        AND NOT EXISTS (SELECT 1 FROM chroma_lb_collection_instances i WHERE i.collection_id = c.id)
        AND NOT EXISTS (SELECT 1 FROM chroma_lb_wal_entries e WHERE e.partition = c.id AND e.op = 'create_collection' AND e.state <> 'rejected')
      RETURNING c.id`;
    return rows.map((r) => r.id);
  }

  async partitionState(partition: string) {
    const [row] = await this.sql<Array<{ head: number; unanswered: number }>>`
      SELECT coalesce(max(seq), 0) AS head, count(*) FILTER (WHERE state = 'new') AS unanswered FROM chroma_lb_wal_entries WHERE partition = ${partition}`;
    return { headSeq: row?.head ?? 0, unanswered: row?.unanswered ?? 0 };
  }

  async counts() {
    const [row] = await this.sql<Array<{ total: number; rejected: number; pending: number }>>`
      SELECT (SELECT count(*) FROM chroma_lb_wal_entries) AS total,
             (SELECT count(*) FROM chroma_lb_wal_entries WHERE state = 'rejected') AS rejected,
             (SELECT count(DISTINCT seq) FROM chroma_lb_wal_pending) AS pending`;
    return { total: row?.total ?? 0, pendingEntries: row?.pending ?? 0, rejected: row?.rejected ?? 0 };
  }

  async failedEntries(limit: number): Promise<FailedEntry[]> {
    const rows = await this.sql<FailedEntry[]>`
      SELECT p.instance, p.seq, p.partition, p.attempts, p.last_error AS "lastError", p.last_attempt_at_ms AS "lastAttemptAtMs", e.op
        FROM chroma_lb_wal_pending p JOIN chroma_lb_wal_entries e ON e.seq = p.seq
       WHERE p.attempts > 0 ORDER BY p.seq LIMIT ${limit}`;
    return [...rows];
  }

  /** The log's relations (tables, indexes, TOAST) as Postgres counts them. */
  async size() {
    const [row] = await this.sql<Array<{ bytes: number }>>`
      SELECT (pg_total_relation_size('chroma_lb_wal_entries') + pg_total_relation_size('chroma_lb_wal_bodies')
            + pg_total_relation_size('chroma_lb_wal_pending') + pg_total_relation_size('chroma_lb_wal_diverged'))::bigint AS bytes`;
    return { bytes: row?.bytes ?? 0, fileBytes: row?.bytes ?? 0 };
  }

  /**
   * Bounded, so the probe schedule (which runs one probe at a time) tries again each second
   * rather than waiting behind a connection attempt the driver is still making.
   */
  async ping() {
    await bounded("log store ping", this.sql`SELECT 1`, pingTimeoutMs);
  }

  isUnreachableError(error: unknown): boolean {
    return isPostgresUnreachable(error);
  }

  async close() {
    await this.onClose();
  }
}

/**
 * Whether an error says Postgres could not be reached: the driver's own connection errors,
 * the system's, and SQLSTATE class 08 (connection exception), 57P01-57P03 (the server
 * shutting down, crashed, or not accepting yet), 53300 (too many connections).
 */
export function isPostgresUnreachable(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const code = String((error as { code?: unknown }).code ?? "");
  return unreachableCodes.has(code) || code.startsWith("08") || /^57P0[123]$/.test(code) || code === "53300";
}
