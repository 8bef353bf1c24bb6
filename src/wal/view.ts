/**
 * The log as routing, admin pages and metrics read it, synchronously, on every request:
 * what each instance owes (positions only, no bodies), the entries not answered yet, the
 * divergence and repair marks, the head. Built from the store when the log opens and fed by
 * every outcome the log records (log.ts), so it never waits for the store.
 *
 * With several chroma-lb nodes on one store, each node reloads its view from the store on a
 * poll and on wake-up hints (cluster/node.ts), so it lags what other nodes did by up to
 * that poll: decisions that must not lag (which instance may serve a read, what an
 * instance owes before a write) read the store itself.
 */
import type { LogSnapshot } from "./store";
import type { Divergence, Entry, EntryKind } from "./types";

/** One instance's owed positions in one partition, ascending; applied ones leave mostly from the front. */
class OwedQueue {
  private seqs: number[] = [];
  private createdAtMs: number[] = [];
  private head = 0;

  get size() {
    return this.seqs.length - this.head;
  }

  push(seq: number, createdAtMs: number) {
    if (this.size === 0 || seq > this.seqs.at(-1)!) {
      this.seqs.push(seq);
      this.createdAtMs.push(createdAtMs);
      return;
    }
    const at = this.indexOf(seq);
    if (this.seqs[at] === seq) return;
    this.seqs.splice(at, 0, seq);
    this.createdAtMs.splice(at, 0, createdAtMs);
  }

  has(seq: number): boolean {
    return this.seqs[this.indexOf(seq)] === seq;
  }

  remove(seq: number): boolean {
    const at = this.indexOf(seq);
    if (at >= this.seqs.length || this.seqs[at] !== seq) return false;
    if (at === this.head) this.head += 1;
    else {
      this.seqs.splice(at, 1);
      this.createdAtMs.splice(at, 1);
    }
    if (this.head > 1024 && this.head * 2 > this.seqs.length) this.compact();
    return true;
  }

  /** The first position and its age, or null. */
  first(): { seq: number; createdAtMs: number } | null {
    return this.size === 0 ? null : { seq: this.seqs[this.head]!, createdAtMs: this.createdAtMs[this.head]! };
  }

  /** Positions in order, up to `uptoSeq`. */
  *upTo(uptoSeq: number): Generator<number> {
    for (let i = this.head; i < this.seqs.length && this.seqs[i]! <= uptoSeq; i++) yield this.seqs[i]!;
  }

  private indexOf(seq: number): number {
    let low = this.head;
    let high = this.seqs.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.seqs[middle]! < seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  private compact() {
    this.seqs = this.seqs.slice(this.head);
    this.createdAtMs = this.createdAtMs.slice(this.head);
    this.head = 0;
  }
}

interface InstanceOwed {
  partitions: Map<string, OwedQueue>;
  count: number;
  /** Owed collection and meta entries (lists and counts depend on them). */
  catalog: Set<number>;
  /** Owed entries whose replay failed at least once, with their last error. */
  failing: Map<number, string | null>;
}

const markKey = (instance: string, partition: string) => `${instance}\u0000${partition}`;

export class LogView {
  private readonly owed = new Map<string, InstanceOwed>();
  /** Entries still being applied by their write target (state `new`): owed, not yet replayable. */
  private readonly unanswered = new Set<number>();
  private readonly marks = new Map<string, Divergence>();
  private head = 0;
  /** While a reload reads the store: the changes made meanwhile, applied again on top of what it read. */
  private journal: Array<() => void> | null = null;

  constructor(private readonly instances: string[]) {
    this.reset();
  }

  /** Replaces everything with what the store holds. */
  load(snapshot: LogSnapshot) {
    this.reset();
    this.head = snapshot.headSeq;
    for (const row of snapshot.owed) {
      this.addOwed(row.instance, row.seq, row.partition, row.kind, row.createdAtMs);
      if (row.state === "new") this.unanswered.add(row.seq);
      if (row.attempts > 0) this.of(row.instance).failing.set(row.seq, row.lastError);
    }
    for (const mark of snapshot.divergences) this.marks.set(markKey(mark.instance, mark.partition), mark);
  }

  /** A reload starts: changes from now on are journaled (see replayJournal). */
  startJournal() {
    this.journal = [];
  }

  /** The reload read `snapshot` (null: it failed): loads it, then applies the journaled changes again. */
  replayJournal(snapshot: LogSnapshot | null) {
    const journal = this.journal ?? [];
    this.journal = null;
    if (!snapshot) return;
    this.load(snapshot);
    for (const change of journal) change();
  }

  private journaled(change: () => void) {
    this.journal?.push(change);
  }

  reset() {
    this.owed.clear();
    for (const name of this.instances) this.owed.set(name, { partitions: new Map(), count: 0, catalog: new Set(), failing: new Map() });
    this.unanswered.clear();
    this.marks.clear();
  }

  // Fed by log.ts after each change the store committed.

  appended(entries: Entry[]) {
    this.journaled(() => this.appended(entries));
    for (const entry of entries) {
      for (const name of this.instances) this.addOwed(name, entry.seq, entry.partition, entry.kind, entry.createdAtMs);
      this.unanswered.add(entry.seq);
      this.head = Math.max(this.head, entry.seq);
    }
  }

  answered(seqs: number[]) {
    this.journaled(() => this.answered(seqs));
    for (const seq of seqs) this.unanswered.delete(seq);
  }

