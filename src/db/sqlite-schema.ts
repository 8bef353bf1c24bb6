/**
 * chroma-lb's own state in SQLite: the write-ahead log, each instance's pending entries,
 * and the logical collection ids with their per-instance UUIDs.
 */
import { sql } from "drizzle-orm";
import { blob, index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

/** One logical collection: the id clients see, whichever instance serves them. */
export const collections = sqliteTable(
  "collections",
  {
    id: text("id").primaryKey(),
    tenant: text("tenant").notNull(),
    database: text("database").notNull(),
    name: text("name").notNull(),
    /** `active` or `deleted`; deleted rows stay as tombstones so the mirror learns of deletes. */
    status: text("status").notNull().default("active"),
    createdAtMs: integer("created_at_ms").notNull(),
    updatedAtMs: integer("updated_at_ms").notNull(),
  },
  (table) => [
    uniqueIndex("collections_active_name").on(table.tenant, table.database, table.name).where(sql`status = 'active'`),
    index("collections_updated").on(table.updatedAtMs),
  ],
);

/** The UUID under which one instance knows a logical collection. */
export const collectionInstances = sqliteTable(
  "collection_instances",
  {
    collectionId: text("collection_id").notNull(),
    instance: text("instance").notNull(),
    instanceUuid: text("instance_uuid").notNull(),
    updatedAtMs: integer("updated_at_ms").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.collectionId, table.instance] }),
    index("collection_instances_uuid").on(table.instanceUuid),
    index("collection_instances_updated").on(table.updatedAtMs),
  ],
);

/**
 * The write-ahead log. `partition` orders entries: one per logical collection, plus `meta`
 * for tenants and databases. `state` is `new` while the write target is applying it, `ready`
 * once it may be replayed everywhere, `rejected` when no instance may apply it.
 */
export const walEntries = sqliteTable(
  "wal_entries",
  {
    seq: integer("seq").primaryKey({ autoIncrement: true }),
    createdAtMs: integer("created_at_ms").notNull(),
    partition: text("partition").notNull(),
    kind: text("kind").notNull(),
    op: text("op").notNull(),
    tenant: text("tenant").notNull(),
    database: text("database").notNull(),
    collectionId: text("collection_id"),
    /** For collection operations: the collection's name when the entry was written. */
    name: text("name"),
    /** Size of the request body, kept in wal_bodies. */
    bodyBytes: integer("body_bytes").notNull(),
    state: text("state").notNull(),
    /** The instance whose answer went back to the client, if any. */
    appliedBy: text("applied_by"),
  },
  (table) => [index("wal_entries_partition").on(table.partition, table.seq), index("wal_entries_created").on(table.createdAtMs)],
);

/**
 * Request bodies of log entries, apart from the entries themselves: bodies run to hundreds
 * of kilobytes, and kept in the entry row they would make every look-up of its state walk
 * overflow pages, and every state change rewrite the whole row.
 */
export const walBodies = sqliteTable("wal_bodies", {
  seq: integer("seq").primaryKey(),
  body: blob("body", { mode: "buffer" }).notNull(),
});

/** An entry an instance has yet to apply. A row is removed once the instance has applied it. */
export const walPending = sqliteTable(
  "wal_pending",
  {
    instance: text("instance").notNull(),
    seq: integer("seq").notNull(),
    partition: text("partition").notNull(),
    kind: text("kind").notNull(),
    attempts: integer("attempts").notNull().default(0),
    lastError: text("last_error"),
    lastAttemptAtMs: integer("last_attempt_at_ms"),
  },
  (table) => [
    primaryKey({ columns: [table.instance, table.seq] }),
    index("wal_pending_partition").on(table.instance, table.partition, table.seq),
    index("wal_pending_seq").on(table.seq),
    // Barrier checks look for the first owed entry of some kinds.
    index("wal_pending_kind").on(table.instance, table.kind, table.seq),
  ],
);

/**
 * A collection that an instance no longer holds exactly as the others do: the instance
 * refused an entry that another instance applied. One row per (instance, partition), with
 * the first refused entry; later entries still replay. Repair clears the row.
 */
export const walDiverged = sqliteTable(
  "wal_diverged",
  {
    instance: text("instance").notNull(),
    partition: text("partition").notNull(),
    /** The first entry the instance refused. */
    seq: integer("seq").notNull(),
    op: text("op").notNull(),
    error: text("error").notNull(),
    /** Entries of the partition refused by the instance since it diverged. */
    refusedEntries: integer("refused_entries").notNull().default(1),
    atMs: integer("at_ms").notNull(),
  },
  (table) => [primaryKey({ columns: [table.instance, table.partition] })],
);

/** Small settings and watermarks (the mirror's last synced time). */
export const kv = sqliteTable("kv", {
  key: text("key").primaryKey(),
  value: text("value").notNull(),
});

/**
 * Access tokens of the data API (src/auth). Only a SHA-256 hash of each secret is kept; a
 * revoked token keeps its row (`revoked_at_ms` set) so that "who held it" stays answerable
 * and so that the data API, once closed by a first token, never opens again by revoking.
 */
export const accessTokens = sqliteTable(
  "access_tokens",
  {
    id: text("id").primaryKey(),
    /** The principal: who holds the token (audit, metrics). */
    name: text("name").notNull(),
    /** `read`, `write` or `admin`. */
    role: text("role").notNull(),
    /** JSON array of tenant names, or `["*"]`. */
    tenants: text("tenants").notNull(),
    /** JSON array of database names, or `["*"]`. */
    databases: text("databases").notNull(),
    /** Hex SHA-256 of the secret. */
    hash: text("hash").notNull(),
    createdAtMs: integer("created_at_ms").notNull(),
    revokedAtMs: integer("revoked_at_ms"),
  },
  (table) => [uniqueIndex("access_tokens_hash").on(table.hash)],
);
