/**
 * The log's size against WAL_MAX_DISK_MB, and a full file system: sampled at most every
 * `sampleMs`, so checking it before every write costs no query; listeners hear each change
 * of "full", not each check.
 */

/** What disk listeners hear: full or not, and whether the file system (not WAL_MAX_DISK_MB) is the cause. */
export interface DiskState {
  full: boolean;
  bytes: number;
  bytesMax: number;
  filesystem: boolean;
}

/** How long a sample of the log's size is used before it is taken again. */
export const diskSampleMs = 250;

export class DiskBound {
  private sample = { bytes: 0, fileBytes: 0, atMs: 0 };
  private sampling: Promise<void> | null = null;
  private wasFull = false;
  private readonly listeners: Array<(state: DiskState) => void> = [];

  constructor(private readonly size: () => Promise<{ bytes: number; fileBytes: number }>) {}

  /** Takes a fresh sample now. */
  async refresh(): Promise<void> {
    this.sample = { ...(await this.size()), atMs: Date.now() };
  }

  /** The next read takes a fresh sample (after cleanup, or room given back). */
  invalidate() {
    this.sample.atMs = 0;
  }

  bytes(): number {
    this.refreshSoon();
    return this.sample.bytes;
  }

  fileBytes(): number {
    this.refreshSoon();
    return this.sample.fileBytes;
  }

  /** Full when the file system is (`storageFull`) or the log reached `bytesMax` (0 = no bound). */
  check(bytesMax: number, storageFull: boolean): boolean {
    const bytes = this.bytes();
    const full = storageFull || (bytesMax > 0 && bytes >= bytesMax);
    if (full !== this.wasFull) {
      this.wasFull = full;
      for (const listener of this.listeners) listener({ full, bytes, bytesMax, filesystem: storageFull });
    }
    return full;
  }

  onChange(listener: (state: DiskState) => void) {
    this.listeners.push(listener);
  }

  private refreshSoon() {
    if (this.sampling || Date.now() - this.sample.atMs < diskSampleMs) return;
    this.sampling = this.refresh()
      .catch(() => {}) // The store's own errors surface on its writes.
      .finally(() => (this.sampling = null));
  }
}
