/**
 * The node registry: every chroma-lb node writes a heartbeat row in `chroma_lb_nodes`, and a
 * node is live while its last heartbeat (by Postgres's clock) is within the live bound.
 *
 * Each process also writes a random incarnation id. A heartbeat only updates a row of its
 * own incarnation, or a row whose node has stopped beating; so a second process started with
 * the NODE_ID of a live node is told so (and must not take leases) instead of silently
 * sharing that node's leases. The same row serves River's habit of naming each client in
 * the database (riverqueue/river `river_client`), reduced to what /status needs.
 */
import type postgres from "postgres";
import { bounded, errorText } from "./bounded";
import { clusterTables } from "./schema";

export interface NodeRegistryOptions {
  /** This node's NODE_ID. */
  nodeId: string;
  /** Where other nodes and operators reach this node, e.g. `http://10.0.0.7:8000`. */
  address: string;
  /** A node is live while its last heartbeat is younger than this (the lease TTL). */
  liveMs: number;
  /** Bound on one heartbeat statement (default: a third of liveMs). */
  statementTimeoutMs?: number;
}

/** The outcome of one heartbeat. */
export type HeartbeatResult =
  | { ok: true; startedAt: Date }
  | { ok: false; reason: "node id in use"; error: string }
  | { ok: false; reason: "unreachable"; error: string };

/** A live node, as /status lists it. */
export interface NodeRow {
  id: string;
  address: string;
  startedAt: Date;
  lastHeartbeatAt: Date;
  /** Replay leases it holds (unexpired). */
  leases: number;
}

/** One node's row in the registry: heartbeats, the live list, and leaving. */
export class NodeRegistry {
  /** Random per process: tells this run of the node from another process with the same NODE_ID. */
  readonly incarnation = crypto.randomUUID();
  private readonly statementTimeoutMs: number;
  /** Monotonic time of the last heartbeat Postgres acknowledged, or null before the first. */
  lastHeartbeatOkMs: number | null = null;
  lastError: string | null = null;

  constructor(
    private readonly sql: postgres.Sql,
    private readonly options: NodeRegistryOptions,
  ) {
    this.statementTimeoutMs = options.statementTimeoutMs ?? Math.max(100, Math.floor(options.liveMs / 3));
  }

  /** One heartbeat: creates or refreshes this node's row; bounded. */
  async heartbeatOnce(): Promise<HeartbeatResult> {
    const { nodeId, address, liveMs } = this.options;
    const t = this.sql(clusterTables.nodes);
    let rows: Array<{ started_at: Date }>;
    try {
      rows = await bounded(
        "node heartbeat",
        this.sql`
          insert into ${t} (id, address, incarnation, started_at, last_heartbeat_at)
          values (${nodeId}, ${address}, ${this.incarnation}, now(), now())
          on conflict (id) do update
            set address = excluded.address,
                incarnation = excluded.incarnation,
                started_at = case when ${t}.incarnation = excluded.incarnation then ${t}.started_at else now() end,
                last_heartbeat_at = now()
            where ${t}.incarnation = excluded.incarnation
               or ${t}.last_heartbeat_at < now() - make_interval(secs => ${liveMs / 1000})
          returning started_at`,
        this.statementTimeoutMs,
      );
    } catch (error) {
      this.lastError = errorText(error);
      return { ok: false, reason: "unreachable", error: this.lastError };
    }
    if (rows.length === 0) {
      this.lastError = `another live process already runs as NODE_ID ${nodeId}`;
      return { ok: false, reason: "node id in use", error: this.lastError };
    }
    this.lastHeartbeatOkMs = performance.now();
    this.lastError = null;
    return { ok: true, startedAt: rows[0]!.started_at };
  }

  /** Nodes whose last heartbeat is within the live bound, with the unexpired leases each holds. */
  async liveNodes(): Promise<NodeRow[]> {
    const rows = await bounded(
      "live nodes",
      this.sql<Array<{ id: string; address: string; started_at: Date; last_heartbeat_at: Date; leases: number }>>`
        select n.id, n.address, n.started_at, n.last_heartbeat_at,
               (select count(*)::int from ${this.sql(clusterTables.leases)} l where l.node_id = n.id and l.expires_at > now()) as leases
        from ${this.sql(clusterTables.nodes)} n
        where n.last_heartbeat_at >= now() - make_interval(secs => ${this.options.liveMs / 1000})
        order by n.id`,
      this.statementTimeoutMs,
    );
    return rows.map((r) => ({ id: r.id, address: r.address, startedAt: r.started_at, lastHeartbeatAt: r.last_heartbeat_at, leases: r.leases }));
  }

  /** Removes this node's row on a graceful stop, so it leaves the live list at once. */
  async leave(): Promise<void> {
    await bounded(
      "node leave",
      this.sql`delete from ${this.sql(clusterTables.nodes)} where id = ${this.options.nodeId} and incarnation = ${this.incarnation}`,
      this.statementTimeoutMs,
    );
  }

  /** Deletes up to `limit` rows of nodes silent for longer than `silentMs` (gone for good); returns how many. */
  async pruneOnce(silentMs: number, limit = 100): Promise<number> {
    const rows = await bounded(
      "node prune",
      this.sql`
        delete from ${this.sql(clusterTables.nodes)} where id in (
          select id from ${this.sql(clusterTables.nodes)}
          where last_heartbeat_at < now() - make_interval(secs => ${silentMs / 1000})
          order by last_heartbeat_at limit ${limit})
        returning id`,
      this.statementTimeoutMs,
    );
    return rows.length;
  }
}
