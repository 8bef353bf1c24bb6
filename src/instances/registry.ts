/**
 * What chroma-lb knows of each instance: health with hysteresis (active probes), passive
 * marks from proxied requests, simulated outages, maintenance, and request counters.
 * Active and passive health are separate inputs to one state, as in Caddy's reverse proxy.
 */
import type { Config, InstanceConfig } from "../config";
import { ChromaInstanceClient } from "../chroma/client";
import type { Logger } from "../observability/log";

export type InstanceState = "healthy" | "down" | "catching_up" | "maintenance";

export interface SimulatedHealth {
  healthy: boolean;
  /** When the simulation ends; null holds until changed. */
  untilMs: number | null;
}

export class Instance {
  readonly client: ChromaInstanceClient;
  /** What probes and passive marks say. Starts down until the first probe answers. */
  checkedHealthy = false;
  consecutiveFailures = 0;
  consecutivePasses = 0;
  simulated: SimulatedHealth | null = null;
  maintenance = false;
  inFlight = 0;
  totalRequests = 0;
  successfulRequests = 0;
  lastHealthCheckMs: number | null = null;
  lastError: string | null = null;
  lastErrorAtMs: number | null = null;
  downSinceMs: number | null = Date.now();
  lastTransitionMs = Date.now();
  /**
   * Back from an outage with log entries to apply: it takes no writes (and, per collection,
   * no reads) until it has caught up. Set when it comes back, cleared once it owes nothing
   * beyond the writes in flight.
   */
  catchingUp = false;
  /** From the instance's pre-flight checks: the most records one request may carry. */
  maxBatchSize = 5461;

  constructor(
    readonly name: string,
    readonly url: string,
    /** 0 is the preferred write target. */
    readonly priority: number,
  ) {
    this.client = new ChromaInstanceClient(url);
  }

  /** Healthy as far as routing is concerned: a simulated outage wins over what probes see. */
  get healthy(): boolean {
    // A simulation holds until the registry ends it (on time, see simulate), never silently
    // here: its end must reach the listeners, which mark a returning instance as catching up
    // before it takes writes again.
    if (this.simulated) return this.simulated.healthy;
    return this.checkedHealthy;
  }

  /** May receive client requests (healthy and not drained for maintenance). */
  get serving(): boolean {
    return this.healthy && !this.maintenance;
  }

  get successRate(): number {
    return this.totalRequests === 0 ? 1 : this.successfulRequests / this.totalRequests;
  }
}

export type HealthListener = (instance: Instance, healthy: boolean) => void;

export class InstanceRegistry {
  readonly all: Instance[];
  private listeners: HealthListener[] = [];
  /** Ends each timed simulation when its duration is over (see simulate). */
  private readonly simulationTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** Instances probed at least once: the first answer decides at once, without thresholds. */
  private readonly everProbed = new Set<string>();

  constructor(
    instances: InstanceConfig[],
    private readonly config: Pick<Config, "healthFails" | "healthPasses" | "healthCheckTimeoutMs">,
    private readonly log: Logger,
  ) {
    this.all = instances.map((c, i) => new Instance(c.name, c.url, i));
  }

  get(name: string): Instance | undefined {
    return this.all.find((i) => i.name === name);
  }

  onChange(listener: HealthListener) {
    this.listeners.push(listener);
  }

  /** Tells the listeners when routing's view of the instance's health changed. */
  private notifyIfChanged(instance: Instance, healthyBefore: boolean) {
    if (healthyBefore !== instance.healthy) for (const listener of this.listeners) listener(instance, instance.healthy);
  }

  /**
   * Whether the instance still owes entries beyond `inFlightEntries` (writes being answered
   * right now, which every instance owes for a moment): when it came back from an outage it
   * starts catching up; once it owes no more than that, it has caught up.
   */
  updateCatchingUp(instance: Instance, owedEntries: number, inFlightEntries = 0, cameBack = false) {
    if (cameBack) instance.catchingUp = owedEntries > inFlightEntries;
    else if (instance.catchingUp && owedEntries <= inFlightEntries) {
      instance.catchingUp = false;
      this.log.info("instance caught up", { instance: instance.name });
    }
  }

  private setHealthy(instance: Instance, healthy: boolean, reason: string) {
    if (instance.checkedHealthy === healthy) return;
    const before = instance.healthy;
    instance.checkedHealthy = healthy;
    instance.lastTransitionMs = Date.now();
    instance.downSinceMs = healthy ? null : Date.now();
    this.log[healthy ? "info" : "warn"](healthy ? "instance up" : "instance down", { instance: instance.name, reason });
    this.notifyIfChanged(instance, before);
  }

