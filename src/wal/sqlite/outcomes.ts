/**
 * Outcomes recorded in the SQLite log: an entry answered, applied, refused or failed on an
 * instance, skipped by an operator, or covered by a copy.
 */
import { and, eq, lte } from "drizzle-orm";
import { walPending } from "../../db/sqlite-schema";
import { refusedPrefix } from "../types";
import type { SqliteLogContext } from "./statements";

export function recoverUnanswered(ctx: SqliteLogContext): number {
  return ctx.local.sqlite.run(`UPDATE wal_entries SET state = 'ready' WHERE state = 'new'`).changes;
}

export function markReady(ctx: SqliteLogContext, seqs: number[], appliedBy: string | null) {
  ctx.local.db.transaction(() => {
    for (const seq of seqs) ctx.st.setState.run({ seq, state: "ready", appliedBy });
  });
}

export function keepUnanswered(ctx: SqliteLogContext, seqs: number[]) {
  const { sqlite } = ctx.local;
  sqlite.transaction(() => {
    for (const seq of seqs) sqlite.run(`UPDATE wal_entries SET state = 'ready', applied_by = NULL WHERE seq = ? AND state = 'new'`, [seq]);
  })();
}

export function completeOnTarget(ctx: SqliteLogContext, instance: string, seqs: number[]): number[] {
  return ctx.local.db.transaction(() => {
    const removed: number[] = [];
    for (const seq of seqs) {
      ctx.st.setState.run({ seq, state: "ready", appliedBy: instance });
      for (const row of ctx.st.deletePending.all({ instance, seq })) removed.push(row.seq);
    }
    return removed;
  });
}

/** Its body is dropped at once: nothing will ever read it, and refused bodies can be large. */
export function reject(ctx: SqliteLogContext, seq: number) {
  ctx.local.db.transaction(() => {
    ctx.st.setState.run({ seq, state: "rejected", appliedBy: null });
    ctx.st.deleteBody.run({ seq });
    ctx.st.deletePendingOfEntry.all({ seq });
  });
}

export function markApplied(ctx: SqliteLogContext, instance: string, seqs: number[]): number[] {
  if (seqs.length === 0) return [];
  return ctx.local.db.transaction(() => seqs.flatMap((seq) => ctx.st.deletePending.all({ instance, seq }).map((row) => row.seq)));
}

export function recordFailure(ctx: SqliteLogContext, instance: string, seq: number, error: string, refused: boolean) {
  const text = (refused ? `${refusedPrefix}${error}` : error).slice(0, 2000);
  ctx.st.recordFailure.run({ instance, seq, error: text, atMs: Date.now() });
}

export function skip(ctx: SqliteLogContext, instance: string, seq: number): string | null {
  return ctx.st.deletePending.all({ instance, seq })[0]?.partition ?? null;
}

export function markCopiedUpTo(ctx: SqliteLogContext, instance: string, partition: string, uptoSeq: number): number[] {
  return ctx.local.db
    .delete(walPending)
    .where(and(eq(walPending.instance, instance), eq(walPending.partition, partition), lte(walPending.seq, uptoSeq)))
    .returning({ seq: walPending.seq })
    .all()
    .map((row) => row.seq);
}
