/**
 * The durable, ordered write-ahead log: every write is appended here before any instance
 * sees it, and each instance then owes every entry until it has applied it.
 *
 * The log is a store (store.ts: SQLite or Postgres, every call asynchronous) and an
 * in-memory view (view.ts) that routing, admin pages and metrics read synchronously. Every
 * change goes to the store first, then to the view. Beside them: group commit
 * (group-commit.ts), state changes kept until recorded (unresolved.ts), whether the store
 * answers (reachability.ts), the size bound (disk-bound.ts) and a full file system
 * (storage.ts, handled here). The ordering rules live in replay/order.ts; the types in
 * types.ts.
 */
import { DiskBound, diskSampleMs, type DiskState } from "./disk-bound";
import { GroupCommit } from "./group-commit";
import { LogStoreUnreachableError, Reachability } from "./reachability";
import { isStorageFullError, StorageFullError, type StorageReserve } from "./storage";
import type { LogSnapshot, LogStore } from "./store";
import type { Entry, EntryKind, NewEntry, PendingEntry } from "./types";
import { UnresolvedChanges, type UnresolvedView } from "./unresolved";
import { LogView } from "./view";

export * from "./types";
export { LogStoreUnreachableError, type DiskState, type UnresolvedView };

export interface Limits {
  /** Appends waiting for their group commit; more are refused so memory stays bounded. */
  appendQueueMax: number;
}

type Positioned = Pick<Entry, "seq" | "partition">;

export class WriteAheadLog {
  readonly view: LogView;
  private readonly groups: GroupCommit;
  private readonly listeners: Array<(partition: string) => void> = [];
  private readonly disk: DiskBound;
  /** State changes not recorded yet, oldest first (see unresolved.ts). */
  private readonly unresolved: UnresolvedChanges;
  private readonly reachability: Reachability;
  /** The file system under the log was found full (see noteStorageFull and recoverStorageOnce). */
  private storageFull = false;
  private lastRecoveryAtMs = 0;
  private recovering: Promise<boolean> | null = null;
  /** The bound the disk check was last asked about, so a full file system is reported at once with it. */
  private lastBytesMax = 0;

  readonly store: LogStore;

  private constructor(
    store: LogStore,
    private readonly instances: string[],
    limits: Limits,
    /** The spare file given up when the file system fills (see storage.ts); null = none. */
    private readonly reserve: StorageReserve | null,
  ) {
    this.reachability = new Reachability(store);
    this.store = this.reachability.store;
    this.view = new LogView(instances);
    this.disk = new DiskBound(() => this.store.size());
    this.unresolved = new UnresolvedChanges((change) => this.write(change));
    this.groups = new GroupCommit(
      async (group, nowMs) => {
        // The room left (the released spare file) is kept for recording entries already
        // appended and for cleanup; a new entry would take it.
        if (this.storageFull) throw new StorageFullError();
        try {
          return await this.store.appendGroup(group, nowMs);
        } catch (error) {
          // Nothing of the group was committed (the transaction rolled back). A full file
          // system refuses the group as a whole (507), and the spare file is given up at once
          // for the state changes of entries appended before.
          if (!isStorageFullError(error)) throw error;
          this.noteStorageFull();
          throw new StorageFullError();
        }
      },
      limits.appendQueueMax,
      (entries) => this.view.appended(entries),
    );
    // A disk already full at start (a previous run filled it) is found here, not by a
    // failed write: the spare file cannot be written back, so new writes are refused.
    if (reserve && !reserve.restore()) this.storageFull = true;
  }

  /** Opens the log on a store: the view is loaded from it, and its size sampled. */
  static async open(
    store: LogStore,
    instances: string[],
    limits: Limits = { appendQueueMax: 10_000 },
    reserve: StorageReserve | null = null,
  ): Promise<WriteAheadLog> {
    const wal = new WriteAheadLog(store, instances, limits, reserve);
    wal.view.load(await wal.store.load());
    await wal.sampleDisk();
    return wal;
  }

  /** Group-commit figures: transactions and entries, for /wal/status. */
  get commitStats() {
    return this.groups.stats;
  }

  /** Called after an entry becomes ready, with its partition (replay starts at once). */
  onAppend(listener: (partition: string) => void) {
    this.listeners.push(listener);
  }

  // Append.

