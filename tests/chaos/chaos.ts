/**
 * One chaos run: real Chroma servers and chroma-lb, clients writing through it, faults
 * injected at seeded moments, then everything restored, the log drained and the final state
 * checked against every client's history. `bun run chaos` (run.ts) and the short run of the
 * test suite (tests/scenarios/chaos.test.ts) both call {@link runChaos}.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkFinalState, type CheckResult } from "./check";
import { instanceNames, startCluster, type Cluster } from "./cluster";
import { faultKinds, planFaults, runLane, type FaultKind, type FaultPlan, type FaultRecord, type LaneContext } from "./faults";
import { idOf, startWorkload, type OpRecord, type Workload } from "./workload";

export interface ChaosOptions {
  seed: number;
  /** How long clients write while faults are injected. */
  durationMs: number;
  /** Concurrent clients. Default 4. */
  clients?: number;
  /** Collections shared by the clients. Default 3. */
  collections?: number;
  /** Ids each client churns on in each collection. Default 8. */
  idsPerClient?: number;
  /** Collections one more client creates, drops and writes to, alone. Default 2 (0: none). */
  churnCollections?: number;
  /** Each of these kinds exactly once (the short run); default: kinds, moments and durations drawn from the seed. */
  faultKinds?: readonly FaultKind[];
  /** `postgres`: chroma-lb keeps its log in a Postgres server of the run's own, which `kill-postgres` SIGKILLs. */
  logStore?: "sqlite" | "postgres";
  /** chroma-lb nodes sharing the run's Postgres (needs logStore postgres); adds kill-node and cut-node. Default 1. */
  nodes?: number;
  /** After an instance fault, how long the next one waits for the victim to catch up once it is up. Default 10 000 ms. */
  catchUpWaitMs?: number;
  /** Bound on the wait for the log to drain after the last fault. Default 120 000 ms. */
  convergeTimeoutMs?: number;
  /** Where the logs and the history are kept, whatever the verdict. Default: those of a failed run only, in a new dir under the OS temp dir. */
  keepDir?: string;
  log?: (line: string) => void;
}

export interface ChaosResult {
  seed: number;
  durationMs: number;
  plan: FaultPlan;
  faults: FaultRecord[];
  ops: { total: number; ok: number; failed: number; indeterminate: number; byKind: Record<string, { ok: number; failed: number; indeterminate: number }> };
  /** Failed and indeterminate operations by cause (status or error), for the report. */
  notOkCauses: Record<string, number>;
  check: CheckResult | null;
  /** From the moment the last fault was undone to the moment the log was drained (ms). */
  convergeAfterLastFaultMs: number | null;
  /** From the moment the clients stopped to the moment the log was drained (ms). */
  convergeAfterClientsStoppedMs: number | null;
  violations: string[];
  /** Oddities that lose no data and are reported without failing the run. */
  warnings: string[];
  /** Where the logs and history were kept (a failed run only). */
  keptIn: string | null;
}

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const requestTimeoutMs = 15_000;
const recoveryTimeoutMs = 30_000;
const catchUpWaitMsDefault = 10_000;
const convergeTimeoutMsDefault = 120_000;
/** Consecutive polls that must see the log drained, so a replay or resync that is about to start is not missed. */
const drainedPollsRequired = 3;

interface DrainState {
  drained: boolean;
  summary: string;
}

async function drainState(lbUrl: string): Promise<DrainState> {
  const get = async (p: string) => (await fetch(`${lbUrl}${p}`, { signal: AbortSignal.timeout(5_000) })).json() as Promise<any>;
  const [wal, status, mappings] = await Promise.all([get("/wal/status"), get("/status"), get("/collection/mappings")]);
  const states = (status.instances as Array<{ name: string; state: string }>).map((i) => `${i.name} ${i.state}`);
  // A mapping no instance holds yet: a create whose outcome was unknown, kept until its entry
  // is applied or found never logged (then removed; README "Running several nodes").
  const incomplete = (mappings.mappings as Array<{ collection_name: string; complete: boolean }>).filter((m) => !m.complete).map((m) => m.collection_name);
  const summary =
    `pending_writes ${wal.pending_writes}, resync active ${JSON.stringify(status.resync.active.map((r: any) => `${r.instance}/${r.collection_name ?? r.collection}:${r.state}`))}, ` +
    `instances [${states.join(", ")}], failed entries ${wal.failed?.length ?? 0}${wal.failed?.length ? ` (first: ${JSON.stringify(wal.failed[0]).slice(0, 300)})` : ""}, ` +
    `diverged ${JSON.stringify(wal.diverged).slice(0, 300)}, incomplete mappings ${JSON.stringify(incomplete)}`;
  // Marked copies are rebuilt by the repair pass (AUTO_REPAIR, retried at least once a
  // minute): converged means repaired too, and a mark still there at the end is a violation.
  const drained =
    wal.pending_writes === 0 &&
    status.resync.active.length === 0 &&
    (wal.diverged as unknown[]).length === 0 &&
    (status.instances as Array<{ state: string }>).every((i) => i.state === "healthy") &&
    incomplete.length === 0;
  return { drained, summary };
}

