/**
 * The names of the cluster's tables in Postgres, for the SQL of this folder: the node
 * registry, the replay leases, the cluster-wide switches, the operations run once in the
 * cluster, and the alerts posted. The tables themselves are defined in src/db/pg-schema.ts
 * and made by its drizzle migrations (drizzle/pg/0003_cluster.sql), applied when the
 * Postgres store opens.
 */
import { getTableName } from "drizzle-orm";
import { alertsPosted, clusterJobs, clusterNodes, clusterSwitches, replayLeases } from "../db/pg-schema";

export const clusterTables = {
  nodes: getTableName(clusterNodes),
  leases: getTableName(replayLeases),
  switches: getTableName(clusterSwitches),
  jobs: getTableName(clusterJobs),
  alertsPosted: getTableName(alertsPosted),
} as const;
