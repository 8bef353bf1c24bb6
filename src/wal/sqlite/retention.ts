/** Retention of the SQLite log: what every instance has applied goes after a while. */
import type { SqliteLogContext } from "./statements";

/** Entries removed per cleanup transaction. */
const cleanupChunkEntries = 2000;

/**
 * An entry any instance still owes, or one never answered, is never removed. In chunks, each
 * its own transaction followed by a checkpoint that empties the -wal file: a delete is
 * written to the -wal file first, so one transaction over a large log would need about as
 * much free space as it removes, which a full disk does not have. A chunk needs a bounded
 * amount (the spare file covers it, see ../storage.ts).
 */
export function cleanup(ctx: SqliteLogContext, maxAgeMs: number): { deletedEntries: number } {
  const { sqlite } = ctx.local;
  const cutoff = Date.now() - maxAgeMs;
  const chunk = sqlite.query(
    `DELETE FROM wal_entries WHERE seq IN (
       SELECT seq FROM wal_entries WHERE created_at_ms <= ? AND state != 'new'
         AND NOT EXISTS (SELECT 1 FROM wal_pending p WHERE p.seq = wal_entries.seq)
       ORDER BY seq LIMIT ?)
     RETURNING seq`,
  );
  const deleteBodies = sqlite.query(`DELETE FROM wal_bodies WHERE seq IN (SELECT value FROM json_each(?))`);
  let deletedEntries = 0;
  for (let guard = 0; guard < 1_000_000; guard++) {
    const seqs = sqlite.transaction(() => {
      const list = (chunk.all(cutoff, cleanupChunkEntries) as Array<{ seq: number }>).map((r) => r.seq);
      if (list.length) deleteBodies.run(JSON.stringify(list));
      return list;
    })();
    deletedEntries += seqs.length;
    checkpoint(ctx);
    if (seqs.length < cleanupChunkEntries) break;
  }
  // Bodies left without an entry (none are expected; an older version could leave some).
  sqlite.run(`DELETE FROM wal_bodies WHERE NOT EXISTS (SELECT 1 FROM wal_entries e WHERE e.seq = wal_bodies.seq)`);
  checkpoint(ctx);
  return { deletedEntries };
}

/**
 * Copies the -wal file into the database and truncates it, giving its room back to the
 * file system. Best effort: a reader in the way or a full disk leaves it for later.
 */
export function checkpoint(ctx: SqliteLogContext) {
  try {
    ctx.local.sqlite.run("PRAGMA wal_checkpoint(TRUNCATE)");
  } catch {
    // Tried again after the next cleanup or recovery step.
  }
}

/** Wipes the log (reset, after every instance was reset). sqlite_sequence keeps the head. */
export function clear(ctx: SqliteLogContext) {
  const { sqlite } = ctx.local;
  sqlite.transaction(() => {
    for (const table of ["wal_pending", "wal_bodies", "wal_entries", "wal_diverged"]) sqlite.run(`DELETE FROM ${table}`);
  })();
}