  /** Passive check: a request never reached the instance or got no answer; it is marked down at once. */
  reportTransportFailure(instance: Instance, reason: string) {
    instance.lastError = reason;
    instance.lastErrorAtMs = Date.now();
    instance.consecutivePasses = 0;
    instance.consecutiveFailures = Math.max(instance.consecutiveFailures + 1, this.config.healthFails);
    this.setHealthy(instance, false, `request failed: ${reason}`);
  }

  /** Counts a proxied request that got an answer (any status: a 4xx never counts against an instance). */
  reportAnswered(instance: Instance, status: number) {
    instance.totalRequests += 1;
    if (status < 500) instance.successfulRequests += 1;
  }

  reportFailedRequest(instance: Instance) {
    instance.totalRequests += 1;
  }

  /**
   * One active check: heartbeat, then a cheap real read (count of collections in the
   * default database), each within the probe timeout. Thresholds give hysteresis.
   */
  async probeOnce(instance: Instance): Promise<boolean> {
    const timeoutMs = this.config.healthCheckTimeoutMs;
    let ok = false;
    let reason = "";
    const heartbeat = await instance.client.request({ method: "GET", path: "/api/v2/heartbeat", timeoutMs });
    if (!heartbeat.ok) reason = heartbeat.reason;
    else if (heartbeat.status !== 200) reason = `heartbeat answered ${heartbeat.status}`;
    else {
      const real = await instance.client.request({
        method: "GET",
        path: "/api/v2/tenants/default_tenant/databases/default_database/collections_count",
        timeoutMs,
      });
      if (!real.ok) reason = real.reason;
      else if (real.status >= 500) reason = `collections_count answered ${real.status}`;
      else ok = true;
    }
    instance.lastHealthCheckMs = Date.now();
    if (ok) {
      instance.consecutiveFailures = 0;
      instance.consecutivePasses += 1;
      // The very first probe decides at once; later recoveries need the passes threshold.
      const firstDecision = !this.everProbed.has(instance.name);
      if (!instance.checkedHealthy && (firstDecision || instance.consecutivePasses >= this.config.healthPasses)) {
        await this.refreshPreflight(instance);
        this.setHealthy(instance, true, "probes passed");
      }
    } else {
      instance.consecutivePasses = 0;
      instance.consecutiveFailures += 1;
      instance.lastError = reason;
      instance.lastErrorAtMs = Date.now();
      if (instance.checkedHealthy && instance.consecutiveFailures >= this.config.healthFails) {
        this.setHealthy(instance, false, `probes failed: ${reason}`);
      }
    }
    this.everProbed.add(instance.name);
    return ok;
  }

  private async refreshPreflight(instance: Instance) {
    const result = await instance.client.json<{ max_batch_size?: number }>(
      "GET",
      "/api/v2/pre-flight-checks",
      undefined,
      this.config.healthCheckTimeoutMs * 2,
    );
    const size = result.json?.max_batch_size;
    if (result.ok && typeof size === "number" && size > 0) instance.maxBatchSize = size;
  }

  /** Probes every instance at once; a simulated outage is left alone (it wins until it ends). */
  async checkAll(): Promise<void> {
    await Promise.all(this.all.map((i) => this.probeOnce(i)));
  }

  simulate(instance: Instance, healthy: boolean, durationMs: number | null) {
    const before = instance.healthy;
    const simulation = { healthy, untilMs: durationMs === null ? null : Date.now() + durationMs };
    instance.simulated = simulation;
    clearTimeout(this.simulationTimers.get(instance.name));
    if (durationMs !== null) {
      // Ended on time rather than at the next health check, so routing and listeners see the return together.
      const timer = setTimeout(() => {
        if (instance.simulated === simulation) this.endSimulation(instance);
      }, durationMs);
      timer.unref?.();
      this.simulationTimers.set(instance.name, timer);
    }
    this.log.warn("simulated health set", { instance: instance.name, healthy, durationMs });
    this.notifyIfChanged(instance, before);
  }

  private endSimulation(instance: Instance) {
    const before = instance.healthy;
    instance.simulated = null;
    this.log.info("simulated health ended", { instance: instance.name });
    this.notifyIfChanged(instance, before);
  }

  clearSimulation(instance: Instance) {
    clearTimeout(this.simulationTimers.get(instance.name));
    this.endSimulation(instance);
  }
}
