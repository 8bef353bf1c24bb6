/**
 * When a failed probe counts against an instance (src/instances/registry.ts): the probe is
 * the heartbeat alone; a timed-out or 5xx probe does not count while the instance answers
 * requests successfully, nor while chroma-lb's own operation runs; a refused connection
 * always counts; HEALTH_FAILS / HEALTH_PASSES hysteresis and the first-probe decision stay.
 * A small fake Chroma whose heartbeat can answer, answer 500, or be held past the timeout.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { InstanceRegistry, type Instance } from "../../src/instances/registry";
import { createLogger } from "../../src/observability/log";
import { waitFor } from "../support/wait";

type HeartbeatMode = "ok" | "500" | "held";

/** A fake Chroma: heartbeat and pre-flight only, with a knob for what the heartbeat does. */
function fakeChroma() {
  const paths: string[] = [];
  const held: Array<() => void> = [];
  const state = { heartbeat: "ok" as HeartbeatMode };
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(request) {
      const path = new URL(request.url).pathname;
      paths.push(path);
      if (path === "/api/v2/heartbeat") {
        const answer = () => Response.json({ "nanosecond heartbeat": 1 });
        if (state.heartbeat === "500") return Response.json({ error: "InternalError", message: "Internal error in getting count" }, { status: 500 });
        // Held until the test releases it or the fake stops: longer than any probe timeout, without a timer.
        if (state.heartbeat === "held") return new Promise<Response>((resolve) => held.push(() => resolve(answer())));
        return answer();
      }
      if (path === "/api/v2/pre-flight-checks") return Response.json({ max_batch_size: 100, supports_base64_encoding: true });
      return new Response(null, { status: 404 });
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    state,
    /** Heartbeats received so far. */
    heartbeats: () => paths.filter((p) => p === "/api/v2/heartbeat").length,
    paths,
    release() {
      for (const answer of held.splice(0)) answer();
    },
    /** Stops listening: from now on connections are refused. */
    stop() {
      this.release();
      void server.stop(true);
    },
  };
}

type Fake = ReturnType<typeof fakeChroma>;
const fakes: Fake[] = [];
afterEach(() => {
  for (const fake of fakes.splice(0)) fake.stop();
});

/** The fake answers within milliseconds; this leaves room on a loaded machine while held heartbeats time out. */
const probeTimeoutMs = 200;

/** A registry over fresh fakes, each instance already probed once (healthy), with its health changes recorded. */
async function setup(names: string[] = ["primary"]) {
  const instanceFakes = names.map(() => fakeChroma());
  fakes.push(...instanceFakes);
  const logLines: string[] = [];
  const registry = new InstanceRegistry(
    names.map((name, i) => ({ name, url: instanceFakes[i]!.url })),
    { healthFails: 2, healthPasses: 2, healthCheckTimeoutMs: probeTimeoutMs },
    createLogger("debug", (line) => logLines.push(line)),
  );
  const changes: string[] = [];
  registry.onChange((instance, healthy) => changes.push(`${instance.name} ${healthy ? "up" : "down"}`));
  await registry.checkAll();
  expect(registry.all.map((i) => i.healthy)).toEqual(names.map(() => true));
  changes.length = 0;
  return { registry, fakes: instanceFakes, fake: instanceFakes[0]!, instance: registry.all[0]!, changes, logLines };
}

/** The counters a probe moves, in one object so a test asserts them whole. */
const counters = (i: Instance) => ({
  healthy: i.healthy,
  consecutiveFailures: i.consecutiveFailures,
  consecutivePasses: i.consecutivePasses,
  probeFailuresExcused: i.probeFailuresExcused,
});

