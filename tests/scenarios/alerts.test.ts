/**
 * Alerts reach a webhook (a local HTTP server) deduplicated: a replica SIGKILLed is alerted
 * once however many probes fail, its return is posted as the resolution, a second outage
 * within ALERT_MIN_INTERVAL is held back (and, ended in time, neither it nor its resolution
 * is posted), and a held-back outage that lasts past the interval is posted late. The
 * events list and `/metrics` (read by the strict text-format reader) tell the same story.
 */
import { afterAll, expect, test } from "bun:test";
import { parseExposition } from "../../src/observability/exposition";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";
import { alertReceiver } from "../support/alerts";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";

interface InstanceView {
  name: string;
  healthy: boolean;
  consecutive_failures: number;
  last_health_check: string | null;
}

const instance = async (lbUrl: string, name: string) =>
  (await json<{ instances: InstanceView[] }>(`${lbUrl}/admin/instances`)).instances.find((i) => i.name === name)!;

/** Waits until `count` more health checks of the instance have run (alert checks run on the same 1 s beat). */
async function probesPass(lbUrl: string, name: string, count: number) {
  const seen = new Set([(await instance(lbUrl, name)).last_health_check]);
  await waitFor(async () => {
    seen.add((await instance(lbUrl, name)).last_health_check);
    return seen.size > count;
  }, { message: `${count} more health checks of ${name}`, intervalMs: 100 });
}

const eventRows = async (lbUrl: string) =>
  (await json<{ events: Array<{ event: string; level: string; instance?: string; resolved?: boolean }> }>(`${lbUrl}/events`)).events.map(
    (e) => `${e.event} ${e.level} ${e.instance ?? "-"}${e.resolved ? " resolved" : ""}`,
  );

