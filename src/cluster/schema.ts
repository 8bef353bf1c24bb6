/**
 * The cluster's tables in Postgres: the node registry, the replay leases, the cluster-wide
 * switches, the operations run once in the cluster, and the alerts posted.
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
  /** Maintenance and simulated-outage switches, one row per (instance, kind) while it holds. */
  switches: "chroma_lb_switches",
  /** Operations that run once in the cluster (resync, consistency check, repair pass) and their progress. */
  jobs: "chroma_lb_jobs",
  /** The last alert status posted per key, so that one alert is posted once for the cluster. */
  alertsPosted: "chroma_lb_alerts_posted",
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
  `CREATE TABLE IF NOT EXISTS ${clusterTables.switches} (
     instance text NOT NULL,
     kind text NOT NULL CHECK (kind IN ('maintenance', 'simulation')),
     -- When a simulated outage ends; null holds until ended. Maintenance has none.
     until timestamptz,
     set_by text NOT NULL,
     set_at timestamptz NOT NULL,
     PRIMARY KEY (instance, kind)
   )`,
  `CREATE TABLE IF NOT EXISTS ${clusterTables.jobs} (
     kind text NOT NULL,
     scope text NOT NULL,
     node_id text NOT NULL,
     state text NOT NULL CHECK (state IN ('running', 'done', 'failed')),
     progress jsonb,
     started_at timestamptz NOT NULL,
     heartbeat_at timestamptz NOT NULL,
     finished_at timestamptz,
     PRIMARY KEY (kind, scope)
   )`,
  `CREATE TABLE IF NOT EXISTS ${clusterTables.alertsPosted} (
     event text NOT NULL,
     instance text NOT NULL,
     collection text NOT NULL,
     status text NOT NULL,
     node_id text NOT NULL,
     posted_at timestamptz NOT NULL,
     PRIMARY KEY (event, instance, collection)
   )`,
];

/** Creates the cluster's tables when they are missing; safe to run concurrently from several nodes. */
export async function ensureClusterSchema(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${schemaLockKey})`;
    for (const statement of statements) await tx.unsafe(statement);
  });
}
