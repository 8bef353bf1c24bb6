/** Retention of the SQLite log: what every instance has applied goes after a while. */
import type { SqliteLogContext } from "./statements";

/** An entry any instance still owes, or one never answered, is never removed. */
export function cleanup(ctx: SqliteLogContext, maxAgeMs: number): { deletedEntries: number } {
  const { sqlite } = ctx.local;
  const cutoff = Date.now() - maxAgeMs;
  const deletedEntries = sqlite.transaction(() => {
    const result = sqlite.run(
      `DELETE FROM wal_entries WHERE created_at_ms <= ? AND state != 'new'
         AND NOT EXISTS (SELECT 1 FROM wal_pending p WHERE p.seq = wal_entries.seq)`,
      [cutoff],
    );
    sqlite.run(`DELETE FROM wal_bodies WHERE NOT EXISTS (SELECT 1 FROM wal_entries e WHERE e.seq = wal_bodies.seq)`);
    return result.changes;
  })();
  return { deletedEntries };
}

/** Wipes the log (reset, after every instance was reset). sqlite_sequence keeps the head. */
export function clear(ctx: SqliteLogContext) {
  const { sqlite } = ctx.local;
  sqlite.transaction(() => {
    for (const table of ["wal_pending", "wal_bodies", "wal_entries", "wal_diverged"]) sqlite.run(`DELETE FROM ${table}`);
  })();
}
