/**
 * Divergence and repair marks in the SQLite log: one wal_diverged row per (instance,
 * partition) whose copy is no longer the others' (op `repair`: lost or being rebuilt).
 */
import { and, eq } from "drizzle-orm";
import { walDiverged, walPending } from "../../db/sqlite-schema";
import type { Divergence, Entry } from "../types";
import type { SqliteLogContext } from "./statements";
import { headSeq } from "./status";

export function markDiverged(
  ctx: SqliteLogContext,
  instance: string,
  entry: Pick<Entry, "seq" | "partition" | "op">,
  error: string,
  atMs: number,
): { first: boolean; mark: Divergence } {
  const where = and(eq(walDiverged.instance, instance), eq(walDiverged.partition, entry.partition));
  return ctx.local.db.transaction((tx) => {
    tx.delete(walPending).where(and(eq(walPending.instance, instance), eq(walPending.seq, entry.seq))).run();
    const existing = tx.select().from(walDiverged).where(where).get();
    if (existing) {
      tx.update(walDiverged).set({ refusedEntries: existing.refusedEntries + 1 }).where(where).run();
      return { first: false, mark: { ...existing, refusedEntries: existing.refusedEntries + 1 } };
    }
    const mark = { instance, partition: entry.partition, seq: entry.seq, op: entry.op, error: error.slice(0, 2000), refusedEntries: 1, atMs };
    tx.insert(walDiverged).values(mark).run();
    return { first: true, mark };
  });
}

export function markUnderRepair(ctx: SqliteLogContext, instance: string, partition: string, reason: string, atMs: number): Divergence {
  const mark = { instance, partition, seq: headSeq(ctx), op: "repair", error: reason.slice(0, 2000), refusedEntries: 0, atMs };
  ctx.local.db.insert(walDiverged).values(mark).onConflictDoNothing().run();
  return ctx.local.db
    .select()
    .from(walDiverged)
    .where(and(eq(walDiverged.instance, instance), eq(walDiverged.partition, partition)))
    .get()!;
}

export function clearDiverged(ctx: SqliteLogContext, instance: string, partition: string): boolean {
  const removed = ctx.local.db
    .delete(walDiverged)
    .where(and(eq(walDiverged.instance, instance), eq(walDiverged.partition, partition)))
    .returning({ seq: walDiverged.seq })
    .all();
  return removed.length > 0;
}
