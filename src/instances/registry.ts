/**
 * What chroma-lb knows of each instance: health with hysteresis (active probes), passive
 * marks from proxied requests, simulated outages, maintenance, and request counters.
 * Active and passive health are separate inputs to one state, as in Caddy's reverse proxy.
 *
 * When a failed probe counts (see probeOnce):
 * - The probe is `GET /api/v2/heartbeat` alone. Measured on Chroma 1.0.5, it answers 200
 *   within milliseconds during a 100,000-id add and during back-to-back resets, while a
 *   catalog read (`collections_count`) stalls for seconds under the add and answers 500
 *   while a reset runs: a probe that touches the catalog reports load as an outage.
 * - A probe that could not connect at all (connection refused) always counts: no busy
 *   Chroma refuses connections, a stopped one does.
 * - A probe that timed out, lost its connection, or was answered 5xx does not count when
 *   the instance answered a request successfully (status < 500, a client request or a
 *   replayed batch) since the previous probe started, or while this probe ran: an instance
 *   that is doing work for chroma-lb is up, whatever one slow probe says.
 * - Nor does it count while chroma-lb's own operations run (reset, tenant, database and
 *   collection changes; see whileOwnOperation), during which Chroma may answer slowly or
 *   with errors by design.
 * Requests merely in flight excuse nothing: a hung instance keeps its requests in flight
 * until REQUEST_TIMEOUT, and the heartbeat stays fast under load, so a heartbeat that times
 * out while requests are in flight and none completes is the sign of a hang, not of work.
 */
import type { Config, InstanceConfig } from "../config";
import { ChromaInstanceClient } from "../chroma/client";
import type { Logger } from "../observability/log";

export type InstanceState = "healthy" | "down" | "catching_up" | "maintenance";

/**
 * A simulated outage. A simulation can only take an instance out, never keep a dead one in:
 * a simulated recovery would hide a real outage from routing, /health, /status and the
 * dashboard (the old balancer's `{"healthy": true}` pinned a killed instance "healthy").
 */
export interface SimulatedOutage {
  /** When the simulation ends; null holds until ended. */
  untilMs: number | null;
}

