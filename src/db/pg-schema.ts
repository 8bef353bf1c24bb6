/**
 * The Postgres mirror of the mappings. It holds what a chroma-lb with an empty DATA_DIR
 * needs to restore its collection ids; the log itself stays local.
 */
import { bigint, bigserial, customType, index, integer, pgTable, primaryKey, text, uniqueIndex } from "drizzle-orm/pg-core";

/** Raw bytes (a request body exactly as the client sent it). */
const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({ dataType: () => "bytea" });

export const mirrorCollections = pgTable("chroma_lb_collections", {
  id: text("id").primaryKey(),
  tenant: text("tenant").notNull(),
  database: text("database").notNull(),
  name: text("name").notNull(),
  status: text("status").notNull(),
  createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
  updatedAtMs: bigint("updated_at_ms", { mode: "number" }).notNull(),
});

export const mirrorCollectionInstances = pgTable(
  "chroma_lb_collection_instances",
  {
    collectionId: text("collection_id").notNull(),
    instance: text("instance").notNull(),
    instanceUuid: text("instance_uuid").notNull(),
    updatedAtMs: bigint("updated_at_ms", { mode: "number" }).notNull(),
  },
  (table) => [primaryKey({ columns: [table.collectionId, table.instance] })],
);

/*
 * The log in Postgres (LOG_STORE=postgres): the same tables as the SQLite log (see
 * sqlite-schema.ts), and the mappings above are then the only copy, not a mirror.
 */

/** The write-ahead log; `seq` comes from a sequence, so the head never goes back. */
export const pgWalEntries = pgTable(
  "chroma_lb_wal_entries",
  {
    seq: bigserial("seq", { mode: "number" }).primaryKey(),
    createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
    partition: text("partition").notNull(),
    kind: text("kind").notNull(),
    op: text("op").notNull(),
    tenant: text("tenant").notNull(),
    database: text("database").notNull(),
    collectionId: text("collection_id"),
    name: text("name"),
    bodyBytes: integer("body_bytes").notNull(),
    state: text("state").notNull(),
    appliedBy: text("applied_by"),
  },
  (table) => [index("chroma_lb_wal_entries_partition").on(table.partition, table.seq), index("chroma_lb_wal_entries_created").on(table.createdAtMs)],
);

/** Request bodies of log entries, apart from the entries (see walBodies in sqlite-schema.ts). */
export const pgWalBodies = pgTable("chroma_lb_wal_bodies", {
  seq: bigint("seq", { mode: "number" }).primaryKey(),
  body: bytea("body").notNull(),
});

/** An entry an instance has yet to apply; removed once applied. */
export const pgWalPending = pgTable(
  "chroma_lb_wal_pending",
  {
    instance: text("instance").notNull(),
    seq: bigint("seq", { mode: "number" }).notNull(),
    partition: text("partition").notNull(),
    kind: text("kind").notNull(),
    attempts: integer("attempts").notNull().default(0),
    lastError: text("last_error"),
    lastAttemptAtMs: bigint("last_attempt_at_ms", { mode: "number" }),
  },
  (table) => [
    primaryKey({ columns: [table.instance, table.seq] }),
    index("chroma_lb_wal_pending_partition").on(table.instance, table.partition, table.seq),
    index("chroma_lb_wal_pending_seq").on(table.seq),
    index("chroma_lb_wal_pending_kind").on(table.instance, table.kind, table.seq),
  ],
);

/** Divergence and repair marks, one per (instance, partition). */
export const pgWalDiverged = pgTable(
  "chroma_lb_wal_diverged",
  {
    instance: text("instance").notNull(),
    partition: text("partition").notNull(),
    seq: bigint("seq", { mode: "number" }).notNull(),
    op: text("op").notNull(),
    error: text("error").notNull(),
    refusedEntries: integer("refused_entries").notNull().default(1),
    atMs: bigint("at_ms", { mode: "number" }).notNull(),
  },
  (table) => [primaryKey({ columns: [table.instance, table.partition] })],
);

/**
 * Access tokens of the data API, for nodes that keep their state in Postgres: the same
 * columns as SQLite's `access_tokens` (see sqlite-schema.ts), shared by every node.
 */
export const accessTokens = pgTable(
  "chroma_lb_access_tokens",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    role: text("role").notNull(),
    tenants: text("tenants").notNull(),
    databases: text("databases").notNull(),
    hash: text("hash").notNull(),
    createdAtMs: bigint("created_at_ms", { mode: "number" }).notNull(),
    revokedAtMs: bigint("revoked_at_ms", { mode: "number" }),
  },
  (table) => [uniqueIndex("chroma_lb_access_tokens_hash").on(table.hash)],
);
