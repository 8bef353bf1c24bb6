/**
 * The SQLite log store (LOG_STORE=sqlite, the default): DATA_DIR/chroma-lb.sqlite in WAL
 * journal mode. Appends commit with synchronous=FULL; every other change with NORMAL (replay
 * redoes it if a machine crash loses it). Each job sits in the file named for it.
 */
import type { LocalStore } from "../../db";
import type { LogStore, OwedQuery } from "../store";
import type { Entry, EntryKind, NewEntry } from "../types";
import { appendGroup } from "./append";
import * as divergence from "./divergence";
import { size } from "./disk";
import * as outcomes from "./outcomes";
import * as positions from "./positions";
import * as retention from "./retention";
import { prepareStatements, type SqliteLogContext } from "./statements";
import * as status from "./status";

export class SqliteLogStore implements LogStore {
  readonly kind = "sqlite";
  private readonly ctx: SqliteLogContext;

  /** `closeWithStore`: close() closes the SQLite file too (otherwise its owner does). */
  constructor(local: LocalStore, instances: string[], private readonly closeWithStore = false) {
    this.ctx = { local, st: prepareStatements(local.db), instances };
    local.sqlite.run("PRAGMA synchronous = NORMAL");
  }

  async appendGroup(entries: NewEntry[], nowMs: number) {
    return this.clean(() => appendGroup(this.ctx, entries, nowMs));
  }
  async load() {
    return this.clean(() => positions.load(this.ctx));
  }
  async owed(instance: string, partition: string, query: OwedQuery) {
    return this.clean(() => positions.owed(this.ctx, instance, partition, query));
  }
  async firstOwedBefore(instance: string, beforeSeq: number, kinds?: EntryKind[], exceptPartition?: string) {
    return this.clean(() => positions.firstOwedBefore(this.ctx, instance, beforeSeq, kinds, exceptPartition));
  }
  async owedPartitions(instance: string, limit: number) {
    return this.clean(() => positions.owedPartitions(this.ctx, instance, limit));
  }
  async owedAhead(instance: string, partition: string, beforeSeq: number, kinds: EntryKind[]) {
    return this.clean(() => ({
      samePartition: positions.owesBefore(this.ctx, instance, partition, beforeSeq)?.seq ?? null,
      barrier: positions.firstOwedBefore(this.ctx, instance, beforeSeq, kinds, partition),
    }));
  }
  async owesBefore(instance: string, partition: string, beforeSeq: number) {
    return this.clean(() => positions.owesBefore(this.ctx, instance, partition, beforeSeq));
  }
  async owedBy(seq: number) {
    return this.clean(() => positions.owedBy(this.ctx, seq));
  }
  async recoverUnanswered() {
    return this.clean(() => outcomes.recoverUnanswered(this.ctx));
  }
  async markReady(seqs: number[], appliedBy: string | null) {
    return this.clean(() => outcomes.markReady(this.ctx, seqs, appliedBy));
  }
  async keepUnanswered(seqs: number[]) {
    return this.clean(() => outcomes.keepUnanswered(this.ctx, seqs));
  }
  async completeOnTarget(instance: string, seqs: number[]) {
    return this.clean(() => outcomes.completeOnTarget(this.ctx, instance, seqs));
  }
  async reject(seq: number) {
    return this.clean(() => outcomes.reject(this.ctx, seq));
  }
  async markApplied(instance: string, seqs: number[]) {
    return this.clean(() => outcomes.markApplied(this.ctx, instance, seqs));
  }
  async recordFailure(instance: string, seq: number, error: string, refused: boolean) {
    return this.clean(() => outcomes.recordFailure(this.ctx, instance, seq, error, refused));
  }
  async skip(instance: string, seq: number) {
    return this.clean(() => outcomes.skip(this.ctx, instance, seq));
  }
  async markCopiedUpTo(instance: string, partition: string, uptoSeq: number) {
    return this.clean(() => outcomes.markCopiedUpTo(this.ctx, instance, partition, uptoSeq));
  }
  async markDiverged(instance: string, entry: Pick<Entry, "seq" | "partition" | "op">, error: string, atMs: number) {
    return this.clean(() => divergence.markDiverged(this.ctx, instance, entry, error, atMs));
  }
  async markUnderRepair(instance: string, partition: string, reason: string, atMs: number) {
    return this.clean(() => divergence.markUnderRepair(this.ctx, instance, partition, reason, atMs));
  }
  async clearDiverged(instance: string, partition: string) {
    return this.clean(() => divergence.clearDiverged(this.ctx, instance, partition));
  }
  async cleanup(maxAgeMs: number) {
    return this.clean(() => retention.cleanup(this.ctx, maxAgeMs));
  }
  async clear() {
    return this.clean(() => retention.clear(this.ctx));
  }
  async checkpoint() {
    return this.clean(() => retention.checkpoint(this.ctx));
  }
  async partitionState(partition: string) {
    return this.clean(() => status.partitionState(this.ctx, partition));
  }
  async counts() {
    return this.clean(() => status.counts(this.ctx));
  }
  async failedEntries(limit: number) {
    return this.clean(() => status.failedEntries(this.ctx, limit));
  }
  async size() {
    return this.clean(() => size(this.ctx));
  }
  async ping() {}
  /** A local file is never "unreachable": its failures are errors (or a full disk, see ../storage.ts). */
  isUnreachableError() {
    return false;
  }
  /**
   * Runs one change. SQLite may keep a transaction open after a COMMIT that failed for lack
   * of room; the next statement would then join it, so it is rolled back here and every
   * change starts clean.
   */
  private clean<T>(change: () => T): T {
    try {
      return change();
    } catch (error) {
      const { sqlite } = this.ctx.local;
      if (sqlite.inTransaction) {
        try {
          sqlite.run("ROLLBACK");
        } catch {
          // Already rolled back by SQLite.
        }
      }
      throw error;
    }
  }

  async close() {
    if (this.closeWithStore) this.ctx.local.close();
  }
}
