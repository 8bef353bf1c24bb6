/**
 * chroma-lb's Prometheus metrics, with prom-client, in one Registry per server (never the
 * library's global one: tests build several servers in one process).
 *
 * Two kinds of figure:
 * - Events counted where they happen: client requests (`instrument`, around the server's
 *   fetch), requests to each instance (`observeInstanceRequest`, the client's observer),
 *   replay lag samples, health transitions, alerts.
 * - Figures read from the services when Prometheus scrapes (`collect`): instance state,
 *   the log, replay counters, memory, the mirror. Nothing is copied on the hot path.
 *
 * Names follow Prometheus conventions: a `chroma_lb_` prefix, the unit last (`_seconds`,
 * `_bytes`), `_total` on counters. The default process metrics carry the same prefix, so
 * `chroma_lb_process_resident_memory_bytes` keeps its name.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { InstanceResult, RequestOptions } from "../chroma/client";
import { INSTANCE_HEADER } from "../proxy/headers";
import type { Services } from "../services";

const prefix = "chroma_lb_";

/** Which part of the API a request is for (a label on request metrics). */
export type RouteClass = "record_read" | "record_write" | "catalog" | "passthrough" | "admin";

const recordOpPattern = /^\/api\/v2\/tenants\/[^/]+\/databases\/[^/]+\/collections\/[^/]+\/(add|upsert|update|delete|get|query|count)$/;
const recordReads = new Set(["get", "query", "count"]);

/**
 * The route class of a request path (without its query): record reads and writes under a
 * collection, catalog changes and reads (tenants, databases, collections, reset), anything
 * else of Chroma's API passed through (heartbeat, version, ...), and chroma-lb's own
 * endpoints (`admin`: status, metrics, admin, the UI).
 */
export function routeClassOf(path: string): RouteClass {
  if (!path.startsWith("/api/")) return "admin";
  const record = recordOpPattern.exec(path);
  if (record) return recordReads.has(record[1]!) ? "record_read" : "record_write";
  if (path.startsWith("/api/v2/tenants") || path === "/api/v2/reset") return "catalog";
  return "passthrough";
}

/** The path of an absolute request URL, without parsing the whole URL (this runs on every request). */
function pathOfUrl(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  return start === -1 ? "/" : withoutQuery(url.slice(start));
}

function withoutQuery(path: string): string {
  const query = path.indexOf("?");
  return query === -1 ? path : path.slice(0, query);
}

/** Client requests take from a fraction of a millisecond (a read) to REQUEST_TIMEOUT. */
const requestBucketsSeconds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Replay lag runs from milliseconds (steady state) to the length of an outage. */
const lagBucketsSeconds = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600];

/**
 * prom-client writes NaN as `Nan`, which strict parsers of the text format refuse; these two
 * default gauges are NaN whenever no event-loop sample fell between two scrapes.
 */
const defaultMetricsDropped = ["nodejs_eventloop_lag_mean_seconds", "nodejs_eventloop_lag_stddev_seconds"];

export type MetricsDeps = Pick<Services, "config" | "registry" | "wal" | "replayer" | "sizer" | "mirror" | "inflight">;

/** Sets a counter read from a monotonic source (collect runs at each scrape). */
function setCounter<T extends string>(counter: Counter<T>, samples: Array<[Partial<Record<T, string>>, number]>) {
  counter.reset();
  for (const [labels, value] of samples) counter.inc(labels, Number.isFinite(value) && value > 0 ? value : 0);
}