  /** Appends one entry, durable when the promise resolves with it (see group-commit.ts). */
  append(entry: NewEntry): Promise<Entry> {
    if (this.storageFull) return Promise.reject(new StorageFullError());
    // Nothing could be made durable: refused at once rather than after a connect timeout.
    const unreachable = this.reachability.state;
    if (unreachable) return Promise.reject(new LogStoreUnreachableError(unreachable.error));
    return this.groups.append(entry);
  }

  // Outcomes.

  /**
   * Entries left in state `new` by a crash were never answered; the client may still have
   * waited for them, so they are kept and replayed everywhere like any other entry.
   */
  async recoverUnanswered(): Promise<number> {
    let n = 0;
    await this.unresolved.settle({
      seqs: [],
      partition: "*",
      action: "ready (left unanswered by a crash)",
      run: async () => {
        n = await this.store.recoverUnanswered();
        this.viewChange(() => this.view.answeredAll());
      },
    });
    return n;
  }

  /** The write target answered (or none could): the entries of one partition may now be replayed to every instance. */
  markReady(entries: Positioned[], appliedBy: string | null): Promise<boolean> {
    const seqs = entries.map((e) => e.seq);
    const partition = entries[0]?.partition ?? "";
    return this.unresolved.settle({
      seqs,
      partition,
      action: "ready",
      run: async () => {
        await this.store.markReady(seqs, appliedBy);
        this.viewChange(() => this.view.answered(seqs));
        this.notify(partition);
      },
    });
  }

  /**
   * The outcome of these entries is unknown (the write path failed after appending them):
   * any still `new` becomes ready for every instance, as after a crash (see
   * recoverUnanswered), so it neither blocks its partition nor is lost.
   */
  keepUnanswered(partition: string, seqs: number[]): Promise<boolean> {
    return this.unresolved.settle({
      seqs,
      partition,
      action: "ready (outcome unknown)",
      run: async () => {
        await this.store.keepUnanswered(seqs);
        this.viewChange(() => this.view.answered(seqs));
        this.notify(partition);
      },
    });
  }

  /** The write target applied these entries of one partition: applied there, ready for every other instance. */
  completeOnTarget(instance: string, partition: string, seqs: number[]): Promise<boolean> {
    return this.unresolved.settle({
      seqs,
      partition,
      action: `applied by ${instance}`,
      run: async () => {
        const removed = await this.store.completeOnTarget(instance, seqs);
        this.viewChange(() => this.view.answered(seqs));
        this.viewChange(() => this.view.removed(instance, partition, removed));
        this.notify(partition);
      },
    });
  }

  /** No instance may apply this entry (the write target refused it as bad input). */
  reject(entry: Positioned): Promise<boolean> {
    return this.unresolved.settle({
      seqs: [entry.seq],
      partition: entry.partition,
      action: "rejected",
      run: async () => {
        await this.store.reject(entry.seq);
        this.viewChange(() => this.view.removedEverywhere(entry.partition, entry.seq));
      },
    });
  }

  /** Tries the unresolved state changes again, oldest first; answers how many remain. */
  resolveOnce(): Promise<number> {
    return this.unresolved.resolveOnce();
  }

  /** Whether a state change of the partition is still to be recorded (it takes no new write until then). */
  hasUnresolved(partition: string): boolean {
    return this.unresolved.has(partition);
  }

  /** The state changes still to be recorded, oldest first (for /wal/status). */
  unresolvedChanges(limit = 100): UnresolvedView[] {
    return this.unresolved.list(limit);
  }

  /**
   * Runs one change of the store. A full file system is noticed here, in one place: the
   * spare file is given up (new writes are refused from then on, see `append`) and the
   * change is tried once more in the room it leaves. Other errors are thrown as they are.
   */
  private async write<T>(change: () => Promise<T>): Promise<T> {
    try {
      return await change();
    } catch (error) {
      if (!isStorageFullError(error)) throw error;
      if (!this.noteStorageFull()) throw error;
      return change();
    }
  }

  /** The file system under the log was found full; gives up the spare file. True when it was there to give. */
  private noteStorageFull(): boolean {
    this.storageFull = true;
    this.lastRecoveryAtMs = Date.now();
    const released = this.reserve?.release() ?? false;
    this.diskFull(this.lastBytesMax);
    return released;
  }

