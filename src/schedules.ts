/**
 * Every background job, scheduled with croner in one place. Each job calls one bounded
 * `xxxOnce()` step; `protect` keeps a slow run from overlapping the next.
 * Croner fires on whole seconds, so intervals are rounded up to at least one second;
 * replay does not wait for its schedule (every write starts it), the schedule is a safety net.
 */
import { Cron } from "croner";
import { tokenRefreshIntervalMs } from "./auth/access";
import { alertsOnce } from "./observability/alerts";
import { BatchSizer } from "./replay/sizing";
import type { Services } from "./services";

export type ScheduleDeps = Pick<Services, "config" | "log" | "registry" | "replayer" | "sizer" | "wal" | "adoption" | "mirror" | "consistency" | "alerter" | "resyncer" | "access" | "cluster"> &
  Partial<Pick<Services, "replication">>;

function everySeconds(ms: number): { pattern: string; interval: number } {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  return { pattern: "* * * * * *", interval: seconds };
}

export function startSchedules(deps: ScheduleDeps): { stop(): void } {
  const jobs: Cron[] = [];
  /** `firstAfterInterval`: the first run waits one interval instead of starting at once. */
  const job = (name: string, everyMs: number, fn: () => unknown, options: { firstAfterInterval?: boolean } = {}) => {
    const { pattern, interval } = everySeconds(everyMs);
    const startAt = options.firstAfterInterval ? new Date(Date.now() + everyMs) : undefined;
    jobs.push(
      // No croner `name`: croner keeps named jobs in one process-wide registry, which would
      // stop two chroma-lb servers (tests build them side by side) from sharing a process.
      new Cron(pattern, { protect: true, interval, startAt, catch: (error) => deps.log.error("scheduled job failed", { job: name, error: String(error) }) }, async () => {
        await fn();
      }),
    );
  };
  job("health-check", deps.config.healthCheckIntervalMs, () => deps.registry.checkAll());
  // Tokens made or revoked by another node or by `bun run token` hold here within two runs.
  job("token-refresh", tokenRefreshIntervalMs, () => deps.access.refreshOnce());
  job("replay", deps.config.walSyncIntervalMs, async () => {
    // State changes the log could not record (a full disk) hold back their collections: retry them first.
    await deps.wal.resolveOnce();
    deps.replayer.kickAll();
  });
  // An unreachable log store is probed each second: writes resume at its first answer.
  job("log-store-probe", 1_000, async () => {
    if (deps.wal.storeUnreachable && (await deps.wal.probeOnce())) {
      deps.log.warn("the log store answers again; writes are taken");
      deps.replayer.kickAll();
    }
  });
  job("memory-sample", deps.config.memorySampleIntervalMs, () => deps.sizer.observe(BatchSizer.sampleProcess()));
  job("adoption", 60_000, () => deps.adoption.adoptOnce());
  job("wal-retention", 3600_000, async () => {
    const result = await deps.wal.cleanup(deps.config.walRetentionMs);
    if (result.deletedEntries) deps.log.info("log retention", { deletedEntries: result.deletedEntries });
  });
  // With several nodes, a repair pass and a scheduled check run on one node at a time (cluster/jobs.ts).
  const once = <T>(kind: string, progress: () => unknown, fn: () => Promise<T>) => (deps.cluster ? deps.cluster.jobs.run(kind, "*", progress, fn) : fn());
  if (deps.config.autoRepair) job("repair", 5_000, () => once("repair", () => deps.resyncer.active(), () => deps.resyncer.repairOnce()));
  if (deps.config.consistencyCheckIntervalMs > 0) {
    // Not at start: the instances are catching up then, and the check would mostly wait.
    job("consistency-check", deps.config.consistencyCheckIntervalMs, () => once("consistency", () => deps.consistency.progress, () => deps.consistency.checkOnce()), { firstAfterInterval: true });
  }
  for (const clusterJob of deps.cluster?.backgroundJobs() ?? []) job(clusterJob.name, clusterJob.everyMs, clusterJob.run);
  // Lag, backlog, memory, disk and mirror alerts, and held-back alerts whose interval is over.
  job("alert-check", deps.config.alertCheckIntervalMs, () => alertsOnce(deps));
  if (deps.mirror) {
    const mirror = deps.mirror;
    job("mirror-sync", deps.config.mirrorSyncIntervalMs, () => mirror.syncOnce());
  }
  // Several nodes: replay leases, view reloads, orphaned entries (cluster/replication.ts).
  for (const replication of deps.replication?.jobs() ?? []) job(replication.name, replication.everyMs, replication.run);
  return {
    stop() {
      for (const j of jobs) j.stop();
    },
  };
}
