/**
 * Operations that run once in the cluster: a resync, a consistency check, a repair pass.
 *
 * An operation is claimed by a row of `chroma_lb_jobs` keyed by (kind, scope): the claim
 * succeeds when no row exists, when the last run ended, or when its node stopped reporting
 * (no heartbeat within the stale bound: the node died mid-run). While it runs, its node
 * writes the progress into the row each second (`reportOnce`), so every node's /status
 * shows it; at the end the row keeps the outcome. A request for the same operation on
 * another node meanwhile is told which node runs it instead of starting a second copy.
 */
import type postgres from "postgres";
import { bounded, errorText } from "./bounded";
import { clusterTables } from "./schema";

/** One operation as /status lists it. */
export interface ClusterJobView {
  kind: string;
  scope: string;
  node_id: string;
  state: "running" | "done" | "failed";
  progress: unknown;
  started_at: string;
  heartbeat_at: string;
  finished_at: string | null;
}

/** The outcome of `run`: the operation's result here, or the node that runs it already. */
export type RunOutcome<T> = { ran: true; result: T } | { ran: false; runningOn: string; startedAt: string };

export interface ClusterJobsOptions {
  nodeId: string;
  statementTimeoutMs: number;
  /** A running row whose heartbeat is older than this is taken to be abandoned (its node died). */
  staleMs: number;
  /** Rows listed in /status at most. */
  listedMax?: number;
}

export class ClusterJobs {
  /** What this node runs now: the progress of each is read when it is reported. */
  private readonly running = new Map<string, { kind: string; scope: string; progress: () => unknown }>();

  constructor(
    private readonly sql: postgres.Sql,
    private readonly options: ClusterJobsOptions,
  ) {}

  /**
   * Runs `fn` unless another live node runs the same (kind, scope): claims the row, reports
   * `progress()` while it runs, records the outcome. When the claim cannot be made because
   * Postgres does not answer, the error is thrown (the caller answers 503).
   */
  async run<T>(kind: string, scope: string, progress: () => unknown, fn: () => Promise<T>, summary: (result: T) => unknown = () => null): Promise<RunOutcome<T>> {
    const claim = await this.claim(kind, scope);
    if (!claim.claimed) return { ran: false, runningOn: claim.nodeId, startedAt: claim.startedAt };
    const key = `${kind}\u0000${scope}`;
    this.running.set(key, { kind, scope, progress });
    try {
      const result = await fn();
      await this.finish(kind, scope, "done", summary(result));
      return { ran: true, result };
    } catch (error) {
      await this.finish(kind, scope, "failed", { error: errorText(error) });
      throw error;
    } finally {
      this.running.delete(key);
    }
  }

  private async claim(kind: string, scope: string): Promise<{ claimed: true } | { claimed: false; nodeId: string; startedAt: string }> {
    const t = this.sql(clusterTables.jobs);
    const rows = await bounded(
      "job claim",
      this.sql<Array<{ node_id: string }>>`
        insert into ${t} (kind, scope, node_id, state, progress, started_at, heartbeat_at, finished_at)
        values (${kind}, ${scope}, ${this.options.nodeId}, 'running', null, now(), now(), null)
        on conflict (kind, scope) do update
          set node_id = excluded.node_id, state = 'running', progress = null, started_at = now(), heartbeat_at = now(), finished_at = null
          where ${t}.state <> 'running' or ${t}.heartbeat_at < now() - make_interval(secs => ${this.options.staleMs / 1000})
        returning node_id`,
      this.options.statementTimeoutMs,
    );
    if (rows.length) return { claimed: true };
    const holder = await bounded(
      "job holder",
      this.sql<Array<{ node_id: string; started_at: Date }>>`select node_id, started_at from ${t} where kind = ${kind} and scope = ${scope}`,
      this.options.statementTimeoutMs,
    );
    return { claimed: false, nodeId: holder[0]?.node_id ?? "unknown", startedAt: holder[0]?.started_at.toISOString() ?? "" };
  }

  private async finish(kind: string, scope: string, state: "done" | "failed", outcome: unknown): Promise<void> {
    try {
      await bounded(
        "job finish",
        this.sql`update ${this.sql(clusterTables.jobs)} set state = ${state}, progress = ${this.sql.json(outcome as postgres.JSONValue)}, finished_at = now(), heartbeat_at = now()
                 where kind = ${kind} and scope = ${scope} and node_id = ${this.options.nodeId}`,
        this.options.statementTimeoutMs,
      );
    } catch {
      // The row goes stale and the next claim takes it over; the operation itself is over.
    }
  }

  /** One bounded step (each second): writes the progress of what this node runs, which also keeps its claims alive. */
  async reportOnce(): Promise<number> {
    const runs = [...this.running.values()];
    for (const run of runs) {
      await bounded(
        "job progress",
        this.sql`update ${this.sql(clusterTables.jobs)} set progress = ${this.sql.json((run.progress() ?? null) as postgres.JSONValue)}, heartbeat_at = now()
                 where kind = ${run.kind} and scope = ${run.scope} and node_id = ${this.options.nodeId} and state = 'running'`,
        this.options.statementTimeoutMs,
      );
    }
    return runs.length;
  }

  /** The latest operations of the cluster, newest first. */
  async list(): Promise<ClusterJobView[]> {
    const rows = await bounded(
      "jobs",
      this.sql<Array<{ kind: string; scope: string; node_id: string; state: ClusterJobView["state"]; progress: unknown; started_at: Date; heartbeat_at: Date; finished_at: Date | null }>>`
        select kind, scope, node_id, state, progress, started_at, heartbeat_at, finished_at
        from ${this.sql(clusterTables.jobs)} order by started_at desc limit ${this.options.listedMax ?? 20}`,
      this.options.statementTimeoutMs,
    );
    return rows.map((r) => ({
      kind: r.kind,
      scope: r.scope,
      node_id: r.node_id,
      state: r.state,
      progress: r.progress,
      started_at: r.started_at.toISOString(),
      heartbeat_at: r.heartbeat_at.toISOString(),
      finished_at: r.finished_at?.toISOString() ?? null,
    }));
  }
}
