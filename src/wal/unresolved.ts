/**
 * State changes of logged entries that the store could not record yet (a full disk, an
 * unreachable store). None may be lost: an entry left `new` holds back its partition's
 * replay, and one that let later entries pass would reach instances out of order. So a
 * change that fails is kept, in order, and tried again by `resolveOnce` (the replay schedule,
 * the disk check, the store's probe and the write path call it); meanwhile /wal/status lists
 * it and its partition takes no new write.
 */

/** A change to record: its entries, its partition (`*`: all) and what it does. */
export interface StateChange {
  seqs: number[];
  partition: string;
  /** What is to be recorded, for /wal/status. */
  action: string;
  run: () => Promise<void>;
}

/** An unresolved change as /wal/status shows it. */
export interface UnresolvedView {
  positions: number[];
  partition: string;
  action: string;
  error: string;
}

const errorText = (error: unknown) => String((error as Error)?.message ?? error).slice(0, 500);

export class UnresolvedChanges {
  private readonly queue: Array<StateChange & { error: string }> = [];

  /** `write` runs one change against the store (and handles a full disk, see log.ts). */
  constructor(private readonly write: (change: () => Promise<void>) => Promise<void>) {}

  /** Records the change now, or keeps it behind an earlier one of its partition. False when kept. */
  async settle(change: StateChange): Promise<boolean> {
    if (this.has(change.partition) || (change.partition === "*" && this.queue.length > 0)) {
      this.queue.push({ ...change, error: "waiting for an earlier change of the partition" });
      return false;
    }
    try {
      await this.write(change.run);
      return true;
    } catch (error) {
      this.queue.push({ ...change, error: errorText(error) });
      return false;
    }
  }

  /** Tries the kept changes again, oldest first; answers how many remain. */
  async resolveOnce(): Promise<number> {
    while (this.queue.length > 0) {
      const change = this.queue[0]!;
      try {
        await this.write(change.run);
      } catch (error) {
        change.error = errorText(error);
        return this.queue.length;
      }
      this.queue.shift();
    }
    return 0;
  }

  /** Whether a change of the partition is still to be recorded. */
  has(partition: string): boolean {
    return this.queue.some((u) => u.partition === partition || u.partition === "*");
  }

  list(limit = 100): UnresolvedView[] {
    return this.queue.slice(0, limit).map((u) => ({ positions: u.seqs, partition: u.partition, action: u.action, error: u.error }));
  }
}
