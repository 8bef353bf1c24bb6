/**
 * Which TokenStore a process uses: the one beside its log. chroma-lb and `bun run token`
 * both open it here, so the command writes exactly where the server reads.
 */
import type { LocalStore } from "../db";
import { SqliteTokenStore, type TokenStore } from "./token-store";

/**
 * The log lives in DATA_DIR's SQLite file, so tokens do too. When the log can live in
 * Postgres (LOG_STORE=postgres, several nodes sharing it), this answers a PostgresTokenStore
 * over that database instead (its table, `chroma_lb_access_tokens`, is in the pg migrations),
 * so every node and the command share one set of tokens.
 */
export function openTokenStore(local: LocalStore): TokenStore {
  return new SqliteTokenStore(local);
}
