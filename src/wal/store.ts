/**
 * The seam between chroma-lb and where its log lives (SQLite file or Postgres). Every method
 * is asynchronous and atomic: one call is one transaction. What routing reads on every
 * request comes from the in-memory view (view.ts), which the log (log.ts) feeds from the
 * outcomes it records here.
 */
import type { Divergence, Entry, EntryKind, FailedEntry, NewEntry, OwedRow, PendingEntry } from "./types";

/** What the in-memory view is built from when the log opens. */
export interface LogSnapshot {
  headSeq: number;
  owed: OwedRow[];
  divergences: Divergence[];
}

/** Which owed entries of one partition to read (see LogStore.owed). */
export interface OwedQuery {
  limit: number;
  /** Only entries at or before this position. */
  uptoSeq: number;
  /** Bodies for the leading entries that fit (at least one). */
  bytesMax: number;
}

/**
 * The owed entries a read of OwedQuery returns, from their leading rows in seq order: those
 * up to the first that is not ready, and while their bodies fit in `bytesMax` (the first
 * always does). Answers the last seq to read with bodies, or -1 when there is none.
 */
export function lastOwedWithin(heads: Iterable<{ seq: number; state: string; bodyBytes: number }>, bytesMax: number): number {
  let last = -1;
  let bytes = 0;
  for (const head of heads) {
    if (head.state !== "ready") break;
    if (last !== -1 && bytes + head.bodyBytes > bytesMax) break;
    bytes += head.bodyBytes;
    last = head.seq;
  }
  return last;
}

export interface LogStore {
  readonly kind: "sqlite" | "postgres";

  // Append.
  /** Appends entries in one transaction, each owed by every instance; durable when it resolves. */
  appendGroup(entries: NewEntry[], nowMs: number): Promise<Entry[]>;

  // Positions: what an instance owes (replay/order.ts applies the ordering rules to these).
  load(): Promise<LogSnapshot>;
  /** Owed entries of one partition in seq order, ready ones only, up to the first not ready. */
  owed(instance: string, partition: string, query: OwedQuery): Promise<PendingEntry[]>;
  /** The lowest owed position before `beforeSeq` among `kinds`, outside `exceptPartition`. */
  firstOwedBefore(instance: string, beforeSeq: number, kinds?: EntryKind[], exceptPartition?: string): Promise<{ seq: number; partition: string } | null>;
  /** Partitions with owed entries, oldest first. */
  owedPartitions(instance: string, limit: number): Promise<Array<{ partition: string; firstSeq: number }>>;
  /**
   * For the write path, in one call: the first entry of `partition` before `beforeSeq` the
   * instance owes (any state), and the first before it of another partition among `kinds`.
   */
  owedAhead(instance: string, partition: string, beforeSeq: number, kinds: EntryKind[]): Promise<{ samePartition: number | null; barrier: { seq: number; partition: string } | null }>;
  /** The first entry of the partition before `beforeSeq` the instance owes, in any state. */
  owesBefore(instance: string, partition: string, beforeSeq: number): Promise<{ seq: number } | null>;
  /** How many instances owe the entry, and how many of those refused it. */
  owedBy(seq: number): Promise<{ owed: number; refused: number }>;

  // Outcomes.
  /** Entries left `new` by a crash were never answered: they become ready (replayed everywhere). */
  recoverUnanswered(): Promise<number>;
  markReady(seqs: number[], appliedBy: string | null): Promise<void>;
  /** The outcome is unknown: those of `seqs` still `new` become ready for every instance. */
  keepUnanswered(seqs: number[]): Promise<void>;
  /** Ready for all, and applied on `instance`, in one transaction. Returns the seqs it owed. */
  completeOnTarget(instance: string, seqs: number[]): Promise<number[]>;
  /** No instance may apply it: owed by none, body dropped. */
  reject(seq: number): Promise<void>;
  /** Returns the seqs the instance owed among `seqs`. */
  markApplied(instance: string, seqs: number[]): Promise<number[]>;
  /** A failed (or, with `refused`, refused) attempt, kept on the owed row. */
  recordFailure(instance: string, seq: number, error: string, refused: boolean): Promise<void>;
  /** An operator gives up on one entry for one instance; returns its partition when it was owed. */
  skip(instance: string, seq: number): Promise<string | null>;
  /** A copy made at `uptoSeq` holds the entries up to there; returns the seqs no longer owed. */
  markCopiedUpTo(instance: string, partition: string, uptoSeq: number): Promise<number[]>;

  // Divergence and repair marks.
  /** The instance refused an entry another applied: no longer owed, partition marked. */
  markDiverged(instance: string, entry: Pick<Entry, "seq" | "partition" | "op">, error: string, atMs: number): Promise<{ first: boolean; mark: Divergence }>;
  /** Marks the copy as under repair; an existing mark is kept. Returns the mark in place. */
  markUnderRepair(instance: string, partition: string, reason: string, atMs: number): Promise<Divergence>;
  clearDiverged(instance: string, partition: string): Promise<boolean>;

  // Retention.
  /** Removes entries older than `maxAgeMs` no instance owes (never an unanswered one). */
  cleanup(maxAgeMs: number): Promise<{ deletedEntries: number }>;
  /** Wipes log, owed rows and marks (reset). Positions keep growing. */
  clear(): Promise<void>;
  /** Gives room back to the file system where the store can (SQLite: truncates the -wal file). */
  checkpoint(): Promise<void>;

  // Head and lag.
  partitionState(partition: string): Promise<{ headSeq: number; unanswered: number }>;
  counts(): Promise<{ total: number; pendingEntries: number; rejected: number }>;
  failedEntries(limit: number): Promise<FailedEntry[]>;
  /** Space the log takes: `bytes` is compared with WAL_MAX_DISK_MB; `fileBytes` as the files (or relations) take it. */
  size(): Promise<{ bytes: number; fileBytes: number }>;

  /** One cheap round trip (Postgres: `SELECT 1`), to learn whether the store answers again. */
  ping(): Promise<void>;
  /** True when `error` says the store cannot be reached now (not that a statement is wrong). */
  isUnreachableError(error: unknown): boolean;

  close(): Promise<void>;
}
