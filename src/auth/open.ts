/**
 * Which TokenStore a process uses: the one beside its log. chroma-lb and `bun run token`
 * both open it here, so the command writes exactly where the server reads.
 */
import type { LocalStore, MirrorDb } from "../db";
import { PostgresTokenStore, SqliteTokenStore, type TokenStore } from "./token-store";

/**
 * Tokens live where the log lives: in DATA_DIR's SQLite file by default; with
 * LOG_STORE=postgres (`pg` given), in that database (`chroma_lb_access_tokens`), so every
 * node of a cluster and the command share one set of tokens.
 */
export function openTokenStore(local: LocalStore, pg: MirrorDb | null = null): TokenStore {
  return pg ? new PostgresTokenStore(pg) : new SqliteTokenStore(local);
}