export class Metrics {
  readonly registry = new Registry();
  /** Client requests by route class, status, the instance that served them (`none`: chroma-lb answered) and principal. */
  readonly requests: Counter<"route_class" | "status" | "instance" | "principal">;
  readonly requestDuration: Histogram<"route_class">;
  readonly instanceRequestDuration: Histogram<"instance" | "route_class" | "outcome">;
  readonly replayLag: Histogram<string>;
  readonly healthTransitions: Counter<"instance" | "direction">;
  readonly alerts: Counter<"event" | "outcome">;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix });
    for (const name of defaultMetricsDropped) this.registry.removeSingleMetric(prefix + name);

    this.requests = new Counter({
      name: `${prefix}requests_total`,
      help:
        "Client requests answered, by route class, HTTP status, serving instance (none: answered by chroma-lb itself) and principal (a token's name; admin-token; anonymous while the data API is open; unauthenticated).",
      labelNames: ["route_class", "status", "instance", "principal"],
      registers,
    });
    this.requestDuration = new Histogram({
      name: `${prefix}request_duration_seconds`,
      help: "Time from a client request's arrival to its answer, by route class.",
      labelNames: ["route_class"],
      buckets: requestBucketsSeconds,
      registers,
    });
    this.instanceRequestDuration = new Histogram({
      name: `${prefix}instance_request_duration_seconds`,
      help: "Requests chroma-lb sent to each instance (client, replay, probes), by route class and outcome (2xx..5xx, unreachable, uncertain).",
      labelNames: ["instance", "route_class", "outcome"],
      buckets: requestBucketsSeconds,
      registers,
    });
    this.replayLag = new Histogram({
      name: `${prefix}replay_lag_seconds`,
      help: "Time from a log entry's append to its application on a replayed instance.",
      buckets: lagBucketsSeconds,
      registers,
    });
    this.healthTransitions = new Counter({
      name: `${prefix}instance_health_transitions_total`,
      help: "Times an instance was marked down or up.",
      labelNames: ["instance", "direction"],
      registers,
    });
    this.alerts = new Counter({
      name: `${prefix}alerts_total`,
      help: "Alerts by event and outcome: firing and resolved were posted, suppressed were held back by ALERT_MIN_INTERVAL, posted_by_other_node were posted once for the cluster by another node.",
      labelNames: ["event", "outcome"],
      registers,
    });
  }

  /**
   * Registers the figures read from the services at each scrape (instances, the log,
   * replay, memory, bodies in flight, the mirror). Called once, when the services are built.
   */
  watch(deps: MetricsDeps) {
    const { config, registry, wal, replayer, sizer, mirror, inflight } = deps;
    const registers = [this.registry];
    const instances = () => registry.all;
    for (const instance of instances()) {
      for (const direction of ["down", "up"]) this.healthTransitions.inc({ instance: instance.name, direction }, 0);
    }

    const gauge = (name: string, help: string, labelNames: string[], read: (set: (labels: Record<string, string>, value: number) => void) => void | Promise<void>) =>
      new Gauge({
        name: prefix + name,
        help,
        labelNames,
        registers,
        async collect() {
          const values: Array<[Record<string, string>, number]> = [];
          try {
            await read((labels, value) => values.push([labels, Number.isFinite(value) ? value : 0]));
          } catch {
            // The figure cannot be read now (the log store is unreachable): no sample rather than a stale one.
            this.reset();
            return;
          }
          this.reset();
          for (const [labels, value] of values) this.set(labels, value);
        },
      });
    const counter = (name: string, help: string, read: () => number) =>
      new Counter({
        name: prefix + name,
        help,
        registers,
        collect() {
          setCounter(this, [[{}, read()]]);
        },
      });

    // Instances.
    gauge("instance_healthy", "1 when the instance is healthy.", ["instance"], (set) => {
      for (const i of instances()) set({ instance: i.name }, i.healthy ? 1 : 0);
    });
    gauge("instance_serving", "1 when the instance takes client requests (healthy, not in maintenance).", ["instance"], (set) => {
      for (const i of instances()) set({ instance: i.name }, i.serving ? 1 : 0);
    });
    gauge("instance_catching_up", "1 while the instance is back from an outage and applying what it missed.", ["instance"], (set) => {
      for (const i of instances()) set({ instance: i.name }, i.catchingUp ? 1 : 0);
    });
    new Counter({
      name: `${prefix}instance_requests_total`,
      help: "Client requests sent to the instance.",
      labelNames: ["instance"],
      registers,
      collect() {
        setCounter(this, instances().map((i) => [{ instance: i.name }, i.totalRequests]));
      },
    });
    gauge("instance_pending_entries", "Log entries the instance has yet to apply.", ["instance"], (set) => {
      for (const i of instances()) set({ instance: i.name }, wal.pendingCount(i.name));
    });
    gauge("instance_lag_seconds", "Age of the oldest log entry the instance has yet to apply (0 when it owes none).", ["instance"], (set) => {
      for (const i of instances()) set({ instance: i.name }, wal.lag(i.name).oldestAgeMs / 1000);
    });
    gauge("instance_failing_entries", "Log entries whose replay to the instance failed and is being retried.", ["instance"], (set) => {
      for (const i of instances()) set({ instance: i.name }, wal.failingCount(i.name));
    });
    gauge("diverged_collections", "Collections whose copy on the instance diverged (it refused an entry another instance applied).", ["instance"], (set) => {
      const divergences = wal.divergences();
      for (const i of instances()) set({ instance: i.name }, divergences.filter((d) => d.instance === i.name).length);
    });

    // The log.
    gauge("wal_head_position", "Position of the newest log entry.", [], (set) => set({}, wal.headSeq()));
    gauge("wal_entries", "Entries in the log (applied ones stay until WAL_RETENTION_HOURS).", [], async (set) => set({}, (await wal.counts()).total));
    gauge("wal_pending_entries", "Entries that at least one instance has yet to apply.", [], async (set) => set({}, (await wal.counts()).pendingEntries));
    gauge("wal_rejected_entries", "Entries every instance refused, kept (without body) until retention removes them.", [], async (set) => set({}, (await wal.counts()).rejected));
    gauge("wal_disk_bytes", "Size of the log on disk: SQLite pages in use, those still in its -wal file included (WAL_MAX_DISK_MB is compared with it).", [], (set) => set({}, wal.diskBytes()));
    gauge("wal_disk_max_bytes", "WAL_MAX_DISK_MB in bytes: at this size new writes are refused (0: no bound).", [], (set) => set({}, config.walMaxDiskBytes));
    counter("wal_group_commits_total", "Transactions that appended log entries.", () => wal.commitStats.transactions);
    counter("wal_appended_entries_total", "Log entries appended.", () => wal.commitStats.entries);

    // Request bodies in memory.
    gauge("inflight_body_bytes", "Bytes of request bodies held in memory now.", [], (set) => set({}, inflight.bytes));
    gauge("inflight_body_max_bytes", "MAX_INFLIGHT_MB in bytes.", [], (set) => set({}, inflight.bytesMax));
    gauge("inflight_waiting_requests", "Requests waiting for room under MAX_INFLIGHT_MB.", [], (set) => set({}, inflight.waiting));
    counter("inflight_refused_requests_total", "Requests answered 503 because no room under MAX_INFLIGHT_MB came in time.", () => inflight.refusedRequests);

    // Replay.
    counter("replay_batches_total", "Replay requests that succeeded.", () => replayer.stats.batches);
    counter("replay_entries_total", "Log entries replayed.", () => replayer.stats.entriesApplied);
    counter("replay_failures_total", "Replay attempts that failed.", () => replayer.stats.failedSyncs);
    gauge("replay_batch_size", "Current replay batch size (entries per request).", [], (set) => set({}, sizer.current));

    // Memory.
    gauge("memory_limit_bytes", "WAL_MAX_MEMORY_MB in bytes: the RSS at which replay batches shrink to one entry.", [], (set) => set({}, config.walMaxMemoryMb * 1024 * 1024));
    gauge("memory_peak_resident_bytes", "Highest RSS sampled since start.", [], (set) => set({}, sizer.peakRssBytes));
    counter("memory_pressure_events_total", "Times memory crossed the pressure threshold (70% of WAL_MAX_MEMORY_MB).", () => sizer.memoryPressureEvents);
    counter("adaptive_batch_reductions_total", "Times the replay batch size was reduced.", () => sizer.adaptiveBatchReductions);

    // The Postgres mirror, when configured.
    if (mirror) {
      gauge("mirror_up", "1 when the last sync to the Postgres mirror succeeded.", [], (set) => set({}, mirror.status.lastError === null && mirror.status.connected ? 1 : 0));
      gauge("mirror_last_sync_timestamp_seconds", "When the mirror last synced (Unix time; 0 before the first sync).", [], (set) =>
        set({}, (mirror.status.lastSyncAtMs ?? 0) / 1000),
      );
      const createdAtMs = Date.now();
      gauge("mirror_sync_age_seconds", "Time since the mirror last synced (since start before the first sync): how far the mirror may lag.", [], (set) =>
        set({}, (Date.now() - (mirror.status.lastSyncAtMs ?? createdAtMs)) / 1000),
      );
      counter("mirror_synced_rows_total", "Mapping rows written to the mirror.", () => mirror.status.rowsSynced);
    }
  }

  /**
   * Wraps the server's fetch: counts every client request and times it from arrival until
   * its answer is ready (the body of a streamed answer may still be on its way then).
   * `answered` is told of each answer and names its principal (the access control's).
   */
  instrument<A extends unknown[]>(
    handle: (request: Request, ...rest: A) => Response | Promise<Response>,
    answered: (request: Request, status: number) => string,
  ) {
    return async (request: Request, ...rest: A): Promise<Response> => {
      const startedMs = performance.now();
      let status = 500;
      let instance = "none";
      try {
        const response = await handle(request, ...rest);
        status = response.status;
        instance = response.headers.get(INSTANCE_HEADER) ?? "none";
        return response;
      } finally {
        const routeClass = routeClassOf(pathOfUrl(request.url));
        this.requests.inc({ route_class: routeClass, status: String(status), instance, principal: answered(request, status) });
        this.requestDuration.observe({ route_class: routeClass }, (performance.now() - startedMs) / 1000);
      }
    };
  }

  /** One request to an instance ended (the instance client's observer). */
  observeInstanceRequest(instance: string, options: Pick<RequestOptions, "path">, result: InstanceResult) {
    const outcome = result.ok ? `${Math.floor(result.status / 100)}xx` : result.failure;
    this.instanceRequestDuration.observe({ instance, route_class: routeClassOf(withoutQuery(options.path)), outcome }, result.ms / 1000);
  }

  /** The Prometheus text exposition (format 0.0.4). */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
