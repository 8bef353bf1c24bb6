/**
 * Faults of a chaos run: what they are, when they happen (planned from the seed before the
 * run starts) and how they are injected and undone.
 *
 * Faults run in three lanes at once:
 * - instances: SIGKILL and restart, lost disk (data dir wiped while down, then restart),
 *   simulated outage; one at a time, and the next one waits until chroma-lb serves the
 *   previous victim again, so at most one instance is down and writes stay possible;
 * - chroma-lb: SIGKILL and restart, at any moment, also during an instance fault;
 * - Postgres: the proxy in front of it cut, then restored; with LOG_STORE=postgres (Postgres
 *   then holds the log) also the server SIGKILLed and restarted.
 * With several nodes (NODES=N, LOG_STORE=postgres) a fourth lane takes the place of the
 * chroma-lb one: a node drawn at random SIGKILLed and restarted, or cut from Postgres (its
 * own proxy closed) and restored, one node at a time; cut-postgres then cuts every node.
 */
import fs from "node:fs";
import type { Cluster, InstanceName } from "./cluster";
import { derive } from "./rng";

export type FaultKind =
  | "kill-primary"
  | "kill-replica"
  | "wipe-primary"
  | "wipe-replica"
  | "outage-primary"
  | "outage-replica"
  | "kill-lb"
  | "cut-postgres"
  | "kill-postgres"
  | "kill-node"
  | "cut-node";

export const faultKinds: readonly FaultKind[] = [
  "kill-primary",
  "kill-replica",
  "wipe-primary",
  "wipe-replica",
  "outage-primary",
  "outage-replica",
  "kill-lb",
  "cut-postgres",
];

/** Only with LOG_STORE=postgres: the run's own Postgres server SIGKILLed and restarted. */
export const postgresStoreFaultKinds: readonly FaultKind[] = ["kill-postgres"];

/** Only with several nodes: one node SIGKILLed and restarted, or cut from Postgres and restored. */
export const nodeFaultKinds: readonly FaultKind[] = ["kill-node", "cut-node"];

const postgresFaultKinds: readonly FaultKind[] = ["cut-postgres", "kill-postgres"];
const instanceFaultKinds: readonly FaultKind[] = faultKinds.filter((k) => k !== "kill-lb" && k !== "cut-postgres");

/** A fault as planned: its kind, the earliest moment it starts (ms since the run started) and how long it lasts. */
export interface PlannedFault {
  kind: FaultKind;
  atMs: number;
  downMs: number;
  /** For node faults: the index of the victim node. */
  node?: number;
}

export interface FaultPlan {
  instances: PlannedFault[];
  lb: PlannedFault[];
  postgres: PlannedFault[];
  /** With several nodes only. */
  nodes: PlannedFault[];
}

/** A fault as it happened (ms since the run started). */
export interface FaultRecord {
  kind: FaultKind;
  startMs: number;
  /** When it was undone: the process answers again, the proxy listens again, the simulation ended. */
  endMs: number;
  /** For instance faults: when chroma-lb had the instance up again (not down, its copy whole), perhaps still catching up. */
  upMs?: number;
  /** For instance faults: when chroma-lb served the instance again (healthy, caught up, no resync running). */
  recoveredMs?: number;
  /** For instance faults: a resync of the instance was seen running while it came back (expected after a lost disk). */
  resyncSeen?: boolean;
  /** For node faults: the victim node. */
  node?: number;
  note?: string;
}

/** Bounds of the random plan (ms). */
const plan = {
  instanceDownMs: [500, 6_000],
  instanceGapMs: [1_000, 6_000],
  lbDownMs: [0, 2_000],
  lbGapMs: [8_000, 25_000],
  postgresDownMs: [2_000, 12_000],
  postgresGapMs: [8_000, 25_000],
  nodeKillDownMs: [0, 3_000],
  nodeCutDownMs: [2_000, 10_000],
  nodeGapMs: [4_000, 15_000],
  /** No fault starts this close to the end, so the last one is undone before the clients stop. */
  tailMs: 3_000,
} as const;

/**
 * The faults of a run, from its seed. Without `kinds`, each lane draws kinds, moments and
 * durations at random until the end of the run. With `kinds` (the short run of the test
 * suite), each listed kind happens exactly once, instance faults spread over the run in a
 * seeded order, with short outages.
 */
