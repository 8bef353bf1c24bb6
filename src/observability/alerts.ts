/**
 * Alerts posted as JSON to ALERT_WEBHOOK_URL (Slack-compatible: the message is in `text`).
 * Sending never blocks or fails the caller; an alert that cannot be delivered is logged.
 *
 * An alert is keyed by its event, instance and collection. Per key:
 * - A condition that starts is posted once; while it holds, repeated `send`s of it post
 *   nothing (several failed probes, every poll of a lag that stays high).
 * - When it clears (`resolve`), a resolution is posted, so the operator's last word on a key
 *   always matches what is true.
 * - At most one alert per key is posted per ALERT_MIN_INTERVAL. A condition that starts again
 *   sooner (a flapping instance) is held back, not posted. If it clears before the interval
 *   is over, neither it nor its resolution is posted (the operator's last message, "resolved",
 *   is true again) and the next alert of that key says how many such episodes were missed.
 *   If it still holds when the interval is over, `flushOnce` (the alert-check schedule) posts
 *   it then, saying since when it holds: a held-back alert is late, never lost.
 * Notices (`consistency_difference`, `repair_finished`) have no condition: each is posted, at most once per key per
 * ALERT_MIN_INTERVAL. `repair_finished` ends the `collection_diverged` of its instance and
 * collection: its own message is the resolution.
 *
 * `alertsOnce` evaluates the conditions that are polled (lag, backlog, memory, disk, mirror,
 * and instance health as a safety net for the listeners) in one bounded step.
 */
import type { Instance } from "../instances/registry";
import type { Services } from "../services";
import type { EventLevel, RecentEvents } from "./events";
import type { Logger } from "./log";

export type AlertEvent =
  | "instance_down"
  /** Kept for callers that announce a return with `send`: it resolves `instance_down`. */
  | "instance_up"
  | "all_instances_down"
  | "replication_lag"
  | "memory_pressure"
  | "log_backlog"
  | "wal_disk_full"
  | "mirror_unreachable"
  | "log_store_unreachable"
  | "collection_diverged"
  /** The consistency check found copies of a collection that differ (a notice: repair follows). */
  | "consistency_difference"
  | "repair_finished";

export interface Alert {
  event: AlertEvent;
  instance?: string;
  collection?: string;
  message: string;
}

/** The condition of an alert cleared; `message` says how (a default is written otherwise). */
export interface Resolution {
  event: AlertEvent;
  instance?: string;
  collection?: string;
  message?: string;
}

/** What the webhook receives. */
export interface WebhookPayload {
  /** Slack shows this. */
  text: string;
  event: AlertEvent;
  level: EventLevel;
  /** `firing` for an alert, `resolved` when its condition cleared. */
  status: "firing" | "resolved";
  resolved: boolean;
  instance?: string;
  collection?: string;
  message: string;
  at: string;
}

/** An alert whose condition holds now. */
export interface ActiveAlert {
  event: AlertEvent;
  instance?: string;
  collection?: string;
  message: string;
  sinceMs: number;
  /** False while held back by ALERT_MIN_INTERVAL. */
  notified: boolean;
}

export interface Alerter {
  /** An alert (or a notice); sent unless it is already firing or was sent within ALERT_MIN_INTERVAL. */
  send(alert: Alert): void;
  /** The alert's condition cleared: a resolution is sent when the alert itself was sent. */
  resolve(resolution: Resolution): void;
  /** Sends the alerts held back by ALERT_MIN_INTERVAL whose condition still holds once it is over. */
  flushOnce(): void;
  /** Alerts whose condition holds now, oldest first. */
  active(): ActiveAlert[];
}

export interface AlerterOptions {
  /** ALERT_WEBHOOK_URL; null sends nothing (alerts are still logged and kept as events). */
  webhookUrl: string | null;
  /** ALERT_MIN_INTERVAL in milliseconds. */
  minIntervalMs: number;
  log: Logger;
  /** Where sent alerts and resolutions are recorded for `GET /events`. */
  events?: RecentEvents;
  /** The clock (tests inject one). */
  now?: () => number;
  /** Posts one payload (tests inject one); the default POSTs JSON to `webhookUrl` within 5 s. */
  deliver?: (payload: WebhookPayload) => Promise<void>;
  /**
   * Asked before each payload is delivered, with several nodes: whether this node posts it
   * (the first node to claim it does; see cluster/node.ts claimAlert). Absent: always.
   */
  claim?: (payload: WebhookPayload) => Promise<boolean>;
  /** Told of every alert posted, resolution posted, and alert held back (metrics). */
  onOutcome?: (event: AlertEvent, outcome: "firing" | "resolved" | "suppressed" | "posted_by_other_node") => void;
}

