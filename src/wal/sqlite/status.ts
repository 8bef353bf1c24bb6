/** Status queries of the SQLite log: head, per-partition state, counts, failing entries. */
import { asc, count, eq, gt, sql } from "drizzle-orm";
import { walEntries, walPending } from "../../db/sqlite-schema";
import type { FailedEntry } from "../types";
import type { SqliteLogContext } from "./statements";

/**
 * The last position handed out. Read from sqlite_sequence (seq is AUTOINCREMENT), not
 * max(seq): cleanup removes the newest entries too once every instance applied them, and
 * the head must not go back then.
 */
export function headSeq(ctx: SqliteLogContext): number {
  const row = ctx.local.sqlite.query(`SELECT seq FROM sqlite_sequence WHERE name = 'wal_entries'`).get() as { seq: number } | null;
  return row?.seq ?? 0;
}

export function partitionState(ctx: SqliteLogContext, partition: string): { headSeq: number; unanswered: number } {
  const row = ctx.local.sqlite
    .query(`SELECT coalesce(max(seq), 0) AS head, coalesce(sum(state = 'new'), 0) AS unanswered FROM wal_entries WHERE partition = ?`)
    .get(partition) as { head: number; unanswered: number };
  return { headSeq: row.head, unanswered: row.unanswered };
}

export function counts(ctx: SqliteLogContext): { total: number; pendingEntries: number; rejected: number } {
  const { db } = ctx.local;
  const total = db.select({ n: count() }).from(walEntries).get()?.n ?? 0;
  const rejected = db.select({ n: count() }).from(walEntries).where(eq(walEntries.state, "rejected")).get()?.n ?? 0;
  const pendingEntries = db.select({ n: sql<number>`count(distinct ${walPending.seq})` }).from(walPending).get()?.n ?? 0;
  return { total, pendingEntries, rejected };
}

export function failedEntries(ctx: SqliteLogContext, limit: number): FailedEntry[] {
  return ctx.local.db
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
