/**
 * Group commit: appends arriving together share one transaction, so durability costs one
 * commit (one fsync, or one Postgres round trip) per group, not per write. While a group
 * commits, the next one gathers.
 */
import type { Entry, NewEntry } from "./types";

interface QueuedAppend {
  entry: NewEntry;
  resolve: (entry: Entry) => void;
  reject: (error: unknown) => void;
}

/** Thrown when APPEND_QUEUE_MAX appends already wait: memory stays bounded. */
export class AppendQueueFullError extends Error {
  constructor() {
    super("write-ahead log append queue is full");
  }
}

export class GroupCommit {
  private queue: QueuedAppend[] = [];
  private scheduled = false;
  private committing = false;
  /** Transactions and entries appended, for /wal/status and metrics. */
  readonly stats = { transactions: 0, entries: 0, largestGroup: 0 };

  constructor(
    private readonly commit: (group: NewEntry[], nowMs: number) => Promise<Entry[]>,
    private readonly queueMax: number,
    private readonly onCommitted: (entries: Entry[]) => void,
  ) {}

  /** Resolves with the entry once its group is durable. */
  append(entry: NewEntry): Promise<Entry> {
    if (this.queue.length >= this.queueMax) return Promise.reject(new AppendQueueFullError());
    return new Promise<Entry>((resolve, reject) => {
      this.queue.push({ entry, resolve, reject });
      this.schedule();
    });
  }

  private schedule() {
    if (this.scheduled || this.committing) return;
    this.scheduled = true;
    setImmediate(() => void this.flush());
  }

  private async flush() {
    this.scheduled = false;
    const group = this.queue;
    this.queue = [];
    if (group.length === 0) return;
    this.committing = true;
    try {
      const entries = await this.commit(
        group.map((item) => item.entry),
        Date.now(),
      );
      this.stats.transactions += 1;
      this.stats.entries += group.length;
      this.stats.largestGroup = Math.max(this.stats.largestGroup, group.length);
      this.onCommitted(entries);
      group.forEach((item, i) => item.resolve(entries[i]!));
    } catch (error) {
      for (const item of group) item.reject(error);
    } finally {
      this.committing = false;
      if (this.queue.length > 0) this.schedule();
    }
  }
}