const alertTimeoutMs = 5_000;
/** Keys remembered at most; resolved keys go first (a key is an event, instance and collection). */
const keysMax = 1_000;

const levels: Record<AlertEvent, EventLevel> = {
  instance_down: "error",
  instance_up: "info",
  all_instances_down: "error",
  replication_lag: "warn",
  memory_pressure: "warn",
  log_backlog: "warn",
  wal_disk_full: "error",
  mirror_unreachable: "warn",
  log_store_unreachable: "error",
  collection_diverged: "warn",
  consistency_difference: "warn",
  repair_finished: "info",
};

/** Events that announce something done rather than a condition that holds and clears. */
const notices = new Set<AlertEvent>(["consistency_difference", "repair_finished"]);

interface KeyState {
  event: AlertEvent;
  instance?: string;
  collection?: string;
  /** The condition holds now. */
  active: boolean;
  /** The operator was told it holds (an alert was posted and no resolution since). */
  notified: boolean;
  sinceMs: number;
  /** When an alert of this key was last posted. */
  lastSentMs: number | null;
  /** Episodes held back by ALERT_MIN_INTERVAL and never posted since the last alert posted. */
  missed: number;
  /** The latest message of the condition (a held-back alert is posted with it). */
  message: string;
}

const keyOf = (a: { event: AlertEvent; instance?: string; collection?: string }) => `${a.event}\u0000${a.instance ?? ""}\u0000${a.collection ?? ""}`;

function postTo(webhookUrl: string): (payload: WebhookPayload) => Promise<void> {
  return async (payload) => {
    const response = await fetch(webhookUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
      signal: AbortSignal.timeout(alertTimeoutMs),
    });
    // Slack answers 200 "ok"; anything else means the alert was not taken.
    if (!response.ok) throw new Error(`webhook answered ${response.status}`);
    await response.arrayBuffer();
  };
}

