/**
 * Alerts: one post per condition, a resolution when it clears, at most one alert per key per
 * ALERT_MIN_INTERVAL (held back, then posted late if it still holds), with an injected clock
 * and a delivery that records instead of posting. Then `alertsOnce` over fake services, and
 * the recent-events ring buffer.
 */
import { describe, expect, test } from "bun:test";
import { alertsOnce, createAlerter, type AlertCheckDeps, type Alerter, type WebhookPayload } from "../../src/observability/alerts";
import { RecentEvents } from "../../src/observability/events";
import { createLogger } from "../../src/observability/log";

const minIntervalMs = 300_000;

function harness(options: { minIntervalMs?: number } = {}) {
  let nowMs = Date.parse("2025-01-01T00:00:00Z");
  const posted: WebhookPayload[] = [];
  const outcomes: string[] = [];
  const events = new RecentEvents(200, () => nowMs);
  const alerter = createAlerter({
    webhookUrl: null,
    minIntervalMs: options.minIntervalMs ?? minIntervalMs,
    log: createLogger("error"),
    events,
    now: () => nowMs,
    deliver: async (payload) => {
      posted.push(payload);
    },
    onOutcome: (event, outcome) => outcomes.push(`${event}:${outcome}`),
  });
  return {
    alerter,
    events,
    posted,
    outcomes,
    /** What was posted, as [event, status, instance] rows. */
    rows: () => posted.map((p) => [p.event, p.status, p.instance ?? null]),
    advance(ms: number) {
      nowMs += ms;
    },
  };
}

const down = (instance = "replica", message = `instance ${instance} is down: connection refused`) => ({ event: "instance_down" as const, instance, message });

