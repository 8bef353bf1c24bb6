/**
 * The file system under the log: telling "the disk is full" apart from other failures, and
 * the spare file that keeps room for the log's own bookkeeping once it is.
 *
 * Why a spare file: in WAL journal mode SQLite writes every change, deletes included, to its
 * -wal file first, and a checkpoint may have to grow the main file. On a full file system
 * nothing can be written at all, so without room kept aside an entry's state could not be
 * recorded after its append, and POST /wal/cleanup could not remove anything (measured: an
 * 8 MiB tmpfs filled by appends answers SQLITE_FULL to a one-row DELETE and to a checkpoint).
 * chroma-lb writes the spare file at start; when the log meets a full file system it deletes
 * the file, refuses new writes (507), and spends the room on state changes, replay
 * bookkeeping and cleanup. New writes are taken again once the spare file could be written
 * back whole (the file system has that much room again).
 *
 * This is the only place that knows what "full" looks like; a Postgres store of the log
 * would add its own code (53100 disk_full) to `isStorageFullError`.
 */
import { closeSync, openSync, statSync, statfsSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

/** SQLite's "database or disk is full", and the system's ENOSPC / EDQUOT (quota). */
export function isStorageFullError(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const code = (error as { code?: unknown }).code;
  if (code === "SQLITE_FULL" || code === "ENOSPC" || code === "EDQUOT") return true;
  // SQLite reports a failed write of its shared-memory index (-shm) as an I/O error.
  if (code === "SQLITE_IOERR_SHMSIZE") return true;
  const message = (error as { message?: unknown }).message;
  return typeof message === "string" && /database or disk is full|no space left on device/i.test(message);
}

/** Raised instead of touching the log while the file system under it is full. */
export class StorageFullError extends Error {
  readonly code = "SQLITE_FULL";
  constructor(message = "the file system holding the write-ahead log is full") {
    super(message);
    this.name = "StorageFullError";
  }
}

/** Bytes written per call while the spare file is made (bounded memory). */
const reserveChunkBytes = 256 * 1024;

/**
 * The spare file kept next to the log (DATA_DIR/chroma-lb.reserve), WAL_DISK_RESERVE_MB big.
 * Its bytes are real data, not a sparse hole, so the file system has truly set them aside.
 */
export class StorageReserve {
  readonly path: string;
  private present = false;

  constructor(
    dataDir: string,
    readonly bytes: number,
  ) {
    this.path = join(dataDir, "chroma-lb.reserve");
  }

  /** Whether the spare file is in place (false after `release`, until `restore` succeeds). */
  get held(): boolean {
    return this.present || this.bytes === 0;
  }

  /**
   * Writes the spare file whole; false (and no partial file) when the file system has not
   * that much room. Checks the free space first, so a full disk costs no failed write.
   */
  restore(): boolean {
    if (this.bytes === 0 || this.present) return true;
    // Left whole by an earlier run: kept as it is.
    if (this.existingBytes() === this.bytes) {
      this.present = true;
      return true;
    }
    try {
      // A spare file left by an earlier run is rewritten, so its own bytes count as room.
      const stats = statfsSync(join(this.path, ".."));
      if (stats.bavail * stats.bsize + this.existingBytes() < this.bytes) return false;
    } catch {
      // No statfs on this system: try the write itself.
    }
    let fd: number | null = null;
    try {
      fd = openSync(this.path, "w");
      const chunk = Buffer.alloc(Math.min(reserveChunkBytes, this.bytes), 0x5a);
      for (let written = 0; written < this.bytes; ) {
        written += writeSync(fd, chunk, 0, Math.min(chunk.byteLength, this.bytes - written));
      }
      closeSync(fd);
      fd = null;
      this.present = true;
      return true;
    } catch {
      if (fd !== null) closeSync(fd);
      this.removeFile();
      return false;
    }
  }

  /** Deletes the spare file, giving its room to the log; true when there was one to give. */
  release(): boolean {
    if (!this.present) return false;
    this.present = false;
    this.removeFile();
    return true;
  }

  private existingBytes(): number {
    try {
      return statSync(this.path).size;
    } catch {
      return 0;
    }
  }

  private removeFile() {
    try {
      unlinkSync(this.path);
    } catch {
      // Already gone.
    }
  }
}
