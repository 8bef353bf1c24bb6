/**
 * What each instance owes in the SQLite log: one wal_pending row per (instance, entry) until
 * the instance has applied it.
 */
import { asc, eq, min } from "drizzle-orm";
import { walDiverged, walEntries, walPending } from "../../db/sqlite-schema";
import { lastOwedWithin, type LogSnapshot, type OwedQuery } from "../store";
import type { EntryKind, EntryOp, Entry, OwedRow, PendingEntry } from "../types";
import { prepareFirstPending, type SqliteLogContext } from "./statements";
import { headSeq } from "./status";

/** Every owed row (no bodies) and every mark, for the in-memory view. */
export function load(ctx: SqliteLogContext): LogSnapshot {
  const rows = ctx.local.sqlite
    .query(
      `SELECT p.instance, p.seq, p.partition, p.kind, e.created_at_ms AS createdAtMs, e.state, p.attempts, p.last_error AS lastError
         FROM wal_pending p JOIN wal_entries e ON e.seq = p.seq ORDER BY p.seq`,
    )
    .all() as OwedRow[];
  const divergences = ctx.local.db.select().from(walDiverged).orderBy(asc(walDiverged.atMs)).all();
  return { headSeq: headSeq(ctx), owed: rows, divergences };
}

/**
 * The instance's owed entries of one partition in order, ready ones only: an entry still
 * being applied by the write target blocks everything after it. Bodies are read only for
 * the leading entries that fit in `bytesMax` (at least one), so a long backlog never sits
 * in memory at once.
 */
export function owed(ctx: SqliteLogContext, instance: string, partition: string, query: OwedQuery): PendingEntry[] {
  const heads = ctx.st.heads.all({ instance, partition, uptoSeq: query.uptoSeq, limit: query.limit });
  const last = lastOwedWithin(heads, query.bytesMax);
  if (last === -1) return [];
  const rows = ctx.st.pendingWithBodies.all({ instance, partition, lastSeq: last });
  return rows.map((row) => toEntry(row.entry, row.body, row.attempts, row.lastError));
}

const firstPendingStatements = new WeakMap<SqliteLogContext, Map<string, ReturnType<typeof prepareFirstPending>>>();

export function firstOwedBefore(
  ctx: SqliteLogContext,
  instance: string,
  beforeSeq: number,
  kinds?: EntryKind[],
  exceptPartition?: string,
): { seq: number; partition: string } | null {
  let cache = firstPendingStatements.get(ctx);
  if (!cache) firstPendingStatements.set(ctx, (cache = new Map()));
  const key = `${kinds?.join(",") ?? "*"}|${exceptPartition !== undefined}`;
  let statement = cache.get(key);
  if (!statement) cache.set(key, (statement = prepareFirstPending(ctx.local.db, kinds, exceptPartition !== undefined)));
  return statement.get({ instance, beforeSeq, exceptPartition: exceptPartition ?? "" }) ?? null;
}

export function owedPartitions(ctx: SqliteLogContext, instance: string, limit: number): Array<{ partition: string; firstSeq: number }> {
  return ctx.local.db
    .select({ partition: walPending.partition, firstSeq: min(walPending.seq) })
    .from(walPending)
    .where(eq(walPending.instance, instance))
    .groupBy(walPending.partition)
    .orderBy(asc(min(walPending.seq)))
    .limit(limit)
    .all()
    .map((row) => ({ partition: row.partition, firstSeq: row.firstSeq ?? 0 }));
}

export function owesBefore(ctx: SqliteLogContext, instance: string, partition: string, beforeSeq: number): { seq: number } | null {
  return ctx.st.owedBefore.get({ instance, partition, beforeSeq }) ?? null;
}

export function owedBy(ctx: SqliteLogContext, seq: number): { owed: number; refused: number } {
  const row = ctx.st.owedBy.get({ seq });
  return { owed: row?.owed ?? 0, refused: row?.refused ?? 0 };
}

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
