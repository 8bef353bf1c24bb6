/**
 * A simulated outage never hides a real one. `POST /admin/instances/{name}/health` with
 * `{"healthy": true}` (what the old balancer's operators send to end a simulated outage,
 * with or without a duration) ends any simulation and hands the instance back to the
 * checker: after it, a SIGKILL of that instance shows in /health and /status within 2 s,
 * while a light read load runs, and a dead instance stays down whatever is sent.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";

afterAll(() => killAll());

/** The most /health and /status may take to show a SIGKILLed instance down. */
const shownDownMsMax = 2_000;

interface InstanceStatus {
  name: string;
  healthy: boolean;
  state: string;
  simulated: { healthy: boolean; until: string | null } | null;
  probe_healthy: boolean;
}

test("{healthy: true} ends any simulation; a SIGKILL after it shows down within 2 s, and a dead instance never looks alive", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    HEALTH_CHECK_INTERVAL: "1",
    HEALTH_CHECK_TIMEOUT: "0.3",
  });
  const replicaStatus = async () => (await json<{ instances: InstanceStatus[] }>(`${lb.url}/status`)).instances[1]!;
  const healthyInstances = async () => (await json<{ healthy_instances: string }>(`${lb.url}/health`)).healthy_instances;
  const setHealth = async (body: unknown) => {
    const res = await post(`${lb.url}/admin/instances/replica/health`, body);
    return { status: res.status, body: await res.json() };
  };

  // A light read load, as in production: the client's reads reach both instances.
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const docs = await client.createCollection({ name: "docs", embeddingFunction: null });
  await docs.add({ ids: ["a", "b"], embeddings: [[1, 2], [3, 4]], documents: ["a", "b"] });
  let reading = true;
  const reads = (async () => {
    while (reading) {
      await docs.get({ ids: ["a"] }).catch(() => undefined);
      await Bun.sleep(50);
    }
  })();

  try {
    // 1. A simulated outage takes the replica out; what probes see stays in view.
    expect(await setHealth({ healthy: false })).toEqual({
      status: 200,
      body: { success: true, instance: "replica", health_set_to: false, original_health: true, permanent: true },
    });
    expect(await healthyInstances()).toBe("1/2");
    expect(await replicaStatus()).toMatchObject({ healthy: false, state: "down", simulated: { healthy: false, until: null }, probe_healthy: true });

    // 2. `{"healthy": true}` without a duration ends it: the checker decides again.
    expect(await setHealth({ healthy: true })).toEqual({
      status: 200,
      body: {
        success: true,
        instance: "replica",
        health_set_to: true,
        original_health: false,
        permanent: true,
        simulation_ended: true,
        message: expect.stringContaining("what the checker sees (healthy)"),
      },
    });
    expect(await replicaStatus()).toMatchObject({ healthy: true, simulated: null, probe_healthy: true });
    await waitFor(async () => (await healthyInstances()) === "2/2", { message: "2/2 once the simulation ended" });

    // 3. A real outage after that call shows within 2 s.
    await replica!.kill("SIGKILL");
    const killedMs = performance.now();
    await waitFor(
      async () => {
        const [health, status] = await Promise.all([healthyInstances(), replicaStatus()]);
        return health === "1/2" && status.state === "down" && !status.healthy;
      },
      { timeoutMs: shownDownMsMax, intervalMs: 20, message: "/health and /status show the killed replica down" },
    );
    const shownMs = performance.now() - killedMs;
    console.log(`killed replica shown down after ${Math.round(shownMs)} ms`);
    expect(shownMs).toBeLessThan(shownDownMsMax);

    // 4. No call makes the dead instance look alive: not `healthy: true` with a duration, not `clear`.
    expect(await setHealth({ healthy: true, duration_seconds: 60 })).toEqual({
      status: 200,
      body: expect.objectContaining({ success: true, health_set_to: false, original_health: false, simulation_ended: true }),
    });
    expect(await setHealth({ healthy: true, clear: true })).toEqual({ status: 200, body: expect.objectContaining({ health_set_to: false }) });
    expect(await healthyInstances()).toBe("1/2");
    expect(await replicaStatus()).toMatchObject({ healthy: false, state: "down", simulated: null, probe_healthy: false });
    const health = await fetch(`${lb.url}/health`);
    expect({ status: health.status, body: await health.json() }).toMatchObject({ status: 200, body: { status: "degraded", healthy_instances: "1/2" } });

    // 5. A timed simulation of the dead instance, then its end: still down throughout.
    expect((await setHealth({ healthy: false, duration_seconds: 30 })).body).toMatchObject({ health_set_to: false, will_restore_in_seconds: 30 });
    expect((await setHealth({ healthy: true })).body).toMatchObject({ health_set_to: false, simulation_ended: true });
    expect(await replicaStatus()).toMatchObject({ healthy: false, state: "down", simulated: null });

    // 6. Back for real: the checker brings it up by itself.
    await replica!.restart();
    await waitFor(async () => (await healthyInstances()) === "2/2", { timeoutMs: 10_000, message: "replica up again by its probes" });
  } finally {
    reading = false;
    await reads;
  }
}, 60_000);
