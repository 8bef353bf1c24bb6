/**
 * chroma-lb's tables in Postgres: the mappings (the mirror of a SQLite node, or the
 * mappings themselves with LOG_STORE=postgres), the log store, the access tokens, and the
 * tables the nodes of a cluster share. drizzle-kit writes the migrations in drizzle/pg from
 * this file (`bun run db:generate`).
 */
import { sql } from "drizzle-orm";
import { bigint, bigserial, check, customType, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex, uuid } from "drizzle-orm/pg-core";

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

// The tables the nodes of a cluster share (src/cluster/). Leases are rows with an expiry,
// never advisory locks: a session lock lives on one connection, which a transaction-pooling
// PgBouncer hands to other clients between transactions.

const at = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });

/** The live nodes, each with its heartbeat. */
export const clusterNodes = pgTable(
  "chroma_lb_nodes",
  {
    id: text("id").primaryKey(),
    address: text("address").notNull(),
    incarnation: uuid("incarnation").notNull(),
    startedAt: at("started_at").notNull(),
    lastHeartbeatAt: at("last_heartbeat_at").notNull(),
  },
  (table) => [check("chroma_lb_nodes_id_length", sql`char_length(${table.id}) BETWEEN 1 AND 128`)],
);

/** One replay lease per (instance, collection). */
export const replayLeases = pgTable(
  "chroma_lb_replay_leases",
  {
    instance: text("instance").notNull(),
    collection: text("collection").notNull(),
    nodeId: text("node_id").notNull(),
    token: bigint("token", { mode: "number" }).notNull(),
    acquiredAt: at("acquired_at").notNull(),
    // '-infinity' once released; the row stays, so the next holder's token is still one more
    // than the last one (a deleted row would start again from 1).
    expiresAt: at("expires_at").notNull(),
  },
  (table) => [primaryKey({ columns: [table.instance, table.collection] }), index("chroma_lb_replay_leases_node_idx").on(table.nodeId)],
);

/** Maintenance and simulated-outage switches, one row per (instance, kind) while it holds. */
export const clusterSwitches = pgTable(
  "chroma_lb_switches",
  {
    instance: text("instance").notNull(),
    kind: text("kind").notNull(),
    // When a simulated outage ends; null holds until ended. Maintenance has none.
    until: at("until"),
    setBy: text("set_by").notNull(),
    setAt: at("set_at").notNull(),
  },
  (table) => [primaryKey({ columns: [table.instance, table.kind] }), check("chroma_lb_switches_kind", sql`${table.kind} IN ('maintenance', 'simulation')`)],
);

/** Operations run once in the cluster (resync, consistency check, repair pass) and their progress. */
export const clusterJobs = pgTable(
  "chroma_lb_jobs",
  {
    kind: text("kind").notNull(),
    scope: text("scope").notNull(),
    nodeId: text("node_id").notNull(),
    state: text("state").notNull(),
    progress: jsonb("progress"),
    startedAt: at("started_at").notNull(),
    heartbeatAt: at("heartbeat_at").notNull(),
    finishedAt: at("finished_at"),
  },
  (table) => [primaryKey({ columns: [table.kind, table.scope] }), check("chroma_lb_jobs_state", sql`${table.state} IN ('running', 'done', 'failed')`)],
);

/** The last alert status posted per key, so that one alert is posted once for the cluster. */
export const alertsPosted = pgTable(
  "chroma_lb_alerts_posted",
  {
    event: text("event").notNull(),
    instance: text("instance").notNull(),
    collection: text("collection").notNull(),
    status: text("status").notNull(),
    nodeId: text("node_id").notNull(),
    postedAt: at("posted_at").notNull(),
  },
  (table) => [primaryKey({ columns: [table.event, table.instance, table.collection] })],
);

/**
 * Requests an apply-lock holder may still have on the wire: one row per (apply lock, holding
 * transaction), written outside that transaction before its first request and kept until
 * every request it sent has timed out. When the holder's transaction ends without
 * committing (its node killed, or cut from Postgres, which frees the lock at once), the row
 * stays, and the next holder sends nothing to that (instance, collection) until `until`:
 * a request of the vanished holder could otherwise land after the next holder's newer ones.
 */
export const applySends = pgTable(
  "chroma_lb_apply_sends",
  {
    lockKey: text("lock_key").notNull(),
    // pg_current_xact_id() of the holding transaction, as text (xid8).
    xid: text("xid").notNull(),
    nodeId: text("node_id").notNull(),
    until: at("until").notNull(),
  },
  (table) => [primaryKey({ columns: [table.lockKey, table.xid] }), index("chroma_lb_apply_sends_until_idx").on(table.until)],
);
