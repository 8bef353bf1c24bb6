/**
 * Where tokens live: one small async interface, so that the SQLite file of a single node
 * and the Postgres database shared by a cluster are interchangeable. Every node reloads the
 * whole set on a short schedule (access.ts), so a token created or revoked on one node is
 * seen by the others within that interval.
 */
import { eq } from "drizzle-orm";
import type { LocalStore, MirrorDb } from "../db";
import { accessTokens as sqliteTokens } from "../db/sqlite-schema";
import { accessTokens as pgTokens } from "../db/pg-schema";
import { isRole, type TokenRecord } from "./tokens";

export interface TokenStore {
  /** Adds a token; its id and hash are unique. */
  create(record: TokenRecord): Promise<void>;
  /** Every token, revoked ones included (with `revokedAtMs`), oldest first. */
  list(): Promise<TokenRecord[]>;
  /** Marks a token revoked; false when no token has that id or it was revoked already. */
  revoke(id: string, atMs: number): Promise<boolean>;
  /** The token whose secret hashes to `hash`, revoked or not. */
  findByHash(hash: string): Promise<TokenRecord | undefined>;
}

type Row = typeof sqliteTokens.$inferSelect;

function toRow(record: TokenRecord): Row {
  return {
    id: record.id,
    name: record.name,
    role: record.role,
    tenants: JSON.stringify(record.tenants),
    databases: JSON.stringify(record.databases),
    hash: record.hash,
    createdAtMs: record.createdAtMs,
    revokedAtMs: record.revokedAtMs,
  };
}

/** A row as a record; a row this version cannot read (unknown role) is dropped, never trusted. */
function fromRow(row: Row): TokenRecord | undefined {
  if (!isRole(row.role)) return undefined;
  const names = (text: string): string[] => {
    const parsed = JSON.parse(text) as unknown;
    return Array.isArray(parsed) ? parsed.filter((n): n is string => typeof n === "string") : [];
  };
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    tenants: names(row.tenants),
    databases: names(row.databases),
    hash: row.hash,
    createdAtMs: row.createdAtMs,
    revokedAtMs: row.revokedAtMs ?? null,
  };
}

const present = (r: TokenRecord | undefined): r is TokenRecord => r !== undefined;

/** Tokens in chroma-lb's local SQLite file (DATA_DIR/chroma-lb.sqlite). */
export class SqliteTokenStore implements TokenStore {
  constructor(private readonly store: LocalStore) {}

  async create(record: TokenRecord): Promise<void> {
    this.store.db.insert(sqliteTokens).values(toRow(record)).run();
  }

  async list(): Promise<TokenRecord[]> {
    return this.store.db.select().from(sqliteTokens).orderBy(sqliteTokens.createdAtMs).all().map(fromRow).filter(present);
  }

  async revoke(id: string, atMs: number): Promise<boolean> {
    const found = this.store.db.select().from(sqliteTokens).where(eq(sqliteTokens.id, id)).get();
    if (!found || found.revokedAtMs !== null) return false;
    this.store.db.update(sqliteTokens).set({ revokedAtMs: atMs }).where(eq(sqliteTokens.id, id)).run();
    return true;
  }

  async findByHash(hash: string): Promise<TokenRecord | undefined> {
    const row = this.store.db.select().from(sqliteTokens).where(eq(sqliteTokens.hash, hash)).get();
    return row ? fromRow(row) : undefined;
  }
}

/** Tokens in Postgres (`chroma_lb_access_tokens`), shared by every node that uses the database. */
export class PostgresTokenStore implements TokenStore {
  constructor(private readonly db: MirrorDb) {}

  async create(record: TokenRecord): Promise<void> {
    await this.db.insert(pgTokens).values(toRow(record));
  }

  async list(): Promise<TokenRecord[]> {
    const rows = await this.db.select().from(pgTokens).orderBy(pgTokens.createdAtMs);
    return rows.map(fromRow).filter(present);
  }

  async revoke(id: string, atMs: number): Promise<boolean> {
    const [found] = await this.db.select().from(pgTokens).where(eq(pgTokens.id, id));
    if (!found || found.revokedAtMs !== null) return false;
    await this.db.update(pgTokens).set({ revokedAtMs: atMs }).where(eq(pgTokens.id, id));
    return true;
  }

  async findByHash(hash: string): Promise<TokenRecord | undefined> {
    const [row] = await this.db.select().from(pgTokens).where(eq(pgTokens.hash, hash));
    return row ? fromRow(row) : undefined;
  }
}
