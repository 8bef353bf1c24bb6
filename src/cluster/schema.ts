/**
 * The names of the cluster's tables in Postgres, for the SQL of this folder: the node
 * registry, the replay leases, the cluster-wide switches, the operations run once in the
 * cluster, the alerts posted, and the requests apply-lock holders may still have on the wire. The tables themselves are defined in src/db/pg-schema.ts
 * and made by its drizzle migrations (drizzle/pg/0003_cluster.sql, 0004), applied when the
 * Postgres store opens.
 */
import { getTableName } from "drizzle-orm";
import { alertsPosted, applySends, clusterJobs, clusterNodes, clusterSwitches, replayLeases } from "../db/pg-schema";

export const clusterTables = {
  nodes: getTableName(clusterNodes),
  leases: getTableName(replayLeases),
  switches: getTableName(clusterSwitches),
  jobs: getTableName(clusterJobs),
  alertsPosted: getTableName(alertsPosted),
  applySends: getTableName(applySends),
} as const;