export class Instance {
  readonly client: ChromaInstanceClient;
  /** What probes and passive marks say. Starts down until the first probe answers. */
  checkedHealthy = false;
  consecutiveFailures = 0;
  consecutivePasses = 0;
  simulated: SimulatedOutage | null = null;
  maintenance = false;
  inFlight = 0;
  totalRequests = 0;
  successfulRequests = 0;
  /** Answers below 500 to any request, client or replay: probes are excused by these (see probeOnce). */
  answeredSuccesses = 0;
  lastHealthCheckMs: number | null = null;
  /** When the instance last answered a request with a status below 500 (client or replay). */
  lastSuccessMs: number | null = null;
  /**
   * `answeredSuccesses` when the latest probe started: the next probe is excused by any
   * success after that. A count, not a time, so that a success in the same millisecond as
   * a probe's start is never ambiguous.
   */
  successesAtProbeStart: number | null = null;
  /** Failed probes that did not count, because the instance was answering requests or chroma-lb's own operation ran. */
  probeFailuresExcused = 0;
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
    /** CHROMA_INSTANCE_HEADERS_<NAME>: sent on every request to this instance. */
    headers: Readonly<Record<string, string>> = {},
  ) {
    this.client = new ChromaInstanceClient(url, headers);
  }

  /**
   * Healthy as far as routing is concerned: what probes see, unless a simulated outage
   * takes the instance out. Nothing makes an instance healthy that probes see down.
   */
  get healthy(): boolean {
    // A simulation holds until the registry ends it (on time, see simulateOutage), never
    // silently here: its end must reach the listeners, which mark a returning instance as
    // catching up before it takes writes again.
    if (this.simulated) return false;
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
  /** The probe of each instance in flight: a second caller shares it, so one probe never counts twice. */
  private readonly probesInFlight = new Map<string, Promise<boolean>>();
  /** Told of each instance's answer to its pre-flight checks (kept for outages); optional. */
  onPreflight: ((body: Uint8Array, contentType: string | null) => void) | null = null;
  /** chroma-lb's own operations running now (see whileOwnOperation). */
  private ownOperationsRunning = 0;
  /** Own operations started so far: a probe during which this changed overlapped one. */
  private ownOperationsStarted = 0;

  constructor(
    instances: InstanceConfig[],
    private readonly config: Pick<Config, "healthFails" | "healthPasses" | "healthCheckTimeoutMs">,
    private readonly log: Logger,
  ) {
    this.all = instances.map((c, i) => new Instance(c.name, c.url, i, c.headers));
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

  /**
   * Counts a request that got an answer: a client request, or a batch replayed to the
   * instance. Any status below 500 is a success (a 4xx is the caller's fault, never the
   * instance's), and its time excuses a slow or failed probe (see probeOnce).
   */
  reportAnswered(instance: Instance, status: number) {
    instance.totalRequests += 1;
    if (status < 500) {
      instance.successfulRequests += 1;
      this.reportSuccess(instance);
    }
  }

  /**
   * A request of chroma-lb's own (a replayed batch) got an answer below 500: it counts as a
   * sign of life for probes, not as a client request.
   */
  reportSuccess(instance: Instance) {
    instance.answeredSuccesses += 1;
    instance.lastSuccessMs = Date.now();
  }

  reportFailedRequest(instance: Instance) {
    instance.totalRequests += 1;
  }

  /**
   * Runs one of chroma-lb's own operations on the instances (reset, tenant, database and
   * collection changes). Chroma answers slowly or with errors while it changes its catalog,
   * so probe failures seen while any own operation runs (or that overlapped one) are not
   * counted for any instance, and the consecutive counters stay where they were.
   * A probe that could not connect still counts: no operation makes Chroma refuse connections.
   */
  async whileOwnOperation<T>(fn: () => Promise<T>): Promise<T> {
    this.ownOperationsRunning += 1;
    this.ownOperationsStarted += 1;
    try {
      return await fn();
    } finally {
      this.ownOperationsRunning -= 1;
    }
  }

  /** Whether one of chroma-lb's own operations runs now. */
  get ownOperationRunning(): boolean {
    return this.ownOperationsRunning > 0;
  }

  /**
   * One active check: `GET /api/v2/heartbeat` within the probe timeout (the only call Chroma
   * answers at once under any load, see the top of this file). Thresholds give hysteresis;
   * a failure that the rules at the top of this file excuse leaves the counters as they were.
   * A probe already in flight for the instance is shared, not repeated.
   */
  probeOnce(instance: Instance): Promise<boolean> {
    const running = this.probesInFlight.get(instance.name);
    if (running) return running;
    const probe = this.probe(instance).finally(() => this.probesInFlight.delete(instance.name));
    this.probesInFlight.set(instance.name, probe);
    return probe;
  }

  private async probe(instance: Instance): Promise<boolean> {
    // Successes since the previous probe started excuse this one; the first probe has only its own run.
    const successesBefore = instance.successesAtProbeStart ?? instance.answeredSuccesses;
    instance.successesAtProbeStart = instance.answeredSuccesses;
    // An own operation running when the probe starts, starting while it runs, or running when it ends overlapped it.
    const ownOperationAtStart = this.ownOperationRunning;
    const ownOperationsStartedBefore = this.ownOperationsStarted;
    const result = await instance.client.request({ method: "GET", path: "/api/v2/heartbeat", timeoutMs: this.config.healthCheckTimeoutMs });
    instance.lastHealthCheckMs = Date.now();
    const ok = result.ok && result.status === 200;
    const firstDecision = !this.everProbed.has(instance.name);
    this.everProbed.add(instance.name);
    if (ok) {
      instance.consecutiveFailures = 0;
      instance.consecutivePasses += 1;
      // The very first probe decides at once; later recoveries need the passes threshold.
      if (!instance.checkedHealthy && (firstDecision || instance.consecutivePasses >= this.config.healthPasses)) {
        await this.refreshPreflight(instance);
        this.setHealthy(instance, true, "probes passed");
      }
      return true;
    }
    const reason = result.ok ? `heartbeat answered ${result.status}` : result.reason;
    // A refused connection, or an answer other than 200 or 5xx (not a Chroma heartbeat), always counts.
    const excusable = result.ok ? result.status >= 500 : result.failure !== "unreachable";
    const busy = instance.answeredSuccesses > successesBefore;
    const ownOperation = ownOperationAtStart || this.ownOperationRunning || this.ownOperationsStarted !== ownOperationsStartedBefore;
    if (excusable && (busy || ownOperation)) {
      instance.probeFailuresExcused += 1;
      this.log.debug("probe failed but not counted", {
        instance: instance.name,
        reason,
        why: busy ? "the instance answered requests meanwhile" : "chroma-lb's own operation ran",
      });
      return false;
    }
    instance.consecutivePasses = 0;
    instance.consecutiveFailures += 1;
    instance.lastError = reason;
    instance.lastErrorAtMs = Date.now();
    if (instance.checkedHealthy && instance.consecutiveFailures >= this.config.healthFails) {
      this.setHealthy(instance, false, `probes failed: ${reason}`);
    }
    return false;
  }

  private async refreshPreflight(instance: Instance) {
    const result = await instance.client.json<{ max_batch_size?: number }>(
      "GET",
      "/api/v2/pre-flight-checks",
      undefined,
      this.config.healthCheckTimeoutMs * 2,
    );
    const size = result.json?.max_batch_size;
    if (result.ok && typeof size === "number" && size > 0) {
      instance.maxBatchSize = size;
      if (result.status === 200) this.onPreflight?.(result.body, result.headers.get("content-type"));
    }
  }

  /** Probes every instance at once; a simulated outage is left alone (it wins until it ends). */
  async checkAll(): Promise<void> {
    await Promise.all(this.all.map((i) => this.probeOnce(i)));
  }

  /**
   * Takes the instance out as if it were down, for `durationMs` or until ended; probes go on
   * meanwhile, and what they see decides its health once the simulation ends.
   */
  simulateOutage(instance: Instance, durationMs: number | null) {
    const before = instance.healthy;
    const simulation: SimulatedOutage = { untilMs: durationMs === null ? null : Date.now() + durationMs };
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
    this.log.warn("simulated outage", { instance: instance.name, durationMs });
    this.notifyIfChanged(instance, before);
  }

  private endSimulation(instance: Instance) {
    const before = instance.healthy;
    instance.simulated = null;
    this.log.info("simulated health ended", { instance: instance.name });
    this.notifyIfChanged(instance, before);
  }

  /** Ends any simulated outage now and hands the instance back to the checker. */
  clearSimulation(instance: Instance) {
    clearTimeout(this.simulationTimers.get(instance.name));
    this.simulationTimers.delete(instance.name);
    if (instance.simulated) this.endSimulation(instance);
  }
}