  /**
   * One step out of "file system full": records what is unresolved, then writes the spare
   * file back; new writes are taken again only once both succeeded.
   */
  async recoverStorageOnce(): Promise<boolean> {
    if (!this.storageFull) return true;
    this.lastRecoveryAtMs = Date.now();
    if ((await this.resolveOnce()) > 0) return false;
    // Gives the -wal file's room back first: it holds every change since the last
    // checkpoint, often many times the pages it adds to the database file.
    await this.store.checkpoint().catch(() => {});
    if (this.reserve && !this.reserve.restore()) return false;
    this.storageFull = false;
    this.disk.invalidate();
    return true;
  }

  /** Since when, and why, the store cannot be reached (null while it answers). */
  get storeUnreachable(): { sinceMs: number; error: string } | null {
    return this.reachability.state;
  }

  /**
   * One step back from an unreachable store: a round trip, then the state changes kept
   * meanwhile. Writes are taken again from the first success (the schedule calls this).
   */
  async probeOnce(): Promise<boolean> {
    if (!(await this.reachability.probe())) return false;
    await this.resolveOnce().catch(() => {});
    return this.reachability.state === null;
  }

  /** Whether the file system under the log was found full and has not given its room back yet. */
  get storageIsFull(): boolean {
    return this.storageFull;
  }

  /** The instance has applied these entries. */
  async markApplied(instance: string, entries: Positioned[]) {
    if (entries.length === 0) return;
    const removed = await this.write(() => this.store.markApplied(instance, entries.map((e) => e.seq)));
    const partitions = new Set(entries.map((e) => e.partition));
    this.viewChange(() => { for (const partition of partitions) this.view.removed(instance, partition, removed); });
  }

  /** A replay attempt failed; the error stays visible on the entry until it succeeds. */
  async recordFailure(instance: string, entry: Positioned, error: string) {
    await this.write(() => this.store.recordFailure(instance, entry.seq, error, false));
    this.viewChange(() => this.view.failed(instance, entry.partition, entry.seq, error));
  }

  /** The instance refused an entry no instance has applied (see refusedEverywhere). */
  async recordRefusal(instance: string, entry: Positioned, error: string) {
    await this.write(() => this.store.recordFailure(instance, entry.seq, error, true));
    this.viewChange(() => this.view.failed(instance, entry.partition, entry.seq, error));
  }

  /** An operator gives up on one entry for one instance; the skip is logged by the caller. */
  async skip(instance: string, seq: number): Promise<boolean> {
    const partition = await this.store.skip(instance, seq);
    this.viewChange(() => { if (partition !== null) this.view.removed(instance, partition, [seq]); });
    return partition !== null;
  }

  /**
   * A copy of the partition made at `uptoSeq` replaces what the instance held: it no longer
   * owes the entries up to there (the copy has them). Later entries are still owed.
   */
  async markCopiedUpTo(instance: string, partition: string, uptoSeq: number): Promise<number> {
    const removed = await this.store.markCopiedUpTo(instance, partition, uptoSeq);
    this.viewChange(() => this.view.removed(instance, partition, removed));
    return removed.length;
  }

  // Divergence and repair marks.

  /**
   * The instance refused an entry that another instance applied: it no longer owes the
   * entry (it will never take it), and its copy of the partition is marked diverged until
   * a repair clears the mark. Later entries of the partition still replay.
   */
  async markDiverged(instance: string, entry: Pick<Entry, "seq" | "partition" | "op">, error: string): Promise<{ first: boolean }> {
    const { first, mark } = await this.store.markDiverged(instance, entry, error, Date.now());
    this.viewChange(() => this.view.removed(instance, entry.partition, [entry.seq]));
    this.viewChange(() => this.view.marked(mark));
    return { first };
  }

  /**
   * Marks the instance's copy of the partition as under repair (reads and writes avoid it)
   * without touching what it owes; an existing mark is kept as it is.
   */
  async markUnderRepair(instance: string, partition: string, reason: string) {
    // Routing avoids the copy from now on, even before the store has the mark.
    if (!this.view.isDiverged(instance, partition)) {
      this.view.marked({ instance, partition, seq: this.view.headSeq(), op: "repair", error: reason, refusedEntries: 0, atMs: Date.now() });
    }
    const mark = await this.store.markUnderRepair(instance, partition, reason, Date.now());
    this.viewChange(() => this.view.marked(mark));
  }

