/**
 * Health with hysteresis (HEALTH_FAILS=2, HEALTH_PASSES=2): a refused request marks an
 * instance down at once (passive); without traffic, two failed probes do (active); two passed
 * probes bring it back; a request Chroma refuses (4xx) never counts against an instance.
 * /admin/instances and /status carry the fields operators use; values that timing controls
 * (a probe in flight) are asserted by range, never exactly.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbProcess, waitFor } from "../support";
import { json, post } from "../support/http";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const intervalMs = 1_000;
const lbEnv = {
  HEALTH_CHECK_INTERVAL: "1",
  HEALTH_CHECK_TIMEOUT: "0.3",
  REQUEST_TIMEOUT: "5",
  HEALTH_FAILS: "2",
  HEALTH_PASSES: "2",
  // Reads prefer the replica whenever it may serve, so the first read after its death goes to it.
  READ_REPLICA_RATIO: "1",
};

interface InstanceStatus {
  name: string;
  healthy: boolean;
  state: string;
  consecutive_failures: number;
  total_requests: number;
  successful_requests: number;
  in_flight: number;
  last_health_check: string | null;
  last_error: string | null;
  [field: string]: unknown;
}

async function setup() {
  const servers = await startChromaServers(2);
  const [primary, replica] = servers;
  const lb = await startLbProcess({ ...lbEnv, CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const collection = await client.createCollection({ name: "health_checks", embeddingFunction: null });
  await collection.add({ ids: ["a", "b"], embeddings: [[1, 0], [0, 1]], documents: ["a", "b"] });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "both instances have the records" });
  const instance = async (name: string) => {
    const { instances } = await json<{ instances: InstanceStatus[] }>(`${lb.url}/admin/instances`);
    return instances.find((i) => i.name === name)!;
  };
  return {
    primary: primary!,
    replica: replica!,
    lb,
    collection,
    instance,
    async [Symbol.asyncDispose]() {
      await lb[Symbol.asyncDispose]();
      await servers[Symbol.asyncDispose]();
    },
  };
}

test("a killed instance is marked down at once by the first request it refuses (passive check)", async () => {
  await using env = await setup();
  const { lb } = env;
  const read = () => post(`${lb.url}${T}/collections/${env.collection.id}/get`, { ids: ["a"] });
  expect((await read()).headers.get("x-chroma-lb-instance")).toBe("replica");

  const killedMs = performance.now();
  await env.replica.kill("SIGKILL");
  const res = await read();
  expect({ status: res.status, instance: res.headers.get("x-chroma-lb-instance"), ids: ((await res.json()) as { ids: string[] }).ids }).toEqual({ status: 200, instance: "primary", ids: ["a"] });
  const replica = await env.instance("replica");
  const elapsedMs = performance.now() - killedMs;
  // Probes run once a second and need two failures: in under a second only the request can have marked it.
  expect(elapsedMs).toBeLessThan(intervalMs);
  expect({ healthy: replica.healthy, state: replica.state }).toEqual({ healthy: false, state: "down" });
  // A passive mark counts as HEALTH_FAILS failures at once (one probe may have failed meanwhile too).
  expect(replica.consecutive_failures).toBeGreaterThanOrEqual(2);
  expect(replica.last_error).toMatch(/refused/);
  expect(lb.logs()).toMatch(/"instance down".*"instance":"replica".*"reason":"request failed: connection refused/);
}, 60_000);

test("without traffic two failed probes mark a killed instance down, and two passed probes bring it back", async () => {
  await using env = await setup();
  const seen: Array<{ atMs: number } & InstanceStatus> = [];
  const watch = (until: (s: InstanceStatus) => boolean, timeoutMs: number, message: string) =>
    waitFor(
      async () => {
        const s = await env.instance("primary");
        seen.push({ ...s, atMs: performance.now() });
        return until(s) && s;
      },
      { timeoutMs, intervalMs: 20, message },
    );

  const killedMs = performance.now();
  await env.primary.kill("SIGKILL");
  await watch((s) => !s.healthy, 4 * intervalMs, "primary marked down by probes");
  const downMs = performance.now() - killedMs;
  // At most two intervals to the second failed probe, plus the probe timeout.
  expect(downMs).toBeLessThan(2 * intervalMs + 300 + 500);
  // One failed probe did not flip it.
  expect(seen.some((s) => s.healthy && s.consecutive_failures === 1)).toBe(true);
  const down = seen.at(-1)!;
  expect({ state: down.state, consecutive_failures: down.consecutive_failures }).toEqual({ state: "down", consecutive_failures: 2 });
  expect(down.last_error).toMatch(/refused/);
  expect(env.lb.logs()).toMatch(/"instance down".*"instance":"primary".*"reason":"probes failed/);

  seen.length = 0;
  await env.primary.restart();
  const restartedMs = performance.now();
  const up = await watch((s) => s.healthy, 4 * intervalMs, "primary marked up by probes");
  const upMs = performance.now() - restartedMs;
  expect(upMs).toBeLessThan(2 * intervalMs + 300 + 500);
  // One passed probe did not flip it: a moment with the failures reset and the instance still down.
  const firstPass = seen.find((s) => !s.healthy && s.consecutive_failures === 0);
  expect(firstPass).toBeDefined();
  expect(Date.parse(up.last_health_check!) - Date.parse(firstPass!.last_health_check!)).toBeGreaterThanOrEqual(intervalMs / 2);
  expect({ healthy: up.healthy, state: up.state, consecutive_failures: up.consecutive_failures }).toEqual({ healthy: true, state: "healthy", consecutive_failures: 0 });
}, 60_000);

test("queries Chroma refuses (4xx) or answers empty (n_results 0) never count against an instance", async () => {
  await using env = await setup();
  const { lb } = env;
  const before = await json<{ instances: InstanceStatus[] }>(`${lb.url}/admin/instances`);
  const query = (body: unknown) => post(`${lb.url}${T}/collections/${env.collection.id}/query`, body);
  // More of each than HEALTH_FAILS, on both instances' turn (READ_REPLICA_RATIO=1 sends them to the replica).
  for (let i = 0; i < 3; i++) {
    const wrongDimension = await query({ query_embeddings: [[1, 0, 0]], n_results: 1 });
    expect({ status: wrongDimension.status, body: await wrongDimension.json() }).toEqual({
      status: 400,
      body: { error: "InvalidArgumentError", message: expect.stringMatching(/dimension/) },
    });
    // Chroma answers n_results 0 with empty lists (see /work/shared/chroma-notes.md), and so does chroma-lb.
    const none = await query({ query_embeddings: [[1, 0]], n_results: 0 });
    expect({ status: none.status, ids: ((await none.json()) as { ids: string[][] }).ids }).toEqual({ status: 200, ids: [[]] });
  }
  // A health check runs after them: it sees both instances fine.
  const checkedMs = Math.max(...before.instances.map((i) => Date.parse(i.last_health_check!)));
  await waitFor(async () => (await env.instance("replica")).last_health_check! > new Date(checkedMs).toISOString(), { message: "one more health check" });
  const after = await json<{ instances: InstanceStatus[] }>(`${lb.url}/admin/instances`);
  expect(
    after.instances.map((instance, i) => ({
      name: instance.name,
      healthy: instance.healthy,
      state: instance.state,
      consecutive_failures: instance.consecutive_failures,
      last_error: instance.last_error,
      // Every one of them reached an instance and counts as a success for it: a 4xx is the caller's fault.
      failed_requests:
        instance.total_requests - instance.successful_requests - (before.instances[i]!.total_requests - before.instances[i]!.successful_requests),
    })),
  ).toEqual(
    ["primary", "replica"].map((name) => ({ name, healthy: true, state: "healthy", consecutive_failures: 0, last_error: null, failed_requests: 0 })),
  );
  expect(after.instances.reduce((sum, i) => sum + i.total_requests, 0) - before.instances.reduce((sum, i) => sum + i.total_requests, 0)).toBe(6);
  // And a real query still answers.
  const ok = await query({ query_embeddings: [[1, 0]], n_results: 1 });
  expect({ status: ok.status, ids: ((await ok.json()) as { ids: string[][] }).ids }).toEqual({ status: 200, ids: [["a"]] });
}, 60_000);

test("/admin/instances and /status report each instance with health, counters, role, state, lag and last error", async () => {
  await using env = await setup();
  const { lb } = env;
  const before = await env.instance("replica");
  for (let i = 0; i < 3; i++) {
    const res = await post(`${lb.url}${T}/collections/${env.collection.id}/get`, { ids: ["b"] });
    expect(res.headers.get("x-chroma-lb-instance")).toBe("replica");
  }
  const isoTime = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const instanceShape = (name: string, role: string, url: string, priority: number) => ({
    name,
    url,
    role,
    state: "healthy",
    healthy: true,
    serving: true,
    maintenance: false,
    priority,
    consecutive_failures: 0,
    total_requests: expect.any(Number),
    successful_requests: expect.any(Number),
    success_rate: 100,
    // A probe's heartbeat (and a scheduled pass's request) may be in flight at the moment of reading: asserted below.
    in_flight: expect.any(Number),
    last_health_check: isoTime,
    last_error: null,
    last_error_at: null,
    healthy_since: isoTime,
    simulated: null,
    probe_healthy: true,
    lag: { entries: 0, seconds: 0, failing_entries: 0, last_replay_error: null },
    diverged_collections: [],
  });
  const expectedInstances = [instanceShape("primary", "primary", env.primary.url, 0), instanceShape("replica", "replica", env.replica.url, 1)];

  /**
   * No client request is in flight here: at most a probe's heartbeat and one request of a
   * scheduled pass (adoption lists each instance's collections every minute, and may
   * overlap a probe; one CI run saw 2 on the primary).
   */
  const expectIdle = (instances: Array<{ in_flight: number }>) => expect(instances.map((i) => i.in_flight <= 2)).toEqual(instances.map(() => true));

  const admin = await json(`${lb.url}/admin/instances`);
  const replicaNow = admin.instances[1];
  expect({ total: replicaNow.total_requests - before.total_requests, successful: replicaNow.successful_requests - before.successful_requests }).toEqual({ total: 3, successful: 3 });
  expect(admin).toEqual({ instances: expectedInstances, healthy_count: 2, total_count: 2 });
  expectIdle(admin.instances);
  // Probes keep running: the next one comes within a few intervals.
  await waitFor(async () => (await env.instance("replica")).last_health_check! > replicaNow.last_health_check, {
    timeoutMs: 3 * intervalMs,
    message: "the next health check of the replica",
  });

  const status = await json(`${lb.url}/status`);
  expect(status.instances).toEqual(expectedInstances);
  expectIdle(status.instances);
  expect({
    service: status.service,
    healthy_instances: status.healthy_instances,
    total_instances: status.total_instances,
    write_target: status.write_target,
    unified_wal: status.unified_wal,
  }).toEqual({
    service: "chroma-lb",
    healthy_instances: 2,
    total_instances: 2,
    write_target: "primary",
    unified_wal: {
      pending_writes: 0,
      is_syncing: expect.any(Boolean),
      sync_interval_seconds: 1,
      head_position: 2,
      disk_bytes: expect.any(Number),
      disk_max_bytes: 10 * 1024 * 1024 * 1024,
    },
  });
  expect(Object.keys(status.high_volume_config).sort()).toEqual(
    ["current_memory_mb", "default_batch_size", "max_batch_size", "max_memory_mb", "max_workers", "peak_memory_mb"],
  );
  expect(Object.keys(status.performance_stats)).toEqual(
    expect.arrayContaining(["batches", "memory_pressure_events", "adaptive_batch_reductions", "successful_syncs", "failed_syncs", "sync_cycles"]),
  );

  // A dead instance shows it: down, failures counted, the error named.
  await env.replica.kill("SIGKILL");
  const dead = await waitFor(async () => {
    const r = await env.instance("replica");
    return !r.healthy && r;
  }, { timeoutMs: 4 * intervalMs, message: "replica down" });
  const lastErrorAt = dead.last_error_at as string;
  expect(dead).toEqual({
    ...instanceShape("replica", "replica", env.replica.url, 1),
    state: "down",
    healthy: false,
    serving: false,
    consecutive_failures: expect.any(Number),
    success_rate: 100,
    last_error: expect.stringMatching(/refused/),
    last_error_at: isoTime,
    healthy_since: null,
    probe_healthy: false,
  });
  expectIdle([dead]);
  expect(Date.parse(lastErrorAt)).toBeLessThanOrEqual(Date.now());
}, 60_000);
