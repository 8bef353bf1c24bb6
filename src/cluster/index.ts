/**
 * Coordination of several chroma-lb nodes sharing one Postgres: who is live (nodes.ts),
 * who replays what (leases.ts), and wake-ups between them (wakeups.ts).
 *
 * Not wired into the server yet: it needs the Postgres store (LOG_STORE=postgres). The
 * wiring is expected to
 * - open one postgres.js client for the registry and leases (a few connections) and give the
 *   wake-up listener its own factory (it holds a session for LISTEN);
 * - schedule `clusterJobs(...)` in schedules.ts, and ask `leases.holds(key)` before each
 *   replay step, `fenceInTx` in the transaction that records replay progress;
 * - on SIGTERM: `leases.releaseAll()`, `registry.leave()`, `listener.stop()`.
 */
import type { LeaseKey, LeaseManager } from "./leases";
import type { NodeRegistry } from "./nodes";
import type { WakeupListener } from "./wakeups";

export { clusterTables } from "./schema";
export { LeaseManager, fenceInTx, listLeases, expiredLeaseKeys, forgetLeases } from "./leases";
export type { Lease, LeaseKey, LeaseRow, AcquireResult, RenewResult, LeaseManagerOptions } from "./leases";
export { NodeRegistry } from "./nodes";
export type { NodeRow, HeartbeatResult, NodeRegistryOptions } from "./nodes";
export { WakeupListener, publishHint, hintPayload, parseHint, wakeupChannel } from "./wakeups";
export type { WakeupHint, WakeupEvent, WakeupListenerOptions, WakeupListenerStatus } from "./wakeups";
export { StatementTimeout } from "./bounded";

/** A background job for schedules.ts: a name, its period and one bounded step. */
export interface ClusterJob {
  name: string;
  everyMs: number;
  run: () => Promise<unknown>;
}

export interface ClusterJobDeps {
  registry: NodeRegistry;
  leases: LeaseManager;
  listener: WakeupListener;
  /** NODE_HEARTBEAT_INTERVAL in ms. */
  heartbeatIntervalMs: number;
  /** The keys this node should replay now: (instance, collection) pairs with entries owed, on instances it reaches. */
  wantedKeys: () => LeaseKey[];
}

/**
 * The jobs a node runs: heartbeat and renewal on one beat (so a node that cannot renew
 * also stops looking live), acquisition of wanted keys (free ones, and expired ones of dead
 * nodes: the takeover), and the listener's check. Nothing is acquired before a heartbeat has
 * gone through, nor while the NODE_ID is held by another live process: two processes must
 * never share one node's leases.
 */
export function clusterJobs(deps: ClusterJobDeps): ClusterJob[] {
  /** Acquisition waits for a heartbeat that proved this process owns its NODE_ID. */
  let registered = false;
  return [
    {
      name: "node-heartbeat",
      everyMs: deps.heartbeatIntervalMs,
      run: async () => {
        // Side by side: a slow heartbeat must not delay the renewal past its bound.
        const [beat, renewal] = await Promise.all([deps.registry.heartbeatOnce(), deps.leases.renewOnce()]);
        if (beat.ok) registered = true;
        else if (beat.reason === "node id in use") {
          registered = false;
          await deps.leases.releaseAll();
        }
        return [beat, renewal];
      },
    },
    {
      name: "lease-acquire",
      everyMs: deps.heartbeatIntervalMs,
      run: async () => (registered ? deps.leases.tryAcquire(deps.wantedKeys()) : null),
    },
    { name: "wakeup-listener", everyMs: deps.heartbeatIntervalMs, run: () => deps.listener.checkOnce() },
  ];
}
