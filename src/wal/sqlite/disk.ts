/** The SQLite log's size on disk. */
import { statSync } from "node:fs";
import type { SqliteLogContext } from "./statements";

/**
 * `bytes`: the pages of the database in use, committed ones still in the -wal file
 * included. Pages freed by retention or cleanup are reused by later appends before the file
 * grows, so they do not count (the files themselves never shrink: `fileBytes`).
 */
export function size(ctx: SqliteLogContext): { bytes: number; fileBytes: number } {
  const { sqlite, path } = ctx.local;
  const pragma = (name: string) => (sqlite.query(`PRAGMA ${name}`).get() as Record<string, number>)[name] ?? 0;
  const bytes = (pragma("page_count") - pragma("freelist_count")) * pragma("page_size");
  const fileSize = (file: string) => {
    try {
      return statSync(file).size;
    } catch {
      return 0; // No -wal file between connections.
    }
  };
  return { bytes, fileBytes: fileSize(path) + fileSize(`${path}-wal`) };
}