function countOps(history: readonly OpRecord[]): Pick<ChaosResult, "ops" | "notOkCauses"> {
  const ops: ChaosResult["ops"] = { total: history.length, ok: 0, failed: 0, indeterminate: 0, byKind: {} };
  const notOkCauses: Record<string, number> = {};
  for (const op of history) {
    ops[op.outcome] += 1;
    const k = (ops.byKind[op.kind] ??= { ok: 0, failed: 0, indeterminate: 0 });
    k[op.outcome] += 1;
    if (op.outcome !== "ok") {
      const cause = `${op.outcome} ${op.status ?? (op.error ?? "").split(":")[0]}`;
      notOkCauses[cause] = (notOkCauses[cause] ?? 0) + 1;
    }
  }
  return { ops, notOkCauses };
}

/** Runs one chaos run; violations are in the result, never thrown (a harness failure is thrown). */
export async function runChaos(opts: ChaosOptions): Promise<ChaosResult> {
  const log = opts.log ?? ((line: string) => console.log(`[chaos] ${line}`));
  const clients = opts.clients ?? 4;
  const collections = Array.from({ length: opts.collections ?? 3 }, (_, i) => `chaos_${String.fromCharCode(97 + i)}`);
  const idsPerClient = opts.idsPerClient ?? 8;
  const churnCollections = Array.from({ length: opts.churnCollections ?? 2 }, (_, i) => `churn_${String.fromCharCode(97 + i)}`);
  const ids = Array.from({ length: clients }, (_, c) => Array.from({ length: idsPerClient }, (_, n) => idOf(c, n))).flat();
  const fixed = opts.faultKinds !== undefined;
  const nodeCount = opts.nodes ?? 1;
  const plan = planFaults(opts.seed, opts.durationMs, opts.faultKinds, opts.logStore, nodeCount);

  log(
    `seed ${opts.seed} (replay with SEED=${opts.seed}), ${opts.durationMs / 1000} s, ${clients} clients on ${collections.length} collections (${idsPerClient} ids per client each)` +
      (churnCollections.length ? `, 1 client creating, dropping and writing ${churnCollections.length} more` : ""),
  );
  const planned = [...plan.instances, ...plan.lb, ...plan.postgres, ...plan.nodes].sort((a, b) => a.atMs - b.atMs);
  log(`planned faults: ${planned.map((f) => `${f.kind}${f.node !== undefined ? `(node-${f.node})` : ""}@${f.atMs}/${f.downMs}ms`).join(", ") || "none"}`);

  const cluster: Cluster = await startCluster({ logStore: opts.logStore, nodes: nodeCount });
  const result: ChaosResult = {
    seed: opts.seed,
    durationMs: opts.durationMs,
    plan,
    faults: [],
    ops: { total: 0, ok: 0, failed: 0, indeterminate: 0, byKind: {} },
    notOkCauses: {},
    check: null,
    convergeAfterLastFaultMs: null,
    convergeAfterClientsStoppedMs: null,
    violations: [],
    warnings: [],
    keptIn: null,
  };
  let history: OpRecord[] = [];
  let workload: Workload | null = null;
  try {
    if (cluster.nodes.length > 1) log(`nodes: ${cluster.nodes.map((n, i) => `node-${i} ${n.lb.url} (pid ${n.lb.pid}, Postgres via proxy :${n.proxy.port})`).join(", ")}`);
    log(`chroma-lb ${cluster.lb.url} (pid ${cluster.lb.pid}), primary ${cluster.instances.primary.url}, replica ${cluster.instances.replica.url}, mirror database ${cluster.database} via proxy :${cluster.postgresProxy.port}`);
    for (const name of [...collections, ...churnCollections]) {
      const res = await fetch(`${cluster.lb.url}${T}/collections`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name, configuration: {}, get_or_create: true }),
      });
      if (res.status !== 200) throw new Error(`creating collection ${name} answered ${res.status}: ${await res.text()}`);
    }

    const t0 = performance.now();
    const now = () => Math.round(performance.now() - t0);
    workload = startWorkload({ seed: opts.seed, lbUrls: cluster.nodes.map((n) => n.lb.url), collections, churnCollections, clients, idsPerClient, requestTimeoutMs, t0 });
    history = workload.history;
    const ctx: LaneContext = {
      cluster,
      now,
      log,
      records: result.faults,
      lastStartMs: fixed ? null : opts.durationMs - 2_000,
      recoveryTimeoutMs,
      catchUpWaitMs: opts.catchUpWaitMs ?? catchUpWaitMsDefault,
    };
    const lanes = Promise.all([runLane(plan.instances, ctx), runLane(plan.lb, ctx), runLane(plan.postgres, ctx), runLane(plan.nodes, ctx)]);
    // A fixed plan runs whole even when it outlasts the duration; the clients write until it is done.
    await Promise.all([Bun.sleep(opts.durationMs), fixed ? lanes : Promise.resolve()]);
    await lanes;
    await workload.stop();
    const clientsStoppedMs = now();
    log(`+${clientsStoppedMs} ms clients stopped after ${history.length} operations`);

    // Restore everything (each fault undoes itself; this is the safety net).
    for (const node of cluster.nodes) await node.proxy.reopen();
    for (const name of instanceNames) if (!cluster.instances[name].alive) await cluster.instances[name].restart();
    for (const node of cluster.nodes) if (!node.lb.alive) await node.lb.restart();

    const lastFaultEndMs = Math.max(0, ...result.faults.map((f) => f.endMs));
    const deadline = performance.now() + (opts.convergeTimeoutMs ?? convergeTimeoutMsDefault);
    let polls = 0;
    let last: DrainState = { drained: false, summary: "never read" };
    while (performance.now() < deadline) {
      try {
        last = await drainState(cluster.lb.url);
      } catch (error) {
        last = { drained: false, summary: `chroma-lb did not answer: ${(error as Error).message}` };
      }
      polls = last.drained ? polls + 1 : 0;
      if (polls >= drainedPollsRequired) break;
      await Bun.sleep(100);
    }
    if (polls >= drainedPollsRequired) {
      // The first of the consecutive drained polls is when it converged.
      const convergedMs = now() - (drainedPollsRequired - 1) * 100;
      result.convergeAfterLastFaultMs = convergedMs - lastFaultEndMs;
      result.convergeAfterClientsStoppedMs = Math.max(0, convergedMs - clientsStoppedMs);
      log(`+${convergedMs} ms converged: ${result.convergeAfterLastFaultMs} ms after the last fault was undone, ${result.convergeAfterClientsStoppedMs} ms after the clients stopped`);
    } else {
      result.violations.push(`did not converge within ${(opts.convergeTimeoutMs ?? convergeTimeoutMsDefault) / 1000} s after the clients stopped: ${last.summary}`);
      log(`not converged: ${last.summary}`);
    }

    Object.assign(result, countOps(history));
    result.check = await checkFinalState({
      lbUrl: cluster.lb.url,
      instanceUrls: { primary: cluster.instances.primary.url, replica: cluster.instances.replica.url },
      collections,
      ids,
      churnCollections,
      history,
    });
    result.violations.push(...result.check.violations);
    // A copy still marked diverged once everything converged was never repaired. A mark on a
    // collection dropped since is only reported: its data is gone everywhere, as it should be.
    const wal = (await (await fetch(`${cluster.lb.url}/wal/status`)).json()) as { diverged: Array<{ instance: string; collection_id: string; collection_name: string | null; op: string; first_refused_position: number }> };
    const { mappings } = (await (await fetch(`${cluster.lb.url}/collection/mappings`)).json()) as { mappings: Array<{ collection_id: string }> };
    const live = new Set(mappings.map((m) => m.collection_id));
    for (const d of wal.diverged) {
      const text = `${d.instance}'s copy of ${d.collection_name ?? "?"} (${d.collection_id}) still marked diverged after convergence (first refused entry ${d.first_refused_position}, ${d.op})`;
      if (live.has(d.collection_id)) result.violations.push(`/wal/status: ${text}`);
      else result.warnings.push(`/wal/status: ${text}, although the collection was dropped since`);
    }
  } catch (error) {
    result.violations.push(`harness: ${(error as Error).stack ?? error}`);
  } finally {
    // After a harness failure the clients may still be running.
    await workload?.stop();
    if (result.violations.length || opts.keepDir) {
      const dir = opts.keepDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `chroma-lb-chaos-${opts.seed}-`));
      cluster.keepLogs(dir);
      fs.writeFileSync(path.join(dir, "history.jsonl"), history.map((op) => JSON.stringify(op)).join("\n") + "\n");
      fs.writeFileSync(path.join(dir, "faults.json"), JSON.stringify({ seed: opts.seed, plan, faults: result.faults }, null, 2));
      result.keptIn = dir;
    }
    await cluster[Symbol.asyncDispose]();
  }
  if (result.ops.total === 0) Object.assign(result, countOps(history));
  return result;
}