describe("alerter", () => {
  test("a condition reported many times is posted once, and its resolution once", () => {
    const h = harness();
    for (let i = 0; i < 5; i++) {
      h.alerter.send(down());
      h.advance(1_000);
    }
    h.alerter.resolve({ event: "instance_down", instance: "replica", message: "instance replica is back" });
    h.alerter.resolve({ event: "instance_down", instance: "replica", message: "instance replica is back" });
    expect(h.rows()).toEqual([
      ["instance_down", "firing", "replica"],
      ["instance_down", "resolved", "replica"],
    ]);
    expect(h.posted[0]).toEqual({
      text: "chroma-lb: instance replica is down: connection refused",
      event: "instance_down",
      level: "error",
      status: "firing",
      resolved: false,
      instance: "replica",
      message: "instance replica is down: connection refused",
      at: "2025-01-01T00:00:00.000Z",
    });
    expect(h.posted[1]).toMatchObject({ text: "chroma-lb: resolved: instance replica is back", level: "info", status: "resolved", resolved: true });
    expect(h.alerter.active()).toEqual([]);
  });

  test("a resolution of a condition never reported posts nothing", () => {
    const h = harness();
    h.alerter.resolve({ event: "replication_lag", instance: "replica" });
    expect(h.posted).toEqual([]);
  });

  test("send of instance_up (the old way of announcing a return) resolves instance_down", () => {
    const h = harness();
    h.alerter.send(down());
    h.alerter.send({ event: "instance_up", instance: "replica", message: "instance replica is back" });
    expect(h.rows()).toEqual([
      ["instance_down", "firing", "replica"],
      ["instance_down", "resolved", "replica"],
    ]);
  });

  test("keys are the event, the instance and the collection", () => {
    const h = harness();
    h.alerter.send(down("primary"));
    h.alerter.send(down("replica"));
    h.alerter.send({ event: "replication_lag", instance: "replica", message: "lag" });
    h.alerter.send({ event: "collection_diverged", instance: "replica", collection: "a", message: "a diverged" });
    h.alerter.send({ event: "collection_diverged", instance: "replica", collection: "b", message: "b diverged" });
    h.alerter.send({ event: "collection_diverged", instance: "replica", collection: "a", message: "a diverged again" });
    expect(h.posted.map((p) => [p.event, p.instance, p.collection ?? null])).toEqual([
      ["instance_down", "primary", null],
      ["instance_down", "replica", null],
      ["replication_lag", "replica", null],
      ["collection_diverged", "replica", "a"],
      ["collection_diverged", "replica", "b"],
    ]);
  });

  test("a second episode within ALERT_MIN_INTERVAL that clears in time: neither it nor its resolution is posted; the next alert counts it", () => {
    const h = harness();
    h.alerter.send(down());
    h.advance(10_000);
    h.alerter.resolve({ event: "instance_down", instance: "replica", message: "instance replica is back" });
    h.advance(10_000);
    h.alerter.send(down());
    expect(h.alerter.active()).toEqual([{ event: "instance_down", instance: "replica", message: "instance replica is down: connection refused", sinceMs: Date.parse("2025-01-01T00:00:20Z"), notified: false }]);
    h.advance(10_000);
    h.alerter.flushOnce(); // the interval is not over: still held back
    h.alerter.resolve({ event: "instance_down", instance: "replica", message: "instance replica is back" });
    expect(h.rows()).toEqual([
      ["instance_down", "firing", "replica"],
      ["instance_down", "resolved", "replica"],
    ]);
    expect(h.outcomes).toEqual(["instance_down:firing", "instance_down:resolved", "instance_down:suppressed"]);

    // Once the interval is over, the next outage is posted, with the one missed.
    h.advance(minIntervalMs);
    h.alerter.send(down());
    expect(h.rows().at(-1)).toEqual(["instance_down", "firing", "replica"]);
    expect(h.posted.at(-1)!.message).toBe("instance replica is down: connection refused (also 1 time since the previous alert, not posted: ALERT_MIN_INTERVAL)");
  });

  test("a held-back episode that still holds when the interval is over is posted then, saying since when", () => {
    const h = harness();
    h.alerter.send(down());
    h.advance(5_000);
    h.alerter.resolve({ event: "instance_down", instance: "replica" });
    h.advance(5_000);
    h.alerter.send(down()); // at 10 s: held back
    h.advance(minIntervalMs - 10_001);
    h.alerter.flushOnce(); // 1 ms short of the interval
    expect(h.posted.length).toBe(2);
    h.advance(1);
    h.alerter.flushOnce();
    h.alerter.flushOnce();
    expect(h.rows()).toEqual([
      ["instance_down", "firing", "replica"],
      ["instance_down", "resolved", "replica"],
      ["instance_down", "firing", "replica"],
    ]);
    expect(h.posted[2]!.message).toBe("instance replica is down: connection refused (since 2025-01-01T00:00:10.000Z)");
    // It was posted, so its resolution is too.
    h.alerter.resolve({ event: "instance_down", instance: "replica", message: "instance replica is back" });
    expect(h.rows().at(-1)).toEqual(["instance_down", "resolved", "replica"]);
  });

  test("a held-back alert is posted with the latest message reported", () => {
    const h = harness({ minIntervalMs: 60_000 });
    h.alerter.send({ event: "replication_lag", instance: "replica", message: "70 s behind" });
    h.alerter.resolve({ event: "replication_lag", instance: "replica" });
    h.advance(1_000);
    h.alerter.send({ event: "replication_lag", instance: "replica", message: "61 s behind" });
    h.advance(59_000);
    h.alerter.send({ event: "replication_lag", instance: "replica", message: "120 s behind" });
    h.alerter.flushOnce();
    expect(h.posted.map((p) => p.message)).toEqual(["70 s behind", "replication_lag on replica cleared", "120 s behind (since 2025-01-01T00:00:01.000Z)"]);
  });

  test("notices are posted each time, at most once per key per interval; repair_finished ends the divergence it repaired", () => {
    const h = harness();
    h.alerter.send({ event: "collection_diverged", instance: "replica", collection: "docs", message: "docs diverged" });
    h.advance(1_000);
    h.alerter.send({ event: "repair_finished", instance: "replica", collection: "docs", message: "resync of docs on replica finished" });
    h.alerter.send({ event: "repair_finished", instance: "replica", collection: "docs", message: "resync of docs on replica finished" });
    h.alerter.send({ event: "repair_finished", instance: "replica", collection: "other", message: "resync of other on replica finished" });
    expect(h.posted.map((p) => [p.event, p.status, p.collection, p.level])).toEqual([
      ["collection_diverged", "firing", "docs", "warn"],
      ["repair_finished", "firing", "docs", "info"],
      ["repair_finished", "firing", "other", "info"],
    ]);
    expect(h.alerter.active()).toEqual([]);
    // The event list shows the divergence ended, without a separate post.
    expect(h.events.list().map((e) => [e.event, e.collection, e.resolved ?? false])).toEqual([
      ["collection_diverged", "docs", false],
      ["collection_diverged", "docs", true],
      ["repair_finished", "docs", false],
      ["repair_finished", "other", false],
    ]);
    h.advance(minIntervalMs);
    h.alerter.send({ event: "repair_finished", instance: "replica", collection: "docs", message: "resync of docs on replica finished" });
    expect(h.posted.at(-1)!.message).toBe("resync of docs on replica finished (also 1 time since the previous alert, not posted: ALERT_MIN_INTERVAL)");
  });

  test("posted alerts and resolutions are recorded as events, stamped by the clock", () => {
    const h = harness();
    h.alerter.send(down());
    h.advance(2_500);
    h.alerter.resolve({ event: "instance_down", instance: "replica", message: "instance replica is back" });
    expect(h.events.list()).toEqual([
      { at: "2025-01-01T00:00:00.000Z", event: "instance_down", level: "error", instance: "replica", message: "instance replica is down: connection refused" },
      { at: "2025-01-01T00:00:02.500Z", event: "instance_down", level: "info", instance: "replica", message: "instance replica is back", resolved: true },
    ]);
  });

  test("a webhook that fails is logged, never thrown to the caller", async () => {
    const lines: string[] = [];
    const alerter = createAlerter({
      webhookUrl: null,
      minIntervalMs,
      log: createLogger("warn", (line) => lines.push(line)),
      deliver: async () => {
        throw new Error("webhook answered 500");
      },
    });
    expect(() => alerter.send(down())).not.toThrow();
    await Bun.sleep(0);
    expect(lines.map((l) => JSON.parse(l).message)).toEqual(["alert", "alert not delivered"]);
  });
});