  /** A repair made the instance's copy whole again (or an operator vouches for it). */
  async clearDiverged(instance: string, partition: string): Promise<boolean> {
    const removed = await this.store.clearDiverged(instance, partition);
    this.view.unmarked(instance, partition);
    return removed;
  }

  // Several nodes (cluster/).

  /**
   * With several nodes, a change recorded inside a lock's transaction reaches the view when
   * that transaction commits (cluster/apply-locks.ts), so a reload of the view never undoes
   * it (see refreshView). Null on one node: the view changes at once.
   */
  deferViewChange: ((change: () => void) => void) | null = null;

  private viewChange(change: () => void) {
    if (this.deferViewChange) this.deferViewChange(change);
    else change();
  }

  /**
   * Reloads the view from the store: what other nodes appended and recorded. The head
   * never goes back; what this node changes meanwhile is kept (see deferViewChange).
   * Decisions that cannot wait for the next reload read the store (see instancesBehind).
   */
  async refreshView(): Promise<void> {
    // Changes committed after the snapshot's reads began reach the view while they run (or
    // after): they are journaled and applied again on top of the snapshot.
    this.view.startJournal();
    let snapshot: LogSnapshot;
    try {
      snapshot = await this.store.load();
    } catch (error) {
      this.view.replayJournal(null);
      throw error;
    }
    this.view.replayJournal({ ...snapshot, headSeq: Math.max(snapshot.headSeq, this.view.headSeq()) });
  }

  /**
   * With several nodes: which of `instances` lack an acknowledged entry of the partition up
   * to `uptoSeq`, read from the store at decision time. Null on one node (the view knows).
   */
  instancesBehind: ((instances: string[], partition: string, uptoSeq: number) => Promise<Set<string>>) | null = null;

  /**
   * `instancesBehind` when there is one and the store answers; null otherwise, and the
   * caller goes by the view: while Postgres cannot be reached no node acknowledges a write,
   * so the view lacks at most what other nodes acknowledged in its last reload interval.
   */
  async behindNow(instances: string[], partition: string, uptoSeq = Number.MAX_SAFE_INTEGER): Promise<Set<string> | null> {
    if (!this.instancesBehind || this.storeUnreachable) return null;
    try {
      return await this.instancesBehind(instances, partition, uptoSeq);
    } catch {
      return null;
    }
  }

  /** Whether the instance has every acknowledged entry of the partition up to `uptoSeq`: read from the store with several nodes (`behindNow`), else from the view. */
  async caughtUpNow(instance: string, partition: string, uptoSeq?: number): Promise<boolean> {
    const behind = await this.behindNow([instance], partition, uptoSeq);
    return behind ? !behind.has(instance) : this.isCaughtUp(instance, partition, uptoSeq);
  }

  // Reads for replay (replay/order.ts).

  /**
   * The next entries of one partition that the instance still owes, in order (ready ones
   * only). Bodies are read only for the leading entries that fit in `bytesMax` (at least one).
   */
  nextPending(instance: string, partition: string, limit: number, uptoSeq = Number.MAX_SAFE_INTEGER, bytesMax = Number.MAX_SAFE_INTEGER): Promise<PendingEntry[]> {
    return this.store.owed(instance, partition, { limit, uptoSeq, bytesMax });
  }

  /** The lowest pending seq of the instance among the given kinds, before `beforeSeq`, outside `exceptPartition`. */
  firstPendingBefore(instance: string, beforeSeq: number, kinds?: EntryKind[], exceptPartition?: string) {
    return this.store.firstOwedBefore(instance, beforeSeq, kinds, exceptPartition);
  }

  /** For the write path: what the instance owes before `beforeSeq`, in the partition and among `kinds` elsewhere (one store call). */
  owedAhead(instance: string, partition: string, beforeSeq: number, kinds: EntryKind[]) {
    return this.store.owedAhead(instance, partition, beforeSeq, kinds);
  }

  /** Partitions in which the instance owes entries, oldest first. */
  pendingPartitions(instance: string, limit: number) {
    return this.store.owedPartitions(instance, limit);
  }

  /** True when no other instance has applied the entry yet, so rejecting it changes nothing. */
  async appliedNowhere(seq: number): Promise<boolean> {
    return (await this.store.owedBy(seq)).owed >= this.instances.length;
  }

