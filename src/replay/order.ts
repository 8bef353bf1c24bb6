/**
 * The ordering rules, in one place: what an instance may apply next, and how a merged batch
 * it refuses is split. Both the write path (writes/pipeline.ts) and replay (replayer.ts) go
 * through here, so an instance never applies a collection's entries out of log order.
 *
 * - Entries of one partition (a collection, or `meta`) are applied in seq order; an entry
 *   not answered yet by its write target blocks every later one (the store hands out ready
 *   entries only up to the first that is not).
 * - Across partitions, an entry waits for the earlier entries of the kinds `barrierKinds`
 *   names; and a merged batch never reaches past a `meta` entry its later parts must follow.
 */
import type { Entry, EntryKind, PendingEntry, WriteAheadLog } from "../wal/log";
import { takeBatch } from "./batch";

/**
 * Which earlier entries (of other partitions) must be applied before this one:
 * - a tenant/database entry waits for everything before it (deleting a database comes
 *   after its collections' writes);
 * - creating or renaming a collection waits for earlier collection changes, since names
 *   are unique per database (a delete then re-create of one name must keep its order);
 * - every other entry waits for earlier tenant/database entries (its database exists).
 */
export function barrierKinds(entry: Pick<Entry, "kind" | "op">): EntryKind[] {
  if (entry.kind === "meta") return ["records", "collection", "meta"];
  if (entry.op === "create_collection" || entry.op === "modify_collection") return ["collection", "meta"];
  return ["meta"];
}

/** The first earlier entry of another partition that `entry` must wait for on `instance`, if any. */
export function blockerOf(wal: WriteAheadLog, instance: string, entry: Pick<Entry, "seq" | "kind" | "op" | "partition">) {
  return wal.firstPendingBefore(instance, entry.seq, barrierKinds(entry), entry.partition);
}

/**
 * Whether `instance` may take `entry` directly (the write path) with nothing to catch up
 * first: it owes no earlier entry of the partition, in any state (an entry not answered yet
 * is skipped by replay, and a later write must not overtake it), and none of another
 * partition that `entry` must follow. One store call; when false, the write path drains
 * what stands ahead and checks again.
 */
export async function nothingAhead(wal: WriteAheadLog, instance: string, entry: Pick<Entry, "seq" | "kind" | "op" | "partition">): Promise<boolean> {
  const ahead = await wal.owedAhead(instance, entry.partition, entry.seq, barrierKinds(entry));
  return ahead.samePartition === null && ahead.barrier === null;
}

/** What an instance may apply next in one partition. */
export type NextStep =
  /** Nothing it may apply (caught up to `uptoSeq`, or the next entry is not answered yet). */
  | { kind: "none" }
  /** The next entry waits for an earlier entry of another partition: apply that one first. */
  | { kind: "blocked"; by: { seq: number; partition: string } }
  /** These entries, in order, may be applied now (merged if takeBatch allows). */
  | { kind: "entries"; entries: PendingEntry[] };

/** Reads at most `limit` owed entries of the partition and keeps those the rules let through now. */
export async function nextStep(
  wal: WriteAheadLog,
  instance: string,
  partition: string,
  query: { limit: number; uptoSeq?: number; bytesMax?: number },
): Promise<NextStep> {
  const owed = await wal.nextPending(instance, partition, Math.max(1, query.limit), query.uptoSeq, query.bytesMax);
  if (owed.length === 0) return { kind: "none" };
  const blocker = await blockerOf(wal, instance, owed[0]!);
  if (blocker) return { kind: "blocked", by: blocker };
  // Only record writes go after the first entry (only they merge, and their barrier is
  // tenant/database entries alone), and not past a tenant/database entry they must follow.
  const end = owed.findIndex((e, i) => i > 0 && (e.kind !== "records" || owed[0]!.kind !== "records"));
  const run = end === -1 ? owed : owed.slice(0, end);
  const meta = run.length > 1 ? await wal.firstPendingBefore(instance, run.at(-1)!.seq, ["meta"], partition) : null;
  return { kind: "entries", entries: meta ? run.filter((e) => e.seq < meta.seq) : run };
}

/** How applying one piece (a merged batch, or a single entry) went, for `applyBisecting`. */
export type PieceOutcome<R> =
  /** The instance refused the merged piece: try its halves. */
  | { kind: "split" }
  /** Done with the piece; go on with the next. */
  | { kind: "done"; results: R[] }
  /** Done with the piece; apply nothing after it (a failure: later entries must wait). */
  | { kind: "stop"; results: R[] };

/**
 * Applies entries (merged into `body` when more than one); when the instance refuses them
 * merged, applies each half on its own, in order, down to single entries, so that a refused
 * entry ends up refused alone and every other entry is applied, with about log2(n) extra
 * requests per refused entry. Stops at the first piece that says so: nothing after a failed
 * entry is applied before it (an instance never applies a collection's entries out of order).
 */
export async function applyBisecting<E extends Pick<Entry, "op" | "body" | "bodyBytes">, R>(
  entries: E[],
  body: Uint8Array | null,
  apply: (entries: E[], body: Uint8Array | null) => Promise<PieceOutcome<R>>,
): Promise<{ results: R[]; stopped: boolean }> {
  const outcome = await apply(entries, body);
  if (outcome.kind !== "split") return { results: outcome.results, stopped: outcome.kind === "stop" };
  if (entries.length === 1) throw new Error("a single entry cannot be split");
  const results: R[] = [];
  const middle = Math.ceil(entries.length / 2);
  for (const half of [entries.slice(0, middle), entries.slice(middle)]) {
    // A half of a merged run merges whole again; takeBatch is asked anyway, so a half that
    // does not is sent in the pieces it allows.
    for (let rest = half; rest.length > 0; ) {
      const piece = takeBatch(rest, { entriesMax: rest.length, recordsMax: Number.MAX_SAFE_INTEGER, bytesMax: Number.MAX_SAFE_INTEGER });
      const step = await applyBisecting(piece.entries, piece.body, apply);
      results.push(...step.results);
      if (step.stopped) return { results, stopped: true };
      rest = rest.slice(piece.entries.length);
    }
  }
  return { results, stopped: false };
}
