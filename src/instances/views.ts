/**
 * Snapshots of each instance for routing (see routing/select.ts), taken per request.
 */
import type { WriteAheadLog } from "../wal/log";
import type { Logger } from "../observability/log";
import type { InstanceView } from "../routing/select";
import type { Instance, InstanceRegistry } from "./registry";
import { unavailable, type LbError } from "../errors";

/**
 * Each instance as routing sees it now. An instance back from an outage is catching up
 * until it owes no more than the writes in flight (which every instance owes for a moment)
 * plus the entries whose replay keeps failing: those are retried with backoff and hold
 * only their own collection (reads check each collection), never the whole instance.
 */
export function instanceViews(registry: InstanceRegistry, wal: WriteAheadLog, inFlightWrites: number): InstanceView[] {
  return registry.all.map((i) => {
    const pendingEntries = wal.pendingCount(i.name);
    const stuck = i.catchingUp && pendingEntries > inFlightWrites ? wal.failingCount(i.name) : 0;
    registry.updateCatchingUp(i, pendingEntries - stuck, inFlightWrites);
    return { name: i.name, priority: i.priority, serving: i.serving, pendingEntries, catchingUp: i.catchingUp };
  });
}

/**
 * A request that got no answer: when the instance itself no longer answers its heartbeat,
 * it is marked down and the caller may try another; when it does, the request itself made
 * the instance drop it (Chroma does that for some inputs), which never counts against it.
 */
export async function blameTransportFailure(
  registry: InstanceRegistry,
  log: Logger,
  instance: Instance,
  failure: "unreachable" | "uncertain",
  reason: string,
  probeTimeoutMs: number,
): Promise<"instance" | "request"> {
  if (failure === "uncertain") {
    const probe = await instance.client.request({ method: "GET", path: "/api/v2/heartbeat", timeoutMs: probeTimeoutMs });
    if (probe.ok && probe.status === 200) {
      log.warn("instance dropped one request but answers its heartbeat", { instance: instance.name, reason });
      return "request";
    }
  }
  registry.reportTransportFailure(instance, reason);
  return "instance";
}

/** The 503 for "no instance can do this", naming each instance's state and what to do. */
export function noInstanceFor(registry: InstanceRegistry, what: string): LbError {
  const names = registry.all.map((i) => `${i.name}: ${i.maintenance ? "maintenance" : i.healthy ? "behind" : "down"}`);
  return unavailable(`No Chroma instance can serve ${what} (${names.join(", ")}). Retry shortly; GET /status shows each instance.`);
}
