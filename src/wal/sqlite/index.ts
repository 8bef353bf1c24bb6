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
    return appendGroup(this.ctx, entries, nowMs);
  }
  async load() {
    return positions.load(this.ctx);
  }
  async owed(instance: string, partition: string, query: OwedQuery) {
    return positions.owed(this.ctx, instance, partition, query);
  }
  async firstOwedBefore(instance: string, beforeSeq: number, kinds?: EntryKind[], exceptPartition?: string) {
    return positions.firstOwedBefore(this.ctx, instance, beforeSeq, kinds, exceptPartition);
  }
  async owedPartitions(instance: string, limit: number) {
    return positions.owedPartitions(this.ctx, instance, limit);
  }
  async owesBefore(instance: string, partition: string, beforeSeq: number) {
    return positions.owesBefore(this.ctx, instance, partition, beforeSeq);
  }
  async owedBy(seq: number) {
    return positions.owedBy(this.ctx, seq);
  }
  async recoverUnanswered() {
    return outcomes.recoverUnanswered(this.ctx);
  }
  async markReady(seqs: number[], appliedBy: string | null) {
    outcomes.markReady(this.ctx, seqs, appliedBy);
  }
  async keepUnanswered(seqs: number[]) {
    outcomes.keepUnanswered(this.ctx, seqs);
  }
  async completeOnTarget(instance: string, seqs: number[]) {
    return outcomes.completeOnTarget(this.ctx, instance, seqs);
  }
  async reject(seq: number) {
    outcomes.reject(this.ctx, seq);
  }
  async markApplied(instance: string, seqs: number[]) {
    return outcomes.markApplied(this.ctx, instance, seqs);
  }
  async recordFailure(instance: string, seq: number, error: string, refused: boolean) {
    outcomes.recordFailure(this.ctx, instance, seq, error, refused);
  }
  async skip(instance: string, seq: number) {
    return outcomes.skip(this.ctx, instance, seq);
  }
  async markCopiedUpTo(instance: string, partition: string, uptoSeq: number) {
    return outcomes.markCopiedUpTo(this.ctx, instance, partition, uptoSeq);
  }
  async markDiverged(instance: string, entry: Pick<Entry, "seq" | "partition" | "op">, error: string, atMs: number) {
    return divergence.markDiverged(this.ctx, instance, entry, error, atMs);
  }
  async markUnderRepair(instance: string, partition: string, reason: string, atMs: number) {
    return divergence.markUnderRepair(this.ctx, instance, partition, reason, atMs);
  }
  async clearDiverged(instance: string, partition: string) {
    return divergence.clearDiverged(this.ctx, instance, partition);
  }
  async cleanup(maxAgeMs: number) {
    return retention.cleanup(this.ctx, maxAgeMs);
  }
  async clear() {
    retention.clear(this.ctx);
  }
  async checkpoint() {
    retention.checkpoint(this.ctx);
  }
  async partitionState(partition: string) {
    return status.partitionState(this.ctx, partition);
  }
  async counts() {
    return status.counts(this.ctx);
  }
  async failedEntries(limit: number) {
    return status.failedEntries(this.ctx, limit);
  }
  async size() {
    return size(this.ctx);
  }
  async ping() {}
  /** A local file is never "unreachable": its failures are errors (or a full disk, see ../storage.ts). */
  isUnreachableError() {
    return false;
  }
  async close() {
    if (this.closeWithStore) this.ctx.local.close();
  }
}