  /** True when every instance that owes the entry has refused it. */
  async refusedEverywhere(seq: number): Promise<boolean> {
    const { owed, refused } = await this.store.owedBy(seq);
    return owed > 0 && refused === owed;
  }

  // Read synchronously, from the view.

  pendingCount(instance: string) {
    return this.view.pendingCount(instance);
  }
  /** Entries the instance owes whose replay failed at least once (each is retried with backoff). */
  failingCount(instance: string) {
    return this.view.failingCount(instance);
  }
  /**
   * The first entry of the partition before `beforeSeq` the instance owes, in any state. The
   * write path checks it after catching an instance up: an entry that is not ready yet is
   * skipped by replay, and a later write must not overtake it.
   */
  owesBefore(instance: string, partition: string, beforeSeq: number) {
    return this.store.owesBefore(instance, partition, beforeSeq);
  }
  isCaughtUp(instance: string, partition: string, uptoSeq?: number) {
    return this.view.isCaughtUp(instance, partition, uptoSeq);
  }
  isCatalogCaughtUp(instance: string) {
    return this.view.isCatalogCaughtUp(instance);
  }
  isDiverged(instance: string, partition: string) {
    return this.view.isDiverged(instance, partition);
  }
  isUnderRepair(instance: string, partition: string) {
    return this.view.isUnderRepair(instance, partition);
  }
  isInDoubt(instance: string, partition: string) {
    return this.view.isInDoubt(instance, partition);
  }
  divergences() {
    return this.view.divergences();
  }
  /** The last position handed out; it never goes back (not even when retention removes the newest entries). */
  headSeq() {
    return this.view.headSeq();
  }
  lag(instance: string) {
    return this.view.lag(instance);
  }

  // Head, counts and retention, from the store.

  /** The newest position of a partition and how many of its entries are still unanswered. */
  partitionState(partition: string) {
    return this.store.partitionState(partition);
  }
  counts() {
    return this.store.counts();
  }
  /** Entries whose replay failed at least once, with their errors. */
  failedEntries(limit: number) {
    return this.store.failedEntries(limit);
  }
  /**
   * Removes entries older than `maxAgeMs` that every instance has applied (or that were
   * rejected). An entry any instance still owes is never removed.
   */
  async cleanup(maxAgeMs: number) {
    const result = await this.write(() => this.store.cleanup(maxAgeMs));
    this.disk.invalidate();
    return result;
  }

  /** Wipes the log (used by reset, after every instance was reset). */
  async clear() {
    await this.store.clear();
    const head = this.view.headSeq();
    this.view.load({ headSeq: head, owed: [], divergences: [] });
  }

  // Size (see disk-bound.ts): sampled, so checking it before every write costs no query.

  /** The log's size as WAL_MAX_DISK_MB counts it (see the store's `size`). */
  diskBytes(): number {
    return this.disk.bytes();
  }

  /** The log's files as the file system sees them (same sampling). */
  diskFileBytes(): number {
    return this.disk.fileBytes();
  }

  /** Takes a fresh sample now (tests, and at open). */
  sampleDisk(): Promise<void> {
    return this.disk.refresh();
  }

  /**
   * True when the log has reached `bytesMax` (0 = no bound) or its file system is full: new
   * writes must be refused until then. Listeners hear each change, not each call.
   */
  diskFull(bytesMax: number): boolean {
    this.lastBytesMax = bytesMax;
    // Out of "file system full" only by a successful step, tried at most every diskSampleMs.
    if (this.storageFull && !this.recovering && Date.now() - this.lastRecoveryAtMs >= diskSampleMs) {
      this.recovering = this.recoverStorageOnce()
        .catch(() => false)
        .finally(() => {
          this.recovering = null;
          this.diskFull(this.lastBytesMax);
        });
    }
    return this.disk.check(bytesMax, this.storageFull);
  }

  /**
   * Called when the log reaches its disk bound or finds its file system full (`filesystem`),
   * and when it takes writes again.
   */
  onDiskFull(listener: (state: DiskState) => void) {
    this.disk.onChange(listener);
  }

  close() {
    return this.store.close();
  }

  private notify(partition: string) {
    for (const listener of this.listeners) listener(partition);
  }
}