export function createAlerter(options: AlerterOptions): Alerter {
  const { log, events, minIntervalMs } = options;
  const now = options.now ?? Date.now;
  const deliver = options.deliver ?? (options.webhookUrl ? postTo(options.webhookUrl) : null);
  const states = new Map<string, KeyState>();

  const post = (state: KeyState, status: "firing" | "resolved", message: string) => {
    const level = status === "resolved" ? "info" : levels[state.event];
    const scope = { ...(state.instance !== undefined && { instance: state.instance }), ...(state.collection !== undefined && { collection: state.collection }) };
    // `detail`, not `message`: the log line's own message field says what this is.
    log[level === "info" ? "info" : "warn"](status === "resolved" ? "alert resolved" : "alert", { event: state.event, ...scope, detail: message });
    events?.push({ event: state.event, level, ...scope, message, ...(status === "resolved" && { resolved: true }) });
    options.onOutcome?.(state.event, status);
    if (!deliver) return;
    const payload: WebhookPayload = {
      text: `chroma-lb: ${status === "resolved" ? "resolved: " : ""}${message}`,
      event: state.event,
      level,
      status,
      resolved: status === "resolved",
      ...scope,
      message,
      at: new Date(now()).toISOString(),
    };
    const failed = (error: unknown) => log.warn("alert not delivered", { event: state.event, status, error: String(error) });
    if (!options.claim) {
      void deliver(payload).catch(failed);
      return;
    }
    void options
      .claim(payload)
      .then((mine) => {
        if (mine) return deliver(payload);
        log.debug("alert posted by another node", { event: state.event, status });
        options.onOutcome?.(state.event, "posted_by_other_node");
      })
      .catch(failed);
  };

  /** Posts the alert of a key whose condition holds, saying how many episodes were missed before it. */
  const fire = (state: KeyState, at: number, suffix = "") => {
    const missed = state.missed;
    const note = missed ? ` (also ${missed} time${missed === 1 ? "" : "s"} since the previous alert, not posted: ALERT_MIN_INTERVAL)` : "";
    state.notified = !notices.has(state.event);
    state.lastSentMs = at;
    state.missed = 0;
    post(state, "firing", state.message + suffix + note);
  };

  /** Keeps the map bounded: resolved keys first, oldest first. */
  const prune = () => {
    if (states.size <= keysMax) return;
    for (const [key, state] of states) {
      if (states.size <= keysMax) break;
      if (!state.active) states.delete(key);
    }
  };

  const resolve = (resolution: Resolution) => {
    const event = resolution.event === "instance_up" ? "instance_down" : resolution.event;
    const state = states.get(keyOf({ ...resolution, event }));
    if (!state?.active) return;
    state.active = false;
    const message = resolution.message ?? `${event}${state.instance ? ` on ${state.instance}` : ""}${state.collection ? ` (${state.collection})` : ""} cleared`;
    if (state.notified) {
      state.notified = false;
      post(state, "resolved", message);
    } else {
      // Neither the alert nor its resolution is posted; the next alert of this key counts it.
      state.missed += 1;
      log.info("held-back alert cleared before it was posted", { event, instance: state.instance, collection: state.collection });
    }
  };

  return {
    send(alert) {
      if (alert.event === "instance_up") {
        resolve({ event: "instance_down", instance: alert.instance, collection: alert.collection, message: alert.message });
        return;
      }
      if (alert.event === "repair_finished") {
        // The repair's own message tells the operator how the divergence ended: no separate resolution.
        const diverged = states.get(keyOf({ ...alert, event: "collection_diverged" }));
        if (diverged?.active) {
          diverged.active = diverged.notified = false;
          // Recorded (not posted) so that the event list shows the divergence ended.
          events?.push({ event: "collection_diverged", level: "info", instance: alert.instance, collection: alert.collection, message: alert.message, resolved: true });
        }
      }
      const at = now();
      const key = keyOf(alert);
      let state = states.get(key);
      if (!state) {
        state = { event: alert.event, instance: alert.instance, collection: alert.collection, active: false, notified: false, sinceMs: at, lastSentMs: null, missed: 0, message: alert.message };
        states.set(key, state);
      }
      state.message = alert.message;
      // A condition that already holds is not news, however often it is reported.
      if (state.active) return;
      if (!notices.has(alert.event)) {
        state.active = true;
        state.sinceMs = at;
      }
      prune();
      if (state.lastSentMs === null || at - state.lastSentMs >= minIntervalMs) {
        fire(state, at);
        return;
      }
      if (notices.has(alert.event)) state.missed += 1;
      options.onOutcome?.(alert.event, "suppressed");
      log.info("alert held back by ALERT_MIN_INTERVAL", { event: alert.event, instance: alert.instance, collection: alert.collection });
    },
    resolve,
    flushOnce() {
      const at = now();
      for (const state of states.values()) {
        if (state.active && !state.notified && state.lastSentMs !== null && at - state.lastSentMs >= minIntervalMs) {
          // Posted late: the message says since when it holds.
          fire(state, at, ` (since ${new Date(state.sinceMs).toISOString()})`);
        }
      }
    },
    active() {
      return [...states.values()]
        .filter((s) => s.active)
        .sort((a, b) => a.sinceMs - b.sinceMs)
        .map((s) => ({
          event: s.event,
          ...(s.instance !== undefined && { instance: s.instance }),
          ...(s.collection !== undefined && { collection: s.collection }),
          message: s.message,
          sinceMs: s.sinceMs,
          notified: s.notified,
        }));
    },
  };
}

/** What `alertsOnce` reads. */
export type AlertCheckDeps = Pick<Services, "config" | "registry" | "wal" | "sizer" | "mirror" | "alerter">;

/**
 * The `wal_disk_full` alert's texts: the log at WAL_MAX_DISK_MB, or the file system under
 * DATA_DIR full before it (`filesystem`).
 */
export function diskFullMessages(state: { bytes: number; bytesMax: number; filesystem: boolean }): { full: string; resolved: string } {
  if (state.filesystem) {
    return {
      full:
        `the file system holding the write-ahead log (DATA_DIR) is full (the log uses ${state.bytes} bytes): new writes are answered 507, nothing acknowledged is dropped. ` +
        `Free space on it or grow it; POST /wal/cleanup removes applied entries (their pages are reused, the file does not shrink). ` +
        `Writes are taken again once WAL_DISK_RESERVE_MB is free.`,
      resolved: "the file system holding the write-ahead log has room again; writes are taken",
    };
  }
  return {
    full:
      `the write-ahead log reached WAL_MAX_DISK_MB (${state.bytes} of ${state.bytesMax} bytes): new writes are answered 507, nothing acknowledged is dropped. ` +
      `Check that every instance is catching up (GET /wal/status), remove applied entries with POST /wal/cleanup, or raise WAL_MAX_DISK_MB.`,
    resolved: "the write-ahead log is below WAL_MAX_DISK_MB again; writes are taken",
  };
}

