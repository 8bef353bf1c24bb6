/**
 * Appending to the SQLite log: one transaction per group (see wal/group-commit.ts), the
 * only commit that waits for the disk.
 */
import type { Entry, NewEntry } from "../types";
import type { SqliteLogContext } from "./statements";

/**
 * Inserts the group's entries, bodies and owed rows in one transaction with
 * synchronous=FULL: in WAL mode its fsync also makes every earlier commit durable (the log
 * file is written in order), so every other change runs with NORMAL and waits for nothing.
 */
export function appendGroup(ctx: SqliteLogContext, group: NewEntry[], nowMs: number): Entry[] {
  const { local, st, instances } = ctx;
  local.sqlite.run("PRAGMA synchronous = FULL");
  try {
    const seqs = local.db.transaction(() => {
      const out: number[] = [];
      for (const entry of group) {
        const row = st.insertEntry.get({
          createdAtMs: nowMs,
          partition: entry.partition,
          kind: entry.kind,
          op: entry.op,
          tenant: entry.tenant,
          database: entry.database,
          collectionId: entry.collectionId,
          name: entry.name,
          bodyBytes: entry.body?.byteLength ?? 0,
        })!;
        if (entry.body) st.insertBody.run({ seq: row.seq, body: Buffer.from(entry.body.buffer, entry.body.byteOffset, entry.body.byteLength) });
        for (const instance of instances) st.insertPending.run({ instance, seq: row.seq, partition: entry.partition, kind: entry.kind });
        out.push(row.seq);
      }
      return out;
    });
    return group.map((entry, i) => ({ ...entry, seq: seqs[i]!, createdAtMs: nowMs, state: "new", appliedBy: null, bodyBytes: entry.body?.byteLength ?? 0 }));
  } finally {
    // Run as text each time, not prepared: SQLite applies this pragma when it compiles the
    // statement, so a prepared one would take effect once, at prepare time.
    local.sqlite.run("PRAGMA synchronous = NORMAL");
  }
}
