/**
 * The cluster's two tables in Postgres: the node registry and the replay leases.
 *
 * They are created here with idempotent DDL, not by a drizzle migration, because the
 * Postgres store (which owns drizzle's pg migrations) is being built at the same time; once
 * it lands these statements move into a drizzle-kit migration and this file shrinks to the
 * table definitions. Every statement is safe to run on every start of every node.
 *
 * Leases are rows with an expiry, never advisory locks: a session advisory lock lives on one
 * connection, and a transaction-pooling PgBouncer hands connections to other clients between
 * transactions, so the lock would be held by whoever gets the connection next (or released
 * behind our back). Rows with an expiry work through any pooler and survive a reconnect.
 */
import type postgres from "postgres";

/** Table and sequence names, shared by the SQL of this folder. */
export const clusterTables = {
  nodes: "chroma_lb_nodes",
  leases: "chroma_lb_replay_leases",
} as const;

/**
 * Two nodes starting together would both run CREATE TABLE IF NOT EXISTS, and Postgres can
 * then fail one of them on the catalog's unique index (IF NOT EXISTS checks before it
 * inserts). A transaction-scoped advisory lock serializes them; it ends with the transaction,
 * so unlike a session lock it is safe behind a transaction-pooling PgBouncer.
 */
const schemaLockKey = 0x63_6c_62_31; // "clb1"

const statements = [
  `CREATE TABLE IF NOT EXISTS ${clusterTables.nodes} (
     id text PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 128),
     address text NOT NULL,
     incarnation uuid NOT NULL,
     started_at timestamptz NOT NULL,
     last_heartbeat_at timestamptz NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS ${clusterTables.leases} (
     instance text NOT NULL,
     collection text NOT NULL,
     node_id text NOT NULL,
     token bigint NOT NULL,
     acquired_at timestamptz NOT NULL,
     -- '-infinity' once released; the row stays, so the next holder's token is still one
     -- more than the last one (a deleted row would start again from 1).
     expires_at timestamptz NOT NULL,
     PRIMARY KEY (instance, collection)
   )`,
  `CREATE INDEX IF NOT EXISTS ${clusterTables.leases}_node_idx ON ${clusterTables.leases} (node_id)`,
];

/** Creates the cluster's tables when they are missing; safe to run concurrently from several nodes. */
export async function ensureClusterSchema(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${schemaLockKey})`;
    for (const statement of statements) await tx.unsafe(statement);
  });
}