describe("recent events", () => {
  test("keeps the last N, newest last", () => {
    let nowMs = 0;
    const events = new RecentEvents(3, () => nowMs);
    for (let i = 0; i < 5; i++) {
      nowMs = i * 1000;
      events.push({ event: "instance_health", level: "info", instance: "primary", message: `m${i}` });
    }
    expect(events.list().map((e) => [e.at, e.message])).toEqual([
      ["1970-01-01T00:00:02.000Z", "m2"],
      ["1970-01-01T00:00:03.000Z", "m3"],
      ["1970-01-01T00:00:04.000Z", "m4"],
    ]);
    expect(events.droppedCount).toBe(2);
  });
});

/** Fake services for alertsOnce: two instances and the figures it reads. */
function fakeDeps(alerter: Alerter) {
  const instances = [
    { name: "primary", healthy: true, simulated: null, lastError: null as string | null },
    { name: "replica", healthy: true, simulated: null, lastError: null as string | null },
  ];
  const lag = new Map(instances.map((i) => [i.name, { entries: 0, oldestAgeMs: 0, firstSeq: null, failing: 0, lastError: null as string | null }]));
  const state = {
    instances,
    lag,
    rssBytes: 100 * 1024 * 1024,
    diskFull: false,
    mirrorError: null as string | null,
    storeUnreachable: null as { sinceMs: number; error: string } | null,
  };
  const deps = {
    config: { alertLagMs: 60_000, alertBacklogEntries: 10_000, walMaxMemoryMb: 400, walMaxDiskBytes: 1024 * 1024 * 1024 },
    registry: { all: instances },
    wal: { lag: (name: string) => lag.get(name)!, diskFull: () => state.diskFull, diskBytes: () => 1024 * 1024 * 1024, storageIsFull: false, get storeUnreachable() { return state.storeUnreachable; } },
    sizer: {
      get lastSample() {
        return { rssBytes: state.rssBytes, heapUsedBytes: 0 };
      },
    },
    mirror: {
      get status() {
        return { lastError: state.mirrorError };
      },
    },
    alerter,
  } as unknown as AlertCheckDeps;
  return { deps, state };
}

