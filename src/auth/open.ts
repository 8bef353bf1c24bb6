/**
 * Which TokenStore a process uses: the one beside its log. chroma-lb and `bun run token`
 * both open it here, so the command writes exactly where the server reads.
 */
import type { LocalStore } from "../db";
import { SqliteTokenStore, type TokenStore } from "./token-store";

/**
 * The log lives in DATA_DIR's SQLite file, so tokens do too. (A node whose log is in
 * Postgres would answer a PostgresTokenStore over the same database here.)
 */
export function openTokenStore(local: LocalStore): TokenStore {
  return new SqliteTokenStore(local);
}
