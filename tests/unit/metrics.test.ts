/**
 * Metrics: `GET /metrics` passes a strict reader of the Prometheus text format
 * (src/observability/exposition.ts, which follows the format's rules itself: the parsers on
 * npm accept values and names Prometheus refuses), requests are counted by route class,
 * status and instance, and each server has its own registry. Also `GET /events`.
 */
import type { Instance, InstanceRegistry } from "../../src/instances/registry";
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../src/app";
import { loadConfig } from "../../src/config";
import { ExpositionError, parseExposition, type ExpositionFamily } from "../../src/observability/exposition";
import { createLogger } from "../../src/observability/log";
import { routeClassOf } from "../../src/observability/metrics";
import { buildServices, type Services } from "../../src/server";

const T = "/api/v2/tenants/default_tenant/databases/default_database";

interface TestServer extends AsyncDisposable {
  services: Services;
  /** A request through the same fetch wrapper the server uses. */
  request(path: string, init?: RequestInit): Promise<Response>;
  metrics(): Promise<Map<string, ExpositionFamily>>;
}

/** Services and an app over a temp dir; both instances unreachable and never probed. */
async function buildServer(): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "chroma-lb-metrics-"));
  const config = loadConfig({ CHROMA_PRIMARY_URL: "http://127.0.0.1:1", CHROMA_REPLICA_URL: "http://127.0.0.1:2", DATA_DIR: dataDir });
  const services = await buildServices(config, createLogger("error"));
  const app = createApp(services);
  const handle = services.metrics.instrument((request: Request) => app.handle(request), (request, status) => services.access.answered(request, status));
  const request = (path: string, init?: RequestInit) => handle(new Request(`http://lb.test${path}`, init));
  return {
    services,
    request,
    async metrics() {
      const res = await app.handle(new Request("http://lb.test/metrics"));
      expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
      return parseExposition(await res.text());
    },
    async [Symbol.asyncDispose]() {
      await services.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * What passing probes do to an instance (the fake URLs never answer one): no public call
 * marks an instance up, since none may make a dead instance look alive.
 */
function markUpByProbes(registry: InstanceRegistry, instance: Instance) {
  (registry as unknown as { setHealthy(i: Instance, healthy: boolean, reason: string): void }).setHealthy(instance, true, "probes passed");
}

/** The samples of one family as `name{labels} value` strings, for whole-array comparisons. */
function samples(families: Map<string, ExpositionFamily>, name: string, filter: (labels: Record<string, string>) => boolean = () => true): string[] {
  const family = families.get(name);
  if (!family) throw new Error(`no family ${name}`);
  return family.samples
    .filter((s) => filter(s.labels))
    .map((s) => `${s.name}${Object.keys(s.labels).length ? `{${Object.entries(s.labels).map(([k, v]) => `${k}="${v}"`).join(",")}}` : ""} ${s.value}`);
}

describe("route classes", () => {
  test("each path of the API has its class", () => {
    const paths = [
      `${T}/collections/docs/get`,
      `${T}/collections/docs/query`,
      `${T}/collections/docs/count`,
      `${T}/collections/docs/add`,
      `${T}/collections/docs/upsert`,
      `${T}/collections/docs/update`,
      `${T}/collections/docs/delete`,
      `${T}/collections/docs`,
      `${T}/collections`,
      `${T}/collections_count`,
      "/api/v2/tenants",
      "/api/v2/reset",
      "/api/v2/heartbeat",
      "/api/v2/pre-flight-checks",
      "/api/v1/heartbeat",
      "/health",
      "/metrics",
      "/events",
      "/admin/instances",
      "/dashboard",
    ];
    expect(Object.fromEntries(paths.map((p) => [p, routeClassOf(p)]))).toEqual({
      [`${T}/collections/docs/get`]: "record_read",
      [`${T}/collections/docs/query`]: "record_read",
      [`${T}/collections/docs/count`]: "record_read",
      [`${T}/collections/docs/add`]: "record_write",
      [`${T}/collections/docs/upsert`]: "record_write",
      [`${T}/collections/docs/update`]: "record_write",
      [`${T}/collections/docs/delete`]: "record_write",
      [`${T}/collections/docs`]: "catalog",
      [`${T}/collections`]: "catalog",
      [`${T}/collections_count`]: "catalog",
      "/api/v2/tenants": "catalog",
      "/api/v2/reset": "catalog",
      "/api/v2/heartbeat": "passthrough",
      "/api/v2/pre-flight-checks": "passthrough",
      "/api/v1/heartbeat": "passthrough",
      "/health": "admin",
      "/metrics": "admin",
      "/events": "admin",
      "/admin/instances": "admin",
      "/dashboard": "admin",
    });
  });
});

describe("the text-format reader", () => {
  test("reads a valid exposition, histograms included", () => {
    const text = [
      "# a comment",
      "# HELP x_total Things, with a \\\\ and a \\n.",
      "# TYPE x_total counter",
      'x_total{a="1",b="q\\"uote\\\\"} 3 1700000000000',
      "",
      "# TYPE h_seconds histogram",
      'h_seconds_bucket{le="0.5"} 1',
      'h_seconds_bucket{le="+Inf"} 2',
      "h_seconds_sum 1.5e0",
      "h_seconds_count 2",
      "# TYPE g gauge",
      "g NaN",
      "g{k=\"v\"} -Inf",
      "",
    ].join("\n");
    const families = parseExposition(text);
    expect([...families.values()].map((f) => ({ ...f, samples: f.samples.length }))).toEqual([
      { name: "x_total", help: "Things, with a \\\\ and a \\n.", type: "counter", samples: 1 },
      { name: "h_seconds", help: null, type: "histogram", samples: 4 },
      { name: "g", help: null, type: "gauge", samples: 2 },
    ]);
    expect(families.get("x_total")!.samples[0]).toEqual({ name: "x_total", labels: { a: "1", b: 'q"uote\\' }, value: 3 });
  });

  test("refuses each rule broken", () => {
    const bad: Record<string, string> = {
      "no final line feed": "g 1",
      "a value that is not a number": "g abc\n",
      "NaN spelled as prom-client writes it": "g Nan\n",
      "a name starting with a digit": "1g 1\n",
      "an unquoted label value": "g{a=1} 1\n",
      "an unterminated label value": 'g{a="1} 1\n',
      "a reserved label name": 'g{__a="1"} 1\n',
      "an unknown escape": 'g{a="\\t"} 1\n',
      "two spaces before the value": "g  1\n",
      "a second TYPE": "# TYPE g gauge\n# TYPE g counter\ng 1\n",
      "TYPE after a sample": "g 1\n# TYPE g gauge\n",
      "lines of one family apart": "# TYPE g gauge\ng 1\n# TYPE f gauge\nf 1\ng{a=\"b\"} 2\n",
      "the same sample twice": "g 1\ng 2\n",
      "a negative counter": "# TYPE c_total counter\nc_total -1\n",
      "a histogram without +Inf": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
      "buckets not cumulative": '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
      "a _count other than the +Inf bucket": '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n',
    };
    const accepted = Object.entries(bad).filter(([, text]) => {
      try {
        parseExposition(text);
        return true;
      } catch (error) {
        if (!(error instanceof ExpositionError)) throw error;
        return false;
      }
    });
    expect(accepted.map(([rule]) => rule)).toEqual([]);
  });
});

describe("GET /metrics", () => {
  test("passes the strict reader and has every family, with its type, named by Prometheus conventions", async () => {
    await using server = await buildServer();
    await server.request("/health");
    await server.request(`${T}/collections/docs/get`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    const families = await server.metrics();
    const types = Object.fromEntries([...families.values()].filter((f) => f.name.startsWith("chroma_lb_") && !/_(nodejs|process)_/.test(f.name)).map((f) => [f.name, f.type]));
    expect(types).toEqual({
      chroma_lb_requests_total: "counter",
      chroma_lb_request_duration_seconds: "histogram",
      chroma_lb_instance_request_duration_seconds: "histogram",
      chroma_lb_replay_lag_seconds: "histogram",
      chroma_lb_instance_health_transitions_total: "counter",
      chroma_lb_alerts_total: "counter",
      chroma_lb_instance_healthy: "gauge",
      chroma_lb_instance_serving: "gauge",
      chroma_lb_instance_catching_up: "gauge",
      chroma_lb_instance_requests_total: "counter",
      chroma_lb_instance_pending_entries: "gauge",
      chroma_lb_instance_lag_seconds: "gauge",
      chroma_lb_instance_failing_entries: "gauge",
      chroma_lb_diverged_collections: "gauge",
      chroma_lb_wal_head_position: "gauge",
      chroma_lb_wal_entries: "gauge",
      chroma_lb_wal_pending_entries: "gauge",
      chroma_lb_wal_rejected_entries: "gauge",
      chroma_lb_wal_disk_bytes: "gauge",
      chroma_lb_wal_disk_max_bytes: "gauge",
      chroma_lb_wal_group_commits_total: "counter",
      chroma_lb_wal_appended_entries_total: "counter",
      chroma_lb_inflight_body_bytes: "gauge",
      chroma_lb_inflight_body_max_bytes: "gauge",
      chroma_lb_inflight_waiting_requests: "gauge",
      chroma_lb_inflight_refused_requests_total: "counter",
      chroma_lb_replay_batches_total: "counter",
      chroma_lb_replay_entries_total: "counter",
      chroma_lb_replay_failures_total: "counter",
      chroma_lb_replay_batch_size: "gauge",
      chroma_lb_memory_limit_bytes: "gauge",
      chroma_lb_memory_peak_resident_bytes: "gauge",
      chroma_lb_memory_pressure_events_total: "counter",
      chroma_lb_adaptive_batch_reductions_total: "counter",
    });
    // Every counter ends in _total; every family has its HELP.
    expect([...families.values()].filter((f) => f.type === "counter" && !f.name.endsWith("_total")).map((f) => f.name)).toEqual([]);
    expect([...families.values()].filter((f) => !f.help).map((f) => f.name)).toEqual([]);
    // The default process metrics, under the same prefix.
    for (const name of ["chroma_lb_process_resident_memory_bytes", "chroma_lb_process_cpu_seconds_total", "chroma_lb_process_open_fds", "chroma_lb_nodejs_heap_size_used_bytes", "chroma_lb_nodejs_eventloop_lag_seconds"]) {
      expect(families.get(name)?.samples.length).toBe(1);
    }
    expect(families.get("chroma_lb_process_resident_memory_bytes")!.samples[0]!.value).toBeGreaterThan(1024 * 1024);

    expect(samples(families, "chroma_lb_requests_total")).toEqual([
      'chroma_lb_requests_total{route_class="admin",status="503",instance="none",principal="anonymous"} 1',
      'chroma_lb_requests_total{route_class="record_read",status="404",instance="none",principal="anonymous"} 1',
    ]);
    expect(samples(families, "chroma_lb_request_duration_seconds", (l) => l.le === undefined).map((s) => s.replace(/_sum(\{[^}]*\}) [0-9.e-]+$/, "_sum$1 S"))).toEqual([
      'chroma_lb_request_duration_seconds_sum{route_class="admin"} S',
      'chroma_lb_request_duration_seconds_count{route_class="admin"} 1',
      'chroma_lb_request_duration_seconds_sum{route_class="record_read"} S',
      'chroma_lb_request_duration_seconds_count{route_class="record_read"} 1',
    ]);
    expect(samples(families, "chroma_lb_instance_healthy")).toEqual(['chroma_lb_instance_healthy{instance="primary"} 0', 'chroma_lb_instance_healthy{instance="replica"} 0']);
    expect(samples(families, "chroma_lb_diverged_collections")).toEqual(['chroma_lb_diverged_collections{instance="primary"} 0', 'chroma_lb_diverged_collections{instance="replica"} 0']);
    expect(samples(families, "chroma_lb_wal_disk_bytes")[0]).toMatch(/^chroma_lb_wal_disk_bytes [1-9]\d*$/);
  });

  test("requests to the instances, replay lag samples and health transitions are counted", async () => {
    await using server = await buildServer();
    const { registry, replayer } = server.services;
    await registry.checkAll();
    replayer.stats.recordLag(1_500);
    replayer.stats.recordLag(20);
    markUpByProbes(registry, registry.get("replica")!);
    registry.simulateOutage(registry.get("replica")!, null);
    const families = await server.metrics();
    expect(samples(families, "chroma_lb_instance_request_duration_seconds", (l) => l.le === undefined).filter((s) => s.includes("_count"))).toEqual([
      'chroma_lb_instance_request_duration_seconds_count{instance="primary",route_class="passthrough",outcome="unreachable"} 1',
      'chroma_lb_instance_request_duration_seconds_count{instance="replica",route_class="passthrough",outcome="unreachable"} 1',
    ]);
    expect(samples(families, "chroma_lb_replay_lag_seconds", (l) => l.le === undefined || ["0.05", "2.5", "+Inf"].includes(l.le))).toEqual([
      'chroma_lb_replay_lag_seconds_bucket{le="0.05"} 1',
      'chroma_lb_replay_lag_seconds_bucket{le="2.5"} 2',
      'chroma_lb_replay_lag_seconds_bucket{le="+Inf"} 2',
      "chroma_lb_replay_lag_seconds_sum 1.52",
      "chroma_lb_replay_lag_seconds_count 2",
    ]);
    expect(samples(families, "chroma_lb_instance_health_transitions_total")).toEqual([
      'chroma_lb_instance_health_transitions_total{instance="primary",direction="down"} 0',
      'chroma_lb_instance_health_transitions_total{instance="primary",direction="up"} 0',
      'chroma_lb_instance_health_transitions_total{instance="replica",direction="down"} 1',
      'chroma_lb_instance_health_transitions_total{instance="replica",direction="up"} 1',
    ]);
  });

  test("each server has its own registry: two in one process count apart", async () => {
    await using a = await buildServer();
    await using b = await buildServer();
    await a.request("/health");
    await a.request("/health");
    await b.request("/health");
    expect(samples(await a.metrics(), "chroma_lb_requests_total")).toEqual(['chroma_lb_requests_total{route_class="admin",status="503",instance="none",principal="anonymous"} 2']);
    expect(samples(await b.metrics(), "chroma_lb_requests_total")).toEqual(['chroma_lb_requests_total{route_class="admin",status="503",instance="none",principal="anonymous"} 1']);
  });
});

describe("GET /events", () => {
  test("lists health transitions and alerts, newest last, in the documented shape", async () => {
    await using server = await buildServer();
    const { registry, alerter } = server.services;
    const replica = registry.get("replica")!;
    markUpByProbes(registry, replica);
    registry.simulateOutage(replica, null);
    alerter.send({ event: "instance_down", instance: "replica", message: "instance replica is down: simulated outage" });
    alerter.resolve({ event: "instance_down", instance: "replica", message: "instance replica is back" });
    const res = await server.request("/events");
    expect(res.status).toBe(200);
    const { events } = (await res.json()) as { events: Array<Record<string, unknown>> };
    expect(events.map(({ at, ...rest }) => rest)).toEqual([
      { event: "instance_health", level: "info", instance: "replica", message: "instance replica is up" },
      { event: "instance_health", level: "warn", instance: "replica", message: "instance replica is down: simulated outage" },
      { event: "instance_down", level: "error", instance: "replica", message: "instance replica is down: simulated outage" },
      { event: "instance_down", level: "info", instance: "replica", message: "instance replica is back", resolved: true },
    ]);
    const times = events.map((e) => Date.parse(e.at as string));
    expect(times.every((t, i) => Number.isFinite(t) && (i === 0 || t >= times[i - 1]!))).toBe(true);
  });
});