export function planFaults(seed: number, durationMs: number, kinds?: readonly FaultKind[], logStore: "sqlite" | "postgres" = "sqlite", nodes = 1): FaultPlan {
  // Its own stream, so a run's other draws (and every SQLite plan) stay what they were.
  const pgKinds = derive(seed, "postgres-faults");
  const r = derive(seed, "faults");
  const out: FaultPlan = { instances: [], lb: [], postgres: [], nodes: [] };
  const end = durationMs - plan.tailMs;
  if (kinds) {
    const instanceKinds = r.shuffle(kinds.filter((k) => instanceFaultKinds.includes(k)));
    const slotMs = end / Math.max(1, instanceKinds.length);
    instanceKinds.forEach((kind, i) => out.instances.push({ kind, atMs: Math.round(slotMs * i + r.between(200, 800)), downMs: r.between(500, 1_500) }));
    for (const kind of kinds.filter((k) => k === "kill-lb")) out.lb.push({ kind, atMs: r.between(Math.round(end * 0.2), Math.round(end * 0.8)), downMs: r.between(0, 1_000) });
    for (const kind of kinds.filter((k) => postgresFaultKinds.includes(k))) out.postgres.push({ kind, atMs: r.between(Math.round(end * 0.1), Math.round(end * 0.5)), downMs: r.between(1_000, 4_000) });
    for (const lane of [out.lb, out.postgres]) lane.sort((a, b) => a.atMs - b.atMs);
    return out;
  }
  for (let t = r.between(1_000, 4_000); ; ) {
    const downMs = r.between(plan.instanceDownMs[0], plan.instanceDownMs[1]);
    if (t + downMs > end) break;
    out.instances.push({ kind: r.pick(instanceFaultKinds), atMs: t, downMs });
    t += downMs + r.between(plan.instanceGapMs[0], plan.instanceGapMs[1]);
  }
  for (let t = r.between(3_000, 15_000); ; ) {
    const downMs = r.between(plan.lbDownMs[0], plan.lbDownMs[1]);
    if (t + downMs > end) break;
    out.lb.push({ kind: "kill-lb", atMs: t, downMs });
    t += downMs + r.between(plan.lbGapMs[0], plan.lbGapMs[1]);
  }
  for (let t = r.between(2_000, 20_000); ; ) {
    const downMs = r.between(plan.postgresDownMs[0], plan.postgresDownMs[1]);
    if (t + downMs > end) break;
    out.postgres.push({ kind: logStore === "postgres" ? pgKinds.pick(postgresFaultKinds) : "cut-postgres", atMs: t, downMs });
    t += downMs + r.between(plan.postgresGapMs[0], plan.postgresGapMs[1]);
  }
  if (nodes > 1) {
    // The node lane replaces the chroma-lb one (drawn above all the same, so the other lanes stay what they were).
    out.lb = [];
    const n = derive(seed, "node-faults");
    for (let t = n.between(3_000, 10_000); ; ) {
      const kind = n.pick(nodeFaultKinds);
      const bounds = kind === "kill-node" ? plan.nodeKillDownMs : plan.nodeCutDownMs;
      const downMs = n.between(bounds[0], bounds[1]);
      if (t + downMs > end) break;
      out.nodes.push({ kind, atMs: t, downMs, node: n.int(nodes) });
      t += downMs + n.between(plan.nodeGapMs[0], plan.nodeGapMs[1]);
    }
  }
  return out;
}

export interface LaneContext {
  cluster: Cluster;
  /** Milliseconds since the run started. */
  now(): number;
  log(line: string): void;
  records: FaultRecord[];
  /** In a random plan, no fault starts past this moment (the lane then ends); a fixed plan runs whole. */
  lastStartMs: number | null;
  /** How long an instance lane waits for its victim to be up again before it moves on. */
  recoveryTimeoutMs: number;
  /** How long it then waits for the victim to catch up before it moves on. */
  catchUpWaitMs: number;
}

const victimOf = (kind: FaultKind): InstanceName => (kind.endsWith("primary") ? "primary" : "replica");

async function postJson(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: AbortSignal.timeout(2_000) });
}