test("a killed replica is alerted once, its return resolves it, and a second outage within ALERT_MIN_INTERVAL is held back", async () => {
  using receiver = alertReceiver();
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    ALERT_WEBHOOK_URL: receiver.url,
    ALERT_MIN_INTERVAL: "300",
    // Polled conditions are checked every second, so a check that re-sent would show.
    ALERT_CHECK_INTERVAL: "1",
  });
  // Some traffic, for the request metrics.
  const created = await post(`${lb.url}${T}/collections`, { name: "alerts_docs", configuration: {} });
  expect(created.status).toBe(200);
  const added = await post(`${lb.url}${T}/collections/alerts_docs/add`, { ids: ["a"], embeddings: [[1, 2, 3]], documents: ["doc a"] });
  expect(added.status).toBe(201);

  // SIGKILL: a broken request or HEALTH_FAILS refused probes mark it down; more probes keep failing.
  await replica!.kill();
  await waitFor(() => receiver.alerts.length > 0, { message: "the instance_down alert", timeoutMs: 20_000 });
  await waitFor(async () => (await instance(lb.url, "replica")).consecutive_failures >= 5, { message: "several more failed probes", timeoutMs: 20_000 });
  expect(receiver.rows()).toEqual(["instance_down firing replica"]);
  expect(receiver.alerts[0]!.message).toStartWith("instance replica is down: ");
  expect(receiver.alerts[0]!.text).toStartWith("chroma-lb: instance replica is down");

  await replica!.restart();
  await waitFor(() => receiver.alerts.length > 1, { message: "the resolution", timeoutMs: 20_000 });
  expect(receiver.alerts.map((a) => ({ event: a.event, status: a.status, resolved: a.resolved, text: a.text }))).toEqual([
    { event: "instance_down", status: "firing", resolved: false, text: expect.stringContaining("instance replica is down") },
    { event: "instance_down", status: "resolved", resolved: true, text: "chroma-lb: resolved: instance replica is back" },
  ]);

  // A second outage (simulated) within ALERT_MIN_INTERVAL: held back, and since it ends
  // before the interval is over, neither it nor its resolution is posted.
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: false })).status).toBe(200);
  await probesPass(lb.url, "replica", 2);
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true })).status).toBe(200);
  await waitFor(async () => (await instance(lb.url, "replica")).healthy, { message: "the replica back" });
  await probesPass(lb.url, "replica", 2);
  expect(receiver.rows()).toEqual(["instance_down firing replica", "instance_down resolved replica"]);

  // The events list has every transition, and the alerts that were posted.
  const rows = await eventRows(lb.url);
  // Both instances' first probes run at once at start: their two "up" events come in either order.
  expect(rows.slice(0, 2).sort()).toEqual(["instance_health info primary", "instance_health info replica"]);
  expect(rows.slice(2)).toEqual([
    "instance_health warn replica",
    "instance_down error replica",
    "instance_health info replica",
    "instance_down info replica resolved",
    "instance_health warn replica",
    "instance_health info replica",
  ]);

  // /metrics passes the strict reader and counts the same.
  const families = parseExposition(await (await fetch(`${lb.url}/metrics`)).text());
  const all = [...families.values()].flatMap((f) => f.samples);
  const value = (name: string, labels: Record<string, string>) =>
    all.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
  expect({
    replicaDown: value("chroma_lb_instance_health_transitions_total", { instance: "replica", direction: "down" }),
    replicaUp: value("chroma_lb_instance_health_transitions_total", { instance: "replica", direction: "up" }),
    fired: value("chroma_lb_alerts_total", { event: "instance_down", outcome: "firing" }),
    resolved: value("chroma_lb_alerts_total", { event: "instance_down", outcome: "resolved" }),
    heldBack: (value("chroma_lb_alerts_total", { event: "instance_down", outcome: "suppressed" }) ?? 0) >= 1,
    healthy: value("chroma_lb_instance_healthy", { instance: "replica" }),
    added: value("chroma_lb_requests_total", { route_class: "record_write", status: "201", instance: "primary" }),
    created: value("chroma_lb_requests_total", { route_class: "catalog", status: "200", instance: "primary" }),
  }).toEqual({ replicaDown: 2, replicaUp: 3, fired: 1, resolved: 1, heldBack: true, healthy: 1, added: 1, created: 1 });
  // The failed requests to the replica (probes among them) are in its latency histogram.
  const failedToReplica = all
    .filter((s) => s.name === "chroma_lb_instance_request_duration_seconds_count" && s.labels.instance === "replica" && ["unreachable", "uncertain"].includes(s.labels.outcome!))
    .reduce((sum, s) => sum + s.value, 0);
  expect(failedToReplica).toBeGreaterThanOrEqual(3);
  expect(value("chroma_lb_request_duration_seconds_count", { route_class: "record_write" })).toBe(1);
}, 90_000);

test("an outage held back by ALERT_MIN_INTERVAL that still lasts when the interval is over is posted then", async () => {
  using receiver = alertReceiver();
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    ALERT_WEBHOOK_URL: receiver.url,
    ALERT_MIN_INTERVAL: "3",
    ALERT_CHECK_INTERVAL: "1",
  });
  const simulate = (healthy: boolean) => post(`${lb.url}/admin/instances/replica/health`, healthy ? { healthy, clear: true } : { healthy });

  expect((await simulate(false)).status).toBe(200);
  await waitFor(() => receiver.alerts.length === 1, { message: "the first alert" });
  expect((await simulate(true)).status).toBe(200);
  await waitFor(() => receiver.alerts.length === 2, { message: "its resolution" });
  const resolvedAtMs = performance.now();
  // Down again at once: held back, then posted when the interval (3 s from the first alert) is over.
  expect((await simulate(false)).status).toBe(200);
  await waitFor(() => receiver.alerts.length === 3, { message: "the held-back alert, late", timeoutMs: 10_000 });
  expect(performance.now() - resolvedAtMs).toBeGreaterThan(1_500);
  expect((await simulate(true)).status).toBe(200);
  await waitFor(() => receiver.alerts.length === 4, { message: "its resolution" });
  expect(receiver.rows()).toEqual(["instance_down firing replica", "instance_down resolved replica", "instance_down firing replica", "instance_down resolved replica"]);
  expect(receiver.alerts[2]!.message).toMatch(/^instance replica is down: simulated outage \(since \d{4}-\d\d-\d\dT[\d:.]+Z\)$/);
}, 60_000);
