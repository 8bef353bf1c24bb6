/**
 * The Postgres mirror of the mappings. It holds what a chroma-lb with an empty DATA_DIR
 * needs to restore its collection ids; the log itself stays local.
 */
import { bigint, pgTable, primaryKey, text, uniqueIndex } from "drizzle-orm/pg-core";

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