/** How chroma-lb sees `name` now: "down", "catching_up" (up, not yet current), "resync" (its copy being rebuilt) or "served"; null when it does not answer. */
async function lbView(lbUrl: string, name: InstanceName): Promise<"down" | "catching_up" | "resync" | "served" | null> {
  try {
    const status = (await (await fetch(`${lbUrl}/status`, { signal: AbortSignal.timeout(2_000) })).json()) as {
      instances: Array<{ name: string; state: string; simulated: unknown }>;
      resync: { active: Array<{ instance: string }> };
    };
    const instance = status.instances.find((i) => i.name === name);
    if (!instance || instance.state === "down" || instance.simulated !== null) return "down";
    if (status.resync.active.some((r) => r.instance === name)) return "resync";
    return instance.state === "healthy" ? "served" : "catching_up";
  } catch {
    return null; // chroma-lb may be restarting.
  }
}

/** Waits, up to the recovery bound, until no copy on the instance a wipe spares is marked (lost, under repair, diverged, in doubt). */
async function otherCopiesWhole(fault: PlannedFault, ctx: LaneContext): Promise<boolean> {
  const other = victimOf(fault.kind) === "primary" ? "replica" : "primary";
  const deadline = performance.now() + ctx.recoveryTimeoutMs;
  for (;;) {
    try {
      const wal = (await (await fetch(`${ctx.cluster.anyLbUrl()}/wal/status`, { signal: AbortSignal.timeout(2_000) })).json()) as { diverged: Array<{ instance: string }> };
      if (!wal.diverged.some((d) => d.instance === other)) return true;
    } catch {
      // chroma-lb may be restarting, or cut from its log store: asked again.
    }
    if (performance.now() >= deadline) return false;
    await Bun.sleep(200);
  }
}

async function inject(fault: PlannedFault, ctx: LaneContext): Promise<FaultRecord> {
  const { cluster } = ctx;
  const startMs = ctx.now();
  const record: FaultRecord = { kind: fault.kind, startMs, endMs: startMs, ...(fault.node !== undefined ? { node: fault.node } : {}) };
  switch (fault.kind) {
    case "kill-primary":
    case "kill-replica":
    case "wipe-primary":
    case "wipe-replica": {
      const server = cluster.instances[victimOf(fault.kind)];
      await server.kill("SIGKILL");
      if (fault.kind.startsWith("wipe")) fs.rmSync(server.dataDir, { recursive: true, force: true });
      ctx.log(`+${startMs} ms ${fault.kind}: SIGKILL${fault.kind.startsWith("wipe") ? ", data dir wiped" : ""}, restart in ${fault.downMs} ms`);
      await Bun.sleep(fault.downMs);
      await server.restart();
      break;
    }
    case "outage-primary":
    case "outage-replica": {
      const name = victimOf(fault.kind);
      // chroma-lb may be restarting (the lb lane runs at the same time): retry for a while.
      const deadline = performance.now() + 15_000;
      let sent = false;
      while (!sent && performance.now() < deadline) {
        try {
          sent = (await postJson(`${cluster.anyLbUrl()}/admin/instances/${name}/health`, { healthy: false, duration_seconds: fault.downMs / 1000 })).ok;
        } catch {
          // Not answering yet.
        }
        if (!sent) await Bun.sleep(200);
      }
      record.startMs = ctx.now();
      if (!sent) record.note = "chroma-lb did not take the simulation within 15 s";
      ctx.log(`+${record.startMs} ms ${fault.kind}: simulated outage for ${fault.downMs} ms${sent ? "" : " (not taken)"}`);
      await Bun.sleep(fault.downMs);
      break;
    }
    case "kill-lb":
      await cluster.lb.kill("SIGKILL");
      ctx.log(`+${startMs} ms kill-lb: SIGKILL, restart in ${fault.downMs} ms`);
      await Bun.sleep(fault.downMs);
      await cluster.lb.restart();
      break;
    case "cut-postgres":
      for (const node of cluster.nodes) await node.proxy.close();
      ctx.log(`+${startMs} ms cut-postgres: proxy${cluster.nodes.length > 1 ? " of every node" : ""} closed for ${fault.downMs} ms`);
      await Bun.sleep(fault.downMs);
      for (const node of cluster.nodes) await node.proxy.reopen();
      break;
    case "kill-node": {
      const node = cluster.nodes[fault.node ?? 0]!;
      await node.lb.kill("SIGKILL");
      ctx.log(`+${startMs} ms kill-node: node-${fault.node} SIGKILLed, restart in ${fault.downMs} ms`);
      await Bun.sleep(fault.downMs);
      await node.lb.restart();
      break;
    }
    case "cut-node": {
      const node = cluster.nodes[fault.node ?? 0]!;
      await node.proxy.close();
      ctx.log(`+${startMs} ms cut-node: node-${fault.node}'s proxy to Postgres closed for ${fault.downMs} ms`);
      await Bun.sleep(fault.downMs);
      await node.proxy.reopen();
      break;
    }
    case "kill-postgres":
      if (!cluster.postgres) throw new Error("kill-postgres needs LOG_STORE=postgres (the run's own Postgres server)");
      await cluster.postgres.kill();
      ctx.log(`+${startMs} ms kill-postgres: server SIGKILLed for ${fault.downMs} ms`);
      await Bun.sleep(fault.downMs);
      await cluster.postgres.restart();
      break;
  }
  record.endMs = ctx.now();
  ctx.log(`+${record.endMs} ms ${fault.kind}: undone`);
  return record;
}

