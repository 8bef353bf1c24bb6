/**
 * Opens chroma-lb's stores: the local SQLite file (always) and the Postgres mirror (when
 * DATABASE_URL is set). Migrations in drizzle/ are applied at open.
 */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { drizzle as drizzleSqlite, type BunSQLiteDatabase } from "drizzle-orm/bun-sqlite";
import { migrate as migrateSqlite } from "drizzle-orm/bun-sqlite/migrator";
import { drizzle as drizzlePg, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import { migrate as migratePg } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import * as sqliteSchema from "./sqlite-schema";
import * as pgSchema from "./pg-schema";

export { sqliteSchema, pgSchema };

const migrationsRoot = join(import.meta.dir, "..", "..", "drizzle");

export type LocalDb = BunSQLiteDatabase<typeof sqliteSchema>;
export type MirrorDb = PostgresJsDatabase<typeof pgSchema>;

export interface LocalStore {
  db: LocalDb;
  sqlite: Database;
  path: string;
  close(): void;
}

/**
 * Opens DATA_DIR/chroma-lb.sqlite in WAL journal mode with synchronous=FULL, so that a
 * committed append survives a crash of the process or of the machine.
 */
export function openLocalStore(dataDir: string): LocalStore {
  mkdirSync(dataDir, { recursive: true });
  const path = join(dataDir, "chroma-lb.sqlite");
  const sqlite = new Database(path, { create: true, strict: true });
  sqlite.run("PRAGMA journal_mode = WAL");
  sqlite.run("PRAGMA synchronous = FULL");
  sqlite.run("PRAGMA busy_timeout = 5000");
  sqlite.run("PRAGMA foreign_keys = ON");
  const db = drizzleSqlite({ client: sqlite, schema: sqliteSchema });
  migrateSqlite(db, { migrationsFolder: join(migrationsRoot, "sqlite") });
  return { db, sqlite, path, close: () => sqlite.close() };
}

export interface MirrorStore {
  db: MirrorDb;
  /** The driver itself, for the log's hot-path statements (wal/postgres): commits wait for the server's disk. */
  sql: postgres.Sql;
  /**
   * A second pool whose commits do not wait for the disk (synchronous_commit=off): for
   * every change but appends, which replay redoes if a crash of the server loses it (as the
   * SQLite log commits them with synchronous=NORMAL).
   */
  relaxed: postgres.Sql;
  close(): Promise<void>;
}

/** The session advisory lock that nodes starting together take turns on to migrate ("clb1"). */
const migrationLockKey = 0x63_6c_62_31;

/**
 * Applies drizzle/pg. drizzle's migrator does not serialize concurrent runs (two nodes of a
 * cluster starting on a new database would both create the first tables, and one would
 * fail), so each run holds a session advisory lock on a connection of its own meanwhile;
 * the next one then finds the migrations applied.
 */
async function migrateSerialized(client: postgres.Sql, db: MirrorDb): Promise<void> {
  const lock = await client.reserve();
  try {
    await lock`select pg_advisory_lock(${migrationLockKey})`;
    try {
      await migratePg(db, { migrationsFolder: join(migrationsRoot, "pg"), migrationsSchema: "chroma_lb_drizzle" });
    } finally {
      await lock`select pg_advisory_unlock(${migrationLockKey})`;
    }
  } finally {
    lock.release();
  }
}

/** Applies drizzle/pg to the database at `databaseUrl` (tests and tools that use the tables without a store). */
export async function migratePostgres(databaseUrl: string): Promise<void> {
  const client = postgresClient(databaseUrl, { max: 2 });
  try {
    await migrateSerialized(client, drizzlePg({ client, schema: pgSchema }));
  } finally {
    await client.end({ timeout: 2 });
  }
}

/**
 * Connects to the Postgres mirror and applies its migrations. Connection errors surface
 * from the first query, so callers treat the mirror as optional and retry later.
 */
export async function openMirrorStore(databaseUrl: string, connectTimeoutSeconds = 5): Promise<MirrorStore> {
  // A commit returns only once it is on the server's disk: the log acknowledges writes by it.
  // Reconnecting at least once a second: writes are taken again soon after Postgres returns
  // (postgres.js would otherwise wait up to 20 s after a long outage).
  const client = postgresClient(databaseUrl, { max: 4, connectTimeoutSeconds, fastReconnect: true });
  const relaxed = postgresClient(databaseUrl, { max: 4, connectTimeoutSeconds, synchronousCommit: "off", fastReconnect: true });
  const db = drizzlePg({ client, schema: pgSchema });
  try {
    await migrateSerialized(client, db);
  } catch (error) {
    await Promise.all([client.end({ timeout: 1 }), relaxed.end({ timeout: 1 })]).catch(() => {});
    throw error;
  }
  return {
    db,
    sql: client,
    relaxed,
    close: async () => {
      await Promise.all([client.end({ timeout: 2 }), relaxed.end({ timeout: 2 })]);
    },
  };
}

/** How often Postgres checks, during a statement, that the client is still connected. */
const clientCheckIntervalMs = 1_000;

/** A postgres.js client as the log store reads and writes with it (commits durable unless told, bigint as number). */
export function postgresClient(
  databaseUrl: string,
  options: { max: number; connectTimeoutSeconds?: number; synchronousCommit?: "on" | "off"; /** Reconnect at least once a second (postgres.js backs off up to 20 s). */ fastReconnect?: boolean },
) {
  return postgres(databaseUrl, {
    max: options.max,
    ...(options.fastReconnect ? { backoff: (retries: number) => Math.min(0.1 * 2 ** retries, 1) } : {}),
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    idle_timeout: 30,
    onnotice: () => {},
    connection: {
      synchronous_commit: options.synchronousCommit ?? "on",
      // A session whose client is gone (a cut network, a killed node) is ended within a
      // second even while it waits for a lock, instead of taking the lock later and holding
      // it, idle, until idle_in_transaction_session_timeout (Postgres 14 or later).
      client_connection_check_interval: clientCheckIntervalMs,
    },
    // Positions and counts are bigint in Postgres, and well within 2^53 here.
    types: { bigint: { to: 20, from: [20], parse: (value: string) => Number(value), serialize: (value: number) => String(value) } },
  });
}
