/**
 * What chroma-lb's own endpoints answer, built from the services: the instances, the log,
 * the mappings, the figures in JSON, and the cluster's nodes. The routes are in routes.ts.
 */
import type { CollectionStore } from "../collections/store";
import type { Instance, InstanceState } from "../instances/registry";
import type { Services } from "../services";

export type AdminDeps = Pick<
  Services,
  "config" | "log" | "wal" | "collections" | "registry" | "replayer" | "sizer" | "adoption" | "mirror" | "writes" | "startedAtMs" | "inflight" | "consistency" | "resyncer" | "metrics" | "events" | "access" | "cluster"
>;

/** How long /health, /status and /metrics wait for the log store's counts before saying null. */
const storeCountsTimeoutMs = 1_000;

export const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
export const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;

function instanceState(instance: Instance, pendingEntries: number): InstanceState {
  if (instance.maintenance) return "maintenance";
  if (!instance.healthy) return "down";
  return instance.catchingUp && pendingEntries > 0 ? "catching_up" : "healthy";
}

/** The views of the admin and status endpoints, over `deps`. */
export function adminViews(deps: AdminDeps) {
  const { config, wal, registry, collections, replayer, sizer } = deps;

  const divergenceView = (d: ReturnType<typeof wal.divergences>[number]) => {
    const record = collections.get(d.partition);
    return {
      instance: d.instance,
      collection_id: d.partition,
      collection_name: record?.name ?? null,
      tenant: record?.tenant ?? null,
      database: record?.database ?? null,
      first_refused_position: d.seq,
      op: d.op,
      error: d.error,
      refused_entries: d.refusedEntries,
      since: iso(d.atMs),
      // A copy being rebuilt (a manual or automatic resync, or waiting for one) is kept out
      // of use like a diverged one, but it is being repaired: operators see the difference.
      state: wal.isUnderRepair(d.instance, d.partition) ? "under_repair" : "diverged",
    };
  };

  const instanceView = (i: Instance) => {
    const lag = wal.lag(i.name);
    return {
      name: i.name,
      url: i.url,
      role: i.priority === 0 ? "primary" : "replica",
      state: instanceState(i, lag.entries),
      healthy: i.healthy,
      serving: i.serving,
      maintenance: i.maintenance,
      priority: i.priority,
      consecutive_failures: i.consecutiveFailures,
      total_requests: i.totalRequests,
      successful_requests: i.successfulRequests,
      success_rate: Math.round(i.successRate * 1000) / 10,
      in_flight: i.client.inFlight,
      last_health_check: iso(i.lastHealthCheckMs),
      last_error: i.lastError,
      last_error_at: iso(i.lastErrorAtMs),
      /** Since when probes have seen it up (null while down): a last error older than this is history. */
      healthy_since: i.checkedHealthy ? iso(i.lastTransitionMs) : null,
      simulated: i.simulated ? { healthy: false, until: iso(i.simulated.untilMs) } : null,
      /** What probes see, whatever a simulation does to routing. */
      probe_healthy: i.checkedHealthy,
      lag: { entries: lag.entries, seconds: Math.round(lag.oldestAgeMs / 100) / 10, failing_entries: lag.failing, last_replay_error: lag.lastError },
      diverged_collections: wal.divergences().filter((d) => d.instance === i.name).map(divergenceView),
    };
  };

  const healthyCount = () => registry.all.filter((i) => i.healthy).length;

  /**
   * The log's counts, or nulls when the log store does not answer within a second
   * (LOG_STORE=postgres while Postgres is down): /health, /status and /metrics must keep
   * answering what chroma-lb knows then, above all whether an instance serves.
   */
  const storeCounts = async (): Promise<{ total: number | null; pendingEntries: number | null; rejected: number | null }> => {
    const unknown = { total: null, pendingEntries: null, rejected: null };
    if (wal.storeUnreachable) return unknown;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const counting = wal.counts();
    // Given up on at the bound, it may still fail later: that failure is expected.
    counting.catch(() => {});
    try {
      return await Promise.race([counting, new Promise<typeof unknown>((resolve) => (timer = setTimeout(() => resolve(unknown), storeCountsTimeoutMs)))]);
    } catch {
      return unknown;
    } finally {
      clearTimeout(timer);
    }
  };

  const walStatus = async () => {
    const counts = await storeCounts();
    const lag = replayer.stats.lagPercentiles();
    return {
      head_position: wal.headSeq(),
      total_entries: counts.total,
      pending_writes: counts.pendingEntries,
      rejected_entries: counts.rejected,
      disk_bytes: wal.diskBytes(),
      disk_max_bytes: config.walMaxDiskBytes,
      disk_full: wal.diskFull(config.walMaxDiskBytes),
      // True when the file system under DATA_DIR filled (before WAL_MAX_DISK_MB), until it has room again.
      file_system_full: wal.storageIsFull,
      disk_file_bytes: wal.diskFileBytes(),
      // State changes of logged entries not recorded yet (a full disk); each holds back its collection.
      unresolved_changes: wal.unresolvedChanges(),
      inflight_body_bytes: deps.inflight.bytes,
      inflight_body_max_bytes: deps.inflight.bytesMax,
      inflight_waiting_requests: deps.inflight.waiting,
      inflight_refused_requests: deps.inflight.refusedRequests,
      is_syncing: replayer.isReplaying(),
      sync_interval_seconds: config.walSyncIntervalMs / 1000,
      // The old balancer's names for replayed batches applied and refused (or unanswered).
      successful_syncs: replayer.stats.successfulSyncs,
      failed_syncs: replayer.stats.failedSyncs,
      instances: registry.all.map((i) => {
        const l = wal.lag(i.name);
        return {
          name: i.name,
          healthy: i.healthy,
          pending_entries: l.entries,
          first_pending_position: l.firstSeq,
          position: l.firstSeq === null ? wal.headSeq() : l.firstSeq - 1,
          lag_seconds: Math.round(l.oldestAgeMs / 100) / 10,
          failing_entries: l.failing,
          last_error: l.lastError ?? i.lastError,
        };
      }),
      group_commit: { ...wal.commitStats },
      batches: {
        current_batch_size: sizer.current,
        default_batch_size: config.walDefaultBatchSize,
        max_batch_size: config.walMaxBatchSize,
        max_batch_mb: config.walMaxBatchBytes / 1024 / 1024,
        batches_sent: replayer.stats.batches,
        entries_replayed: replayer.stats.entriesApplied,
      },
      memory: {
        rss_mb: mb(sizer.lastSample.rssBytes),
        heap_used_mb: mb(sizer.lastSample.heapUsedBytes),
        peak_rss_mb: mb(sizer.peakRssBytes),
        max_memory_mb: config.walMaxMemoryMb,
        memory_pressure_events: sizer.memoryPressureEvents,
        adaptive_batch_reductions: sizer.adaptiveBatchReductions,
      },
      replay_lag_ms: lag,
      failed: await wal.failedEntries(20),
      diverged: wal.divergences().map(divergenceView),
      resync: { active: deps.resyncer.active(), recent: deps.resyncer.history.slice(-10) },
    };
  };

  /** The figures of GET /metrics as JSON, for the old balancer's scripts (memory in MB, as it gave). */
  const metricsJson = async () => {
    const cpu = process.cpuUsage();
    const uptimeSeconds = (Date.now() - deps.startedAtMs) / 1000;
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    const counts = await storeCounts();
    return {
      service: "chroma-lb",
      uptime_seconds: Math.round(uptimeSeconds),
      memory_usage_mb: mb(sizer.lastSample.rssBytes),
      peak_memory_mb: mb(sizer.peakRssBytes),
      max_memory_mb: config.walMaxMemoryMb,
      memory_percent: Math.round((sizer.lastSample.rssBytes / (config.walMaxMemoryMb * 1024 * 1024)) * 1000) / 10,
      heap_used_mb: mb(sizer.lastSample.heapUsedBytes),
      cpu_seconds: Math.round(cpuSeconds * 100) / 100,
      /** Average since start: CPU time over wall time, one core = 100. */
      cpu_percent: uptimeSeconds > 0 ? Math.round((cpuSeconds / uptimeSeconds) * 1000) / 10 : 0,
      healthy_instances: healthyCount(),
      total_instances: registry.all.length,
      pending_writes: counts.pendingEntries,
      total_entries: counts.total,
      wal_disk_mb: mb(wal.diskBytes()),
      successful_syncs: replayer.stats.successfulSyncs,
      failed_syncs: replayer.stats.failedSyncs,
      entries_replayed: replayer.stats.entriesApplied,
      avg_sync_throughput: replayer.stats.avgThroughputEntriesPerSecond,
      memory_pressure_events: sizer.memoryPressureEvents,
      adaptive_batch_reductions: sizer.adaptiveBatchReductions,
      current_batch_size: sizer.current,
      instances: registry.all.map((i) => ({
        name: i.name,
        healthy: i.healthy,
        total_requests: i.totalRequests,
        successful_requests: i.successfulRequests,
        pending_entries: wal.lag(i.name).entries,
      })),
    };
  };

  const mappingView = (c: ReturnType<CollectionStore["list"]>[number]) => {
    const instances = Object.fromEntries(c.instanceUuids);
    const missing = registry.all.filter((i) => !c.instanceUuids.has(i.name)).map((i) => i.name);
    return {
      collection_name: c.name,
      collection_id: c.id,
      tenant: c.tenant,
      database: c.database,
      primary_collection_id: c.instanceUuids.get(registry.all[0]?.name ?? "") ?? null,
      replica_collection_id: c.instanceUuids.get(registry.all[1]?.name ?? "") ?? null,
      instances,
      complete: missing.length === 0,
      missing_on: missing,
      created_at: iso(c.createdAtMs),
      updated_at: iso(c.updatedAtMs),
    };
  };

  /**
   * The nodes of the cluster and the operations run once in it (LOG_STORE=postgres); with
   * SQLite chroma-lb is one node, listed alone.
   */
  const clusterView = () => {
    const cluster = deps.cluster;
    if (!cluster) return { node_id: config.nodeId, nodes: [{ id: config.nodeId, address: config.nodeAddress ?? null, last_heartbeat_at: null, leases: 0 }] };
    const { nodes, operations, asOf, error } = cluster.statusView;
    return { node_id: config.nodeId, nodes, cluster_operations: operations, cluster_as_of: asOf, ...(error && { cluster_error: error }) };
  };

  return { instanceView, healthyCount, storeCounts, walStatus, metricsJson, mappingView, clusterView };
}