  answeredAll() {
    this.journaled(() => this.answeredAll());
    this.unanswered.clear();
  }

  /** The instance no longer owes these entries of the partition. */
  removed(instance: string, partition: string, seqs: Iterable<number>) {
    if (this.journal) {
      const copy = [...seqs];
      this.journaled(() => this.removed(instance, partition, copy));
      seqs = copy;
    }
    const owed = this.owed.get(instance);
    const queue = owed?.partitions.get(partition);
    if (!owed || !queue) return;
    for (const seq of seqs) {
      if (!queue.remove(seq)) continue;
      owed.count -= 1;
      owed.catalog.delete(seq);
      owed.failing.delete(seq);
    }
    if (queue.size === 0) owed.partitions.delete(partition);
  }

  /** No instance owes the entry (rejected). */
  removedEverywhere(partition: string, seq: number) {
    this.journaled(() => this.removedEverywhere(partition, seq));
    for (const name of this.instances) this.removed(name, partition, [seq]);
    this.unanswered.delete(seq);
  }

  failed(instance: string, partition: string, seq: number, error: string) {
    this.journaled(() => this.failed(instance, partition, seq, error));
    const owed = this.owed.get(instance);
    if (owed?.partitions.get(partition)?.has(seq)) owed.failing.set(seq, error);
  }

  marked(mark: Divergence) {
    this.journaled(() => this.marked(mark));
    this.marks.set(markKey(mark.instance, mark.partition), mark);
  }

  unmarked(instance: string, partition: string) {
    this.journaled(() => this.unmarked(instance, partition));
    this.marks.delete(markKey(instance, partition));
  }

  // Read synchronously.

  headSeq(): number {
    return this.head;
  }

  /** Partitions in which the instance owes entries (any state). */
  owedPartitions(instance: string): string[] {
    return [...(this.owed.get(instance)?.partitions.keys() ?? [])];
  }

  pendingCount(instance: string): number {
    return this.owed.get(instance)?.count ?? 0;
  }

  failingCount(instance: string): number {
    return this.owed.get(instance)?.failing.size ?? 0;
  }

  /**
   * True when the instance has applied every acknowledged entry of the partition up to
   * `uptoSeq`; entries still being applied by the write target were not acknowledged yet.
   */
  isCaughtUp(instance: string, partition: string, uptoSeq = Number.MAX_SAFE_INTEGER): boolean {
    const queue = this.owed.get(instance)?.partitions.get(partition);
    if (!queue) return true;
    for (const seq of queue.upTo(uptoSeq)) if (!this.unanswered.has(seq)) return false;
    return true;
  }

  /** True when the instance owes no acknowledged collection or meta entry (lists and counts are current). */
  isCatalogCaughtUp(instance: string): boolean {
    const catalog = this.owed.get(instance)?.catalog;
    if (!catalog) return true;
    for (const seq of catalog) if (!this.unanswered.has(seq)) return false;
    return true;
  }

  isDiverged(instance: string, partition: string): boolean {
    return this.marks.size > 0 && this.marks.has(markKey(instance, partition));
  }

  /** Whether the instance's copy of the partition is lost or being rebuilt. */
  isUnderRepair(instance: string, partition: string): boolean {
    return this.marks.size > 0 && this.marks.get(markKey(instance, partition))?.op === "repair";
  }

  /** Marked in doubt: a node that was applying to the copy went, and what it applied unrecorded was sent again. */
  isInDoubt(instance: string, partition: string): boolean {
    return this.marks.size > 0 && this.marks.get(markKey(instance, partition))?.op === "doubt";
  }

  /** Every mark, oldest first. */
  divergences(): Divergence[] {
    return [...this.marks.values()].sort((a, b) => a.atMs - b.atMs);
  }

  /** Lag of one instance: entries owed, the oldest one and its age, entries failing. */
  lag(instance: string): { entries: number; oldestAgeMs: number; firstSeq: number | null; failing: number; lastError: string | null } {
    const owed = this.owed.get(instance);
    let oldest: { seq: number; createdAtMs: number } | null = null;
    for (const queue of owed?.partitions.values() ?? []) {
      const first = queue.first();
      if (first && (!oldest || first.seq < oldest.seq)) oldest = first;
    }
    let lastError: string | null = null;
    let lastSeq = -1;
    for (const [seq, error] of owed?.failing ?? []) if (seq > lastSeq && error !== null) [lastSeq, lastError] = [seq, error];
    return {
      entries: owed?.count ?? 0,
      oldestAgeMs: oldest ? Date.now() - oldest.createdAtMs : 0,
      firstSeq: oldest?.seq ?? null,
      failing: owed?.failing.size ?? 0,
      lastError,
    };
  }

  private of(instance: string): InstanceOwed {
    let owed = this.owed.get(instance);
    if (!owed) this.owed.set(instance, (owed = { partitions: new Map(), count: 0, catalog: new Set(), failing: new Map() }));
    return owed;
  }

  private addOwed(instance: string, seq: number, partition: string, kind: EntryKind, createdAtMs: number) {
    const owed = this.of(instance);
    let queue = owed.partitions.get(partition);
    if (!queue) owed.partitions.set(partition, (queue = new OwedQueue()));
    const before = queue.size;
    queue.push(seq, createdAtMs);
    if (queue.size === before) return;
    owed.count += 1;
    if (kind !== "records") owed.catalog.add(seq);
  }
}