/** Runs one lane's faults in order, each at its planned moment or as soon as the lane is free. */
export async function runLane(faults: PlannedFault[], ctx: LaneContext): Promise<void> {
  for (const fault of faults) {
    const waitMs = fault.atMs - ctx.now();
    if (waitMs > 0) await Bun.sleep(waitMs);
    if (ctx.lastStartMs !== null && ctx.now() + fault.downMs > ctx.lastStartMs) {
      ctx.log(`+${ctx.now()} ms ${fault.kind}: not started (too close to the end)`);
      continue;
    }
    if (fault.kind.startsWith("wipe") && !(await otherCopiesWhole(fault, ctx))) {
      // Two lost disks lose what only they held, whatever the balancer does: a wipe waits
      // while the other instance's copies are still being rebuilt, or is not started.
      ctx.log(`+${ctx.now()} ms ${fault.kind}: not started (the other instance's copies were still being rebuilt after ${ctx.recoveryTimeoutMs} ms)`);
      continue;
    }
    const record = await inject(fault, ctx);
    ctx.records.push(record);
    if (fault.kind === "kill-lb" || postgresFaultKinds.includes(fault.kind) || nodeFaultKinds.includes(fault.kind)) continue;
    // At most one instance down at a time: wait until chroma-lb has the victim up again
    // (and its copy whole), then a little longer for it to catch up, then go on.
    const name = victimOf(fault.kind);
    const upDeadline = performance.now() + ctx.recoveryTimeoutMs;
    let view = await lbView(ctx.cluster.anyLbUrl(), name);
    while (view !== "served" && view !== "catching_up" && performance.now() < upDeadline) {
      if (view === "resync") record.resyncSeen = true;
      await Bun.sleep(100);
      view = await lbView(ctx.cluster.anyLbUrl(), name);
    }
    if (view !== "served" && view !== "catching_up") {
      record.note = `${name} not up again within ${ctx.recoveryTimeoutMs} ms (${view ?? "chroma-lb not answering"})`;
      ctx.log(`+${ctx.now()} ms ${record.note}; the next fault goes on`);
      continue;
    }
    record.upMs = ctx.now();
    const servedDeadline = performance.now() + ctx.catchUpWaitMs;
    while (view !== "served" && performance.now() < servedDeadline) {
      await Bun.sleep(100);
      view = (await lbView(ctx.cluster.anyLbUrl(), name)) ?? view;
      if (view === "resync") record.resyncSeen = true;
    }
    if (view === "served") record.recoveredMs = ctx.now();
    ctx.log(
      `+${ctx.now()} ms ${name} up again ${record.upMs - record.endMs} ms after the fault was undone` +
        (record.recoveredMs !== undefined ? `, caught up after ${record.recoveredMs - record.endMs} ms` : `, still catching up after ${ctx.catchUpWaitMs} ms more; the next fault goes on`),
    );
  }
}