describe("alertsOnce", () => {
  test("each polled condition fires while it holds and resolves when it clears", () => {
    const h = harness({ minIntervalMs: 0 });
    const { deps, state } = fakeDeps(h.alerter);
    alertsOnce(deps);
    expect(h.posted).toEqual([]);

    state.lag.set("replica", { entries: 20_000, oldestAgeMs: 90_000, firstSeq: null, failing: 0, lastError: "timed out" });
    state.rssBytes = 500 * 1024 * 1024;
    state.diskFull = true;
    state.mirrorError = "connect ECONNREFUSED";
    state.storeUnreachable = { sinceMs: Date.parse("2026-01-01T00:00:00Z"), error: "connection refused (ECONNREFUSED)" };
    alertsOnce(deps);
    alertsOnce(deps);
    expect(h.posted.map((p) => [p.event, p.status, p.instance ?? null, p.level])).toEqual([
      ["replication_lag", "firing", "replica", "warn"],
      ["log_backlog", "firing", "replica", "warn"],
      ["memory_pressure", "firing", null, "warn"],
      ["wal_disk_full", "firing", null, "error"],
      ["log_store_unreachable", "firing", null, "error"],
      ["mirror_unreachable", "firing", null, "warn"],
    ]);
    expect(h.posted[4]!.message).toBe(
      "chroma-lb's log store cannot be reached since 2026-01-01T00:00:00.000Z (connection refused (ECONNREFUSED)): writes are answered 503 with Retry-After and nothing is kept; reads go on from the instances",
    );
    expect(h.posted[0]!.message).toBe("instance replica is 90 s behind the log (20000 entries owed; ALERT_LAG_SECONDS=60); last replay error: timed out");

    h.posted.length = 0;
    state.lag.set("replica", { entries: 3, oldestAgeMs: 1_000, firstSeq: null, failing: 0, lastError: null });
    state.rssBytes = 100 * 1024 * 1024;
    state.diskFull = false;
    state.mirrorError = null;
    state.storeUnreachable = null;
    alertsOnce(deps);
    expect(h.posted.map((p) => [p.event, p.status, p.message])).toEqual([
      ["replication_lag", "resolved", "instance replica is within ALERT_LAG_SECONDS (60 s) of the log again"],
      ["log_backlog", "resolved", "instance replica owes 3 log entries, within ALERT_BACKLOG_ENTRIES again"],
      ["memory_pressure", "resolved", "chroma-lb uses 100 MB, within WAL_MAX_MEMORY_MB (400) again"],
      ["wal_disk_full", "resolved", "the write-ahead log is below WAL_MAX_DISK_MB again; writes are taken"],
      ["log_store_unreachable", "resolved", "the log store answers again; writes are taken"],
      ["mirror_unreachable", "resolved", "the Postgres mirror is reachable again and caught up"],
    ]);
  });

  test("an instance down is alerted (also one down from the start), all down too; its lag is not judged until it is back", () => {
    const h = harness({ minIntervalMs: 0 });
    const { deps, state } = fakeDeps(h.alerter);
    state.instances[1]!.healthy = false;
    state.lag.set("replica", { entries: 5, oldestAgeMs: 600_000, firstSeq: null, failing: 0, lastError: null });
    alertsOnce(deps);
    expect(h.posted.map((p) => [p.event, p.status, p.instance ?? null, p.message])).toEqual([
      ["instance_down", "firing", "replica", "instance replica is down: it has not answered since chroma-lb started"],
    ]);

    state.instances[0]!.healthy = false;
    alertsOnce(deps);
    expect(h.rows().slice(1)).toEqual([
      ["instance_down", "firing", "primary"],
      ["all_instances_down", "firing", null],
    ]);

    state.instances[0]!.healthy = true;
    state.instances[1]!.healthy = true;
    alertsOnce(deps);
    expect(h.rows().slice(3)).toEqual([
      ["instance_down", "resolved", "primary"],
      ["instance_down", "resolved", "replica"],
      ["replication_lag", "firing", "replica"],
      ["all_instances_down", "resolved", null],
    ]);
  });

  test("posts held-back alerts whose interval is over", () => {
    const h = harness({ minIntervalMs: 10_000 });
    const { deps, state } = fakeDeps(h.alerter);
    state.mirrorError = "down";
    alertsOnce(deps);
    state.mirrorError = null;
    alertsOnce(deps);
    state.mirrorError = "down again";
    h.advance(1_000);
    alertsOnce(deps);
    h.advance(9_000);
    alertsOnce(deps);
    expect(h.posted.map((p) => [p.event, p.status])).toEqual([
      ["mirror_unreachable", "firing"],
      ["mirror_unreachable", "resolved"],
      ["mirror_unreachable", "firing"],
    ]);
    expect(h.posted[2]!.message).toBe(
      "the Postgres mirror cannot be reached: down again; mappings are kept locally and synced once it returns (since 2025-01-01T00:00:01.000Z)",
    );
  });
});