/** A promise the test resolves when it chooses. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

describe("the probe", () => {
  test("asks the heartbeat only, and the first answer decides at once", async () => {
    const { fake, instance } = await setup();
    expect(fake.paths).toEqual(["/api/v2/heartbeat", "/api/v2/pre-flight-checks"]);
    expect({ ...counters(instance), maxBatchSize: instance.maxBatchSize }).toEqual({
      healthy: true,
      consecutiveFailures: 0,
      consecutivePasses: 1,
      probeFailuresExcused: 0,
      maxBatchSize: 100,
    });
  });

  test("a probe already in flight is shared by a second caller and counted once", async () => {
    const { registry, fake, instance } = await setup();
    fake.state.heartbeat = "held";
    const first = registry.probeOnce(instance);
    const second = registry.probeOnce(instance);
    expect(await Promise.all([first, second])).toEqual([false, false]);
    expect(fake.heartbeats()).toBe(2);
    expect(instance.consecutiveFailures).toBe(1);
  });
});

describe("without requests answered, failed probes count (HEALTH_FAILS=2, HEALTH_PASSES=2)", () => {
  for (const mode of ["held", "500"] as const) {
    test(`a ${mode === "held" ? "timed-out" : "500"} heartbeat: one failure keeps it up, the second marks it down, two passes bring it back`, async () => {
      const { registry, fake, instance, changes } = await setup();
      fake.state.heartbeat = mode;
      expect(await registry.probeOnce(instance)).toBe(false);
      expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 1, consecutivePasses: 0, probeFailuresExcused: 0 });
      await registry.probeOnce(instance);
      expect(counters(instance)).toEqual({ healthy: false, consecutiveFailures: 2, consecutivePasses: 0, probeFailuresExcused: 0 });
      expect(instance.lastError).toBe(mode === "held" ? "timed out" : "heartbeat answered 500");

      fake.release();
      fake.state.heartbeat = "ok";
      await registry.probeOnce(instance);
      expect(counters(instance)).toEqual({ healthy: false, consecutiveFailures: 0, consecutivePasses: 1, probeFailuresExcused: 0 });
      await registry.probeOnce(instance);
      expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 0, consecutivePasses: 2, probeFailuresExcused: 0 });
      expect(changes).toEqual(["primary down", "primary up"]);
    });
  }

  test("answers of 500 to requests are no successes: they excuse nothing", async () => {
    const { registry, fake, instance } = await setup();
    fake.state.heartbeat = "held";
    registry.reportAnswered(instance, 500);
    registry.reportAnswered(instance, 503);
    await registry.probeOnce(instance);
    await registry.probeOnce(instance);
    expect(counters(instance)).toEqual({ healthy: false, consecutiveFailures: 2, consecutivePasses: 0, probeFailuresExcused: 0 });
    expect(instance.lastSuccessMs).toBeNull();
  });
});

describe("passive successes: an instance answering requests is not marked down by a slow or failed probe", () => {
  for (const mode of ["held", "500"] as const) {
    test(`a ${mode === "held" ? "timed-out" : "500"} probe does not count after a success since the previous probe started`, async () => {
      const { registry, fake, instance, changes } = await setup();
      fake.state.heartbeat = mode;
      // A 4xx is the caller's fault: it is a success for the instance.
      registry.reportAnswered(instance, 404);
      expect(instance.lastSuccessMs).toBeNumber();
      await registry.probeOnce(instance);
      expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 0, consecutivePasses: 1, probeFailuresExcused: 1 });
      expect(instance.lastError).toBeNull();

      // The success came before the probe that just failed started: the next probe counts.
      await registry.probeOnce(instance);
      expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 1, consecutivePasses: 0, probeFailuresExcused: 1 });
      // A success now excuses the next probe again, and the counters stay where they were.
      registry.reportAnswered(instance, 201);
      await registry.probeOnce(instance);
      expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 1, consecutivePasses: 0, probeFailuresExcused: 2 });
      // A hung instance answers nothing more: it is down one probe later than without traffic.
      await registry.probeOnce(instance);
      expect(counters(instance)).toEqual({ healthy: false, consecutiveFailures: 2, consecutivePasses: 0, probeFailuresExcused: 2 });
      expect(changes).toEqual(["primary down"]);
    });
  }

  test("a success while the probe runs excuses it", async () => {
    const { registry, fake, instance, logLines } = await setup();
    fake.state.heartbeat = "held";
    await registry.probeOnce(instance);
    expect(instance.consecutiveFailures).toBe(1);
    const heartbeatsBefore = fake.heartbeats();
    const probe = registry.probeOnce(instance);
    await waitFor(() => fake.heartbeats() > heartbeatsBefore, { message: "the probe reached the fake" });
    registry.reportAnswered(instance, 200);
    expect(await probe).toBe(false);
    expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 1, consecutivePasses: 0, probeFailuresExcused: 1 });
    expect(logLines.some((line) => line.includes('"message":"probe failed but not counted"') && line.includes("answered requests"))).toBe(true);
  });

  test("a refused connection always counts, even after successes and during an own operation", async () => {
    const { registry, fake, instance, changes } = await setup();
    fake.stop();
    const operation = gate();
    const running = registry.whileOwnOperation(() => operation.opened);
    registry.reportAnswered(instance, 200);
    await registry.probeOnce(instance);
    registry.reportAnswered(instance, 200);
    await registry.probeOnce(instance);
    operation.open();
    await running;
    expect(counters(instance)).toEqual({ healthy: false, consecutiveFailures: 2, consecutivePasses: 0, probeFailuresExcused: 0 });
    expect(instance.lastError).toMatch(/refused/);
    expect(changes).toEqual(["primary down"]);
  });
});

describe("own operations: probe failures of any instance are not counted while one runs", () => {
  test("timed-out and 500 probes of every instance leave the counters where they were", async () => {
    const { registry, fakes, changes } = await setup(["primary", "replica"]);
    const [primary, replica] = registry.all as [Instance, Instance];
    fakes[0]!.state.heartbeat = "500";
    fakes[1]!.state.heartbeat = "held";
    // One failure each before the operation: it must not be advanced to HEALTH_FAILS meanwhile.
    await registry.checkAll();
    const before = { healthy: true, consecutiveFailures: 1, consecutivePasses: 0, probeFailuresExcused: 0 };
    expect([counters(primary), counters(replica)]).toEqual([before, before]);

    const operation = gate();
    const running = registry.whileOwnOperation(async () => {
      await operation.opened;
      return "reset done";
    });
    expect(registry.ownOperationRunning).toBe(true);
    await registry.checkAll();
    await registry.checkAll();
    const excused = { ...before, probeFailuresExcused: 2 };
    expect([counters(primary), counters(replica)]).toEqual([excused, excused]);
    operation.open();
    expect(await running).toBe("reset done");
    expect(registry.ownOperationRunning).toBe(false);
    expect(changes).toEqual([]);

    // Once it has ended, failures count again.
    await registry.checkAll();
    expect([primary.healthy, replica.healthy]).toEqual([false, false]);
    expect(changes).toEqual(["primary down", "replica down"]);
  });

  test("a probe that overlapped an operation which ended before the probe did is not counted", async () => {
    const { registry, fake, instance } = await setup();
    fake.state.heartbeat = "held";
    const probe = registry.probeOnce(instance);
    await waitFor(() => fake.heartbeats() > 1, { message: "the probe reached the fake" });
    await registry.whileOwnOperation(async () => {});
    await probe;
    expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 0, consecutivePasses: 1, probeFailuresExcused: 1 });
  });

  test("an operation that fails still ends: its error reaches the caller and later failures count", async () => {
    const { registry, fake, instance } = await setup();
    await expect(registry.whileOwnOperation(async () => Promise.reject(new Error("reset of replica failed")))).rejects.toThrow("reset of replica failed");
    expect(registry.ownOperationRunning).toBe(false);
    fake.state.heartbeat = "500";
    await registry.probeOnce(instance);
    await registry.probeOnce(instance);
    expect(counters(instance)).toEqual({ healthy: false, consecutiveFailures: 2, consecutivePasses: 0, probeFailuresExcused: 0 });
  });

  test("operations may nest or overlap: failures count again only once the last has ended", async () => {
    const { registry, fake, instance } = await setup();
    fake.state.heartbeat = "500";
    const first = gate();
    const second = gate();
    const runs = [registry.whileOwnOperation(() => first.opened), registry.whileOwnOperation(() => second.opened)];
    first.open();
    await runs[0];
    await registry.probeOnce(instance);
    expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 0, consecutivePasses: 1, probeFailuresExcused: 1 });
    second.open();
    await runs[1];
    await registry.probeOnce(instance);
    expect(counters(instance)).toEqual({ healthy: true, consecutiveFailures: 1, consecutivePasses: 0, probeFailuresExcused: 1 });
  });
});