/** The run's figures and verdict, as printed at the end. */
export function summarize(result: ChaosResult): string[] {
  const lines: string[] = [];
  const kinds = new Map<string, number>();
  for (const f of result.faults) kinds.set(f.kind, (kinds.get(f.kind) ?? 0) + 1);
  lines.push(`seed ${result.seed}`);
  lines.push(`faults (${result.faults.length}): ${[...kinds].map(([k, n]) => `${k} ×${n}`).join(", ") || "none"}`);
  for (const f of result.faults) {
    lines.push(
      `  +${f.startMs} ms ${f.kind}${f.node !== undefined ? ` node-${f.node}` : ""}, undone +${f.endMs} ms${f.upMs !== undefined ? `, up +${f.upMs} ms` : ""}${f.recoveredMs !== undefined ? `, caught up +${f.recoveredMs} ms` : ""}${f.resyncSeen ? ", resync seen" : ""}${f.note ? ` (${f.note})` : ""}`,
    );
  }
  const o = result.ops;
  lines.push(`operations ${o.total}: ok ${o.ok}, failed ${o.failed}, indeterminate ${o.indeterminate}`);
  lines.push(`  by kind: ${Object.entries(o.byKind).map(([k, v]) => `${k} ${v.ok}/${v.failed}/${v.indeterminate}`).join(", ")} (ok/failed/indeterminate)`);
  if (Object.keys(result.notOkCauses).length) lines.push(`  not ok: ${Object.entries(result.notOkCauses).map(([k, n]) => `${k} ×${n}`).join(", ")}`);
  if (result.check) {
    const c = result.check;
    lines.push(
      `records checked: ${c.recordsChecked} on each of 2 instances (${c.recordsPresent} present, ${c.recordsWithIndeterminateWrites} with indeterminate writes` +
        `${c.recordsCheckedByField ? `, ${c.recordsCheckedByField} field by field` : ""}); ` +
        `reads checked ${c.readsChecked}${c.readsFromDivergedCopies ? ` (+${c.readsFromDivergedCopies} from diverged copies, not held)` : ""}; ` +
        `churn collections ${c.churnCollectionsChecked} (${c.churnCollectionsPresent} present at the end, ${c.churnCatalogOpsOk} creates and drops acknowledged` +
        `${c.churnCollectionsCheckedById ? `, ${c.churnCollectionsCheckedById} id by id` : ""}); ` +
        `consistency check ${c.consistency ? `${c.consistency.collections_checked} collections, ${c.consistency.collections_differing} differing` : "not run"}`,
    );
  }
  lines.push(
    `converged ${result.convergeAfterLastFaultMs === null ? "never" : `${result.convergeAfterLastFaultMs} ms after the last fault was undone (${result.convergeAfterClientsStoppedMs} ms after the clients stopped)`}`,
  );
  if (result.warnings.length) {
    lines.push(`warnings (${result.warnings.length}, not failing the run):`);
    for (const w of result.warnings.slice(0, 10)) lines.push(`  - ${w}`);
  }
  if (result.violations.length) {
    lines.push(`VIOLATIONS (${result.violations.length}):`);
    for (const v of result.violations.slice(0, 30)) lines.push(`  - ${v}`);
    if (result.violations.length > 30) lines.push(`  … ${result.violations.length - 30} more`);
    if (result.keptIn) lines.push(`logs and history kept in ${result.keptIn}`);
    lines.push(`verdict: FAIL (replay with SEED=${result.seed})`);
  } else {
    lines.push("verdict: PASS");
  }
  return lines;
}

export { faultKinds };
