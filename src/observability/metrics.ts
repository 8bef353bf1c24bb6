/**
 * Prometheus text exposition of chroma-lb's figures (format 0.0.4).
 */
import type { Services } from "../services";

type Sample = [labels: Record<string, string>, value: number];

function family(name: string, help: string, type: "gauge" | "counter", samples: Sample[]): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const [labels, value] of samples) {
    const rendered = Object.entries(labels)
      .map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`)
      .join(",");
    lines.push(`${name}${rendered ? `{${rendered}}` : ""} ${Number.isFinite(value) ? value : 0}`);
  }
  return lines.join("\n");
}

export function renderMetrics(deps: Pick<Services, "registry" | "wal" | "replayer" | "sizer">): string {
  const { registry, wal, replayer, sizer } = deps;
  const divergences = wal.divergences();
  const memory = process.memoryUsage();
  const lag = replayer.stats.lagPercentiles();
  return [
    family("chroma_lb_process_resident_memory_bytes", "Resident memory of the chroma-lb process.", "gauge", [[{}, memory.rss]]),
    family("chroma_lb_process_heap_used_bytes", "JavaScript heap in use.", "gauge", [[{}, memory.heapUsed]]),
    family("chroma_lb_instance_healthy", "1 when the instance is healthy.", "gauge", registry.all.map((i) => [{ instance: i.name }, i.healthy ? 1 : 0])),
    family("chroma_lb_instance_serving", "1 when the instance takes client requests.", "gauge", registry.all.map((i) => [{ instance: i.name }, i.serving ? 1 : 0])),
    family("chroma_lb_instance_requests_total", "Requests sent to the instance.", "counter", registry.all.map((i) => [{ instance: i.name }, i.totalRequests])),
    family("chroma_lb_instance_pending_entries", "Log entries the instance has yet to apply.", "gauge", registry.all.map((i) => [{ instance: i.name }, wal.pendingCount(i.name)])),
    family(
      "chroma_lb_diverged_collections",
      "Collections whose copy on the instance diverged (it refused an entry another instance applied).",
      "gauge",
      registry.all.map((i) => [{ instance: i.name }, divergences.filter((d) => d.instance === i.name).length]),
    ),
    family("chroma_lb_wal_head_position", "Position of the newest log entry.", "gauge", [[{}, wal.headSeq()]]),
    family("chroma_lb_wal_group_commits_total", "Transactions that appended log entries.", "counter", [[{}, wal.commitStats.transactions]]),
    family("chroma_lb_wal_appended_entries_total", "Log entries appended.", "counter", [[{}, wal.commitStats.entries]]),
    family("chroma_lb_replay_batches_total", "Replay requests that succeeded.", "counter", [[{}, replayer.stats.batches]]),
    family("chroma_lb_replay_entries_total", "Log entries replayed.", "counter", [[{}, replayer.stats.entriesApplied]]),
    family("chroma_lb_replay_failures_total", "Replay attempts that failed.", "counter", [[{}, replayer.stats.failedSyncs]]),
    family("chroma_lb_replay_lag_milliseconds", "Append-to-replayed time over recent entries, by percentile (a gauge, not a summary).", "gauge", [
      [{ percentile: "50" }, lag.p50],
      [{ percentile: "99" }, lag.p99],
      [{ percentile: "100" }, lag.max],
    ]),
    family("chroma_lb_replay_batch_size", "Current replay batch size.", "gauge", [[{}, sizer.current]]),
    family("chroma_lb_memory_pressure_events_total", "Times memory crossed the pressure threshold.", "counter", [[{}, sizer.memoryPressureEvents]]),
    family("chroma_lb_adaptive_batch_reductions_total", "Times the replay batch size was reduced.", "counter", [[{}, sizer.adaptiveBatchReductions]]),
  ].join("\n\n") + "\n";
}