/**
 * One pass over the polled conditions: each is sent while it holds and resolved once it
 * clears (the alerter keeps this from repeating anything). Then held-back alerts whose
 * interval is over are posted. Bounded: a few counters per instance, no request.
 */
export function alertsOnce(deps: AlertCheckDeps): void {
  const { config, registry, wal, sizer, mirror, alerter } = deps;
  const condition = (holds: boolean, alert: Alert, resolvedMessage: string) =>
    holds ? alerter.send(alert) : alerter.resolve({ event: alert.event, instance: alert.instance, collection: alert.collection, message: resolvedMessage });

  for (const instance of registry.all) {
    const name = instance.name;
    // The registry's listener alerts a transition at once; this also covers an instance that
    // was down from the start (no transition) and keeps the alert state true to the registry.
    condition(!instance.healthy, { event: "instance_down", instance: name, message: instanceDownMessage(instance) }, `instance ${name} is back`);
    const lag = wal.lag(name);
    // The lag of an instance that is down is its outage, alerted as such; it is judged again once it is back.
    if (instance.healthy) {
      const lagSeconds = lag.oldestAgeMs / 1000;
      condition(
        lag.oldestAgeMs > config.alertLagMs,
        {
          event: "replication_lag",
          instance: name,
          message:
            `instance ${name} is ${Math.round(lagSeconds)} s behind the log (${lag.entries} entries owed; ALERT_LAG_SECONDS=${config.alertLagMs / 1000})` +
            (lag.lastError ? `; last replay error: ${lag.lastError.slice(0, 200)}` : ""),
        },
        `instance ${name} is within ALERT_LAG_SECONDS (${config.alertLagMs / 1000} s) of the log again`,
      );
    }
    condition(
      lag.entries > config.alertBacklogEntries,
      {
        event: "log_backlog",
        instance: name,
        message: `instance ${name} owes ${lag.entries} log entries (ALERT_BACKLOG_ENTRIES=${config.alertBacklogEntries}); the log grows on disk until it catches up`,
      },
      `instance ${name} owes ${lag.entries} log entries, within ALERT_BACKLOG_ENTRIES again`,
    );
  }
  condition(registry.all.length > 0 && registry.all.every((i) => !i.healthy), { event: "all_instances_down", message: allInstancesDownMessage }, "an instance answers again; reads are served");

  const rssMb = Math.round(sizer.lastSample.rssBytes / 1024 / 1024);
  condition(
    sizer.lastSample.rssBytes > config.walMaxMemoryMb * 1024 * 1024,
    { event: "memory_pressure", message: `chroma-lb uses ${rssMb} MB, above WAL_MAX_MEMORY_MB (${config.walMaxMemoryMb}); replay sends one entry per request until it falls` },
    `chroma-lb uses ${rssMb} MB, within WAL_MAX_MEMORY_MB (${config.walMaxMemoryMb}) again`,
  );

  // Also without WAL_MAX_DISK_MB: the file system may fill first. The check also takes
  // chroma-lb out of "file system full" once there is room again (see WriteAheadLog.diskFull).
  {
    const full = wal.diskFull(config.walMaxDiskBytes);
    const messages = diskFullMessages({ bytes: wal.diskBytes(), bytesMax: config.walMaxDiskBytes, filesystem: wal.storageIsFull });
    condition(full, { event: "wal_disk_full", message: messages.full }, messages.resolved);
  }

  {
    const unreachable = wal.storeUnreachable;
    condition(
      unreachable !== null,
      {
        event: "log_store_unreachable",
        message: `chroma-lb's log store cannot be reached since ${new Date(unreachable?.sinceMs ?? 0).toISOString()} (${(unreachable?.error ?? "").slice(0, 300)}): writes are answered 503 with Retry-After and nothing is kept; reads go on from the instances`,
      },
      "the log store answers again; writes are taken",
    );
  }

  if (mirror) {
    const { lastError } = mirror.status;
    condition(
      lastError !== null,
      { event: "mirror_unreachable", message: `the Postgres mirror cannot be reached: ${(lastError ?? "").slice(0, 300)}; mappings are kept locally and synced once it returns` },
      "the Postgres mirror is reachable again and caught up",
    );
  }

  alerter.flushOnce();
}

/** The message of `instance_down`, the same from the registry's listener and from a poll. */
export function instanceDownMessage(instance: Pick<Instance, "name" | "simulated" | "lastError">): string {
  return `instance ${instance.name} is down: ${instance.simulated ? "simulated outage" : (instance.lastError ?? "it has not answered since chroma-lb started")}`;
}

export const allInstancesDownMessage = "no Chroma instance answers; reads fail and writes are only logged";
