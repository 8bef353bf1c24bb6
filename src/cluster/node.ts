/**
 * This chroma-lb node in a cluster of nodes sharing one Postgres (LOG_STORE=postgres): its
 * heartbeat row (/status `nodes`), the wake-up listener, the cluster-wide switches, the
 * operations run once in the cluster, the mappings other nodes change, and the claim that
 * makes an alert go out once for the cluster.
 *
 * Every step is bounded and called by a schedule (`jobs()`); a hint from another node only
 * runs the same step sooner. Replay leases are not here (see leases.ts): they are wired with
 * replay, and share this node's Postgres client (`sql`).
 */
import postgres from "postgres";
import type { CollectionStore } from "../collections/store";
import type { Config } from "../config";
import type { InstanceRegistry } from "../instances/registry";
import type { WebhookPayload } from "../observability/alerts";
import type { Logger } from "../observability/log";
import { bounded, errorText } from "./bounded";
import { ClusterJobs, type ClusterJobView } from "./jobs";
import { NodeRegistry, type NodeRow } from "./nodes";
import { renewableClient, type RenewableClient } from "./renewable";
import { clusterTables } from "./schema";
import { ClusterSwitches } from "./switches";
import { publishHint, WakeupListener, type WakeupEvent, type WakeupHint } from "./wakeups";

export interface ClusterNodeDeps {
  config: Pick<Config, "databaseUrl" | "nodeId" | "nodeAddress" | "nodeHeartbeatIntervalMs" | "leaseTtlMs" | "alertMinIntervalMs">;
  log: Logger;
  registry: InstanceRegistry;
  collections: CollectionStore;
  /** Told when maintenance of an instance ends by another node's switch (replay resumes there). */
  onMaintenanceEnded?: (instance: string) => void;
}

/** A node as /status lists it. */
export interface NodeView {
  id: string;
  address: string;
  last_heartbeat_at: string;
  leases: number;
}

/** The cluster as /status shows it. */
export interface ClusterStatusView {
  nodes: NodeView[];
  operations: ClusterJobView[];
  /** When the lists were read from Postgres (null before the first read). */
  asOf: string | null;
  /** Why the last read failed (the lists are then as of `asOf`). */
  error: string | null;
}

/** The shortest an alert key stays claimed by the node that posted it (see claimAlert). */
const alertDedupeMinMs = 60_000;

/** Polled steps: switches and mappings are read at least this often. */
export const clusterSyncIntervalMs = 1_000;
/** Checks in a row, a second apart, that the cluster's client may leave unanswered before it is replaced. */
const clientRenewAfterChecks = 3;

export class ClusterNode {
  /** For the cluster's own statements (heartbeat, switches, jobs, leases): a few connections. */
  readonly sql: postgres.Sql;
  /** `sql` forwards to this client's current one (renewable.ts). */
  private readonly client: RenewableClient;
  readonly nodes: NodeRegistry;
  readonly listener: WakeupListener;
  readonly switches: ClusterSwitches;
  readonly jobs: ClusterJobs;
  private readonly statementTimeoutMs: number;
  /** The mappings' version last seen in Postgres (row counts and newest change). */
  private mappingsVersion: string | null = null;
  private readonly hintListeners: Array<(event: WakeupEvent) => void> = [];
  /** Address given at start when NODE_ADDRESS is unset (the listening URL). */
  private readonly nodeOptions: { nodeId: string; address: string; liveMs: number };
  mappingReloads = 0;

  constructor(private readonly deps: ClusterNodeDeps) {
    const { config } = deps;
    if (!config.databaseUrl) throw new Error("a cluster node needs DATABASE_URL");
    const url = config.databaseUrl;
    // postgres.js waits up to 20 s between reconnection attempts once many have failed (its
    // default backoff grows as 3^n); heartbeats, leases and switches must resume within a
    // second or so of Postgres's return, so attempts here are at most a second apart.
    const connect = (max: number) =>
      postgres(url, { max, connect_timeout: 5, idle_timeout: 30, backoff: (retries: number) => Math.min(0.1 * 2 ** retries, 1), onnotice: () => {} });
    this.client = renewableClient(() => connect(3));
    this.sql = this.client.sql;
    // A third of the lease time: a statement that waits longer is worth nothing to a heartbeat.
    this.statementTimeoutMs = Math.max(500, Math.floor(config.leaseTtlMs / 3));
    this.nodeOptions = { nodeId: config.nodeId, address: config.nodeAddress ?? "", liveMs: config.leaseTtlMs };
    this.nodes = new NodeRegistry(this.sql, this.nodeOptions);
    this.listener = new WakeupListener({ nodeId: config.nodeId, connect: () => connect(2), onEvent: (event) => this.onHint(event) });
    this.switches = new ClusterSwitches(this.sql, deps.registry, deps.log, {
      nodeId: config.nodeId,
      statementTimeoutMs: this.statementTimeoutMs,
      onMaintenanceEnded: deps.onMaintenanceEnded,
    });
    // A running operation reports each second; three lease times of silence mean its node died.
    this.jobs = new ClusterJobs(this.sql, { nodeId: config.nodeId, statementTimeoutMs: this.statementTimeoutMs, staleMs: 3 * config.leaseTtlMs });
  }

  get nodeId(): string {
    return this.deps.config.nodeId;
  }

  /** Reads the switches and the mappings' version (the store's migrations made the tables); before the server listens. */
  async open(): Promise<void> {
    await this.switches.syncOnce();
    // Read again, not just versioned: a change made since the store was opened would otherwise be taken as seen.
    await this.syncMappings();
  }

  /** Once the server listens: the first heartbeat (with the listening URL unless NODE_ADDRESS) and the listener. */
  async start(listeningUrl: string): Promise<void> {
    if (!this.nodeOptions.address) this.nodeOptions.address = listeningUrl;
    const beat = await this.nodes.heartbeatOnce();
    if (!beat.ok) this.deps.log.error("node heartbeat failed", { nodeId: this.nodeId, error: beat.error });
    await this.listener.checkOnce();
    await this.statusOnce();
  }

  /** Also told of every hint and resync (replay wiring subscribes for `entry` hints). */
  onWakeup(listener: (event: WakeupEvent) => void) {
    this.hintListeners.push(listener);
  }

  /** Tells the other nodes to look now (switches, mappings); a lost hint costs at most one poll. */
  async hint(hint: WakeupHint): Promise<void> {
    try {
      await bounded("wake-up hint", publishHint(this.sql, this.nodeId, hint), this.statementTimeoutMs);
    } catch (error) {
      this.deps.log.debug("wake-up hint not sent; other nodes see the change at their next poll", { error: errorText(error) });
    }
  }

  private onHint(event: WakeupEvent) {
    for (const listener of this.hintListeners) listener(event);
    if (event.kind === "switch" || event.kind === "resync") void this.switches.syncOnce().catch(() => {});
    if (event.kind === "mapping" || event.kind === "resync") void this.mappingsOnce().catch(() => {});
  }

  /**
   * One bounded step (each second): a client whose statements have all gone unanswered for
   * `clientRenewAfterChecks` checks in a row is replaced (see renewable.ts). While Postgres
   * is really down this makes a new client every few seconds, which costs nothing until it
   * connects.
   */
  async clientCheckOnce(): Promise<boolean> {
    try {
      await bounded("client check", this.sql`select 1`, this.statementTimeoutMs);
      this.unansweredChecks = 0;
      return true;
    } catch {
      this.unansweredChecks += 1;
      if (this.unansweredChecks >= clientRenewAfterChecks) {
        this.unansweredChecks = 0;
        this.client.renew();
        this.deps.log.warn("the cluster's Postgres client stopped answering; a new one takes its place", { clients: this.client.made });
      }
      return false;
    }
  }

  private unansweredChecks = 0;

  /** Background steps for schedules.ts. */
  backgroundJobs(): Array<{ name: string; everyMs: number; run: () => Promise<unknown> }> {
    return [
      { name: "cluster-client-check", everyMs: clusterSyncIntervalMs, run: () => this.clientCheckOnce() },
      { name: "node-heartbeat", everyMs: this.deps.config.nodeHeartbeatIntervalMs, run: () => this.nodes.heartbeatOnce() },
      { name: "wakeup-listener", everyMs: this.deps.config.nodeHeartbeatIntervalMs, run: () => this.listener.checkOnce() },
      { name: "cluster-sync", everyMs: clusterSyncIntervalMs, run: () => this.syncOnce() },
      { name: "cluster-job-progress", everyMs: clusterSyncIntervalMs, run: () => this.jobs.reportOnce() },
      { name: "cluster-status", everyMs: clusterSyncIntervalMs, run: () => this.statusOnce() },
    ];
  }

  /** One poll: the switches and the mappings as Postgres has them now. */
  async syncOnce(): Promise<void> {
    await this.switches.syncOnce();
    await this.mappingsOnce();
  }

  /**
   * Reloads the mappings when another node changed them: a cheap version (counts and newest
   * change of both tables) is read each poll, the mappings only when it moved.
   */
  async mappingsOnce(): Promise<boolean> {
    return (await this.syncMappings()) === "reloaded";
  }

  /** Whether the mappings in memory are, after this call, at least those of the store when it began. */
  async mappingsCurrent(): Promise<boolean> {
    return (await this.syncMappings()) !== "not now";
  }

  /**
   * The log position the mappings in memory are current for: every mapping change made
   * before an entry up to it was logged is in them. A collection is mapped (created, renamed,
   * dropped) before the entry that makes it is logged, or before the client that logs a
   * later entry was answered, so a read that needs a position above this one must read the
   * mappings again first (`mappingsCurrent`).
   */
  get mappingsAsOfPosition(): number {
    return this.mappingsAsOf;
  }

  private mappingsAsOf = 0;

  /** `not now`: they changed, but a change of this node's own was in flight (the next poll reloads). */
  private async syncMappings(): Promise<"current" | "reloaded" | "not now"> {
    const { version, position } = await this.readMappingsVersion();
    if (version === this.mappingsVersion) {
      this.mappingsAsOf = Math.max(this.mappingsAsOf, position);
      return "current";
    }
    if (!(await this.deps.collections.refreshOnce())) return "not now";
    this.mappingsVersion = version;
    this.mappingsAsOf = Math.max(this.mappingsAsOf, position);
    this.mappingReloads += 1;
    return "reloaded";
  }

  /**
   * A cheap version of the mappings (counts and newest change of both tables), and the
   * last log position handed out when it was read: every position up to it was handed out
   * before, so the mapping changes made ahead of those entries are in the version.
   */
  private async readMappingsVersion(): Promise<{ version: string; position: number }> {
    const rows = await bounded(
      "mappings version",
      this.sql<Array<{ v: string; position: number }>>`
        select (select case when is_called then last_value else 0 end from chroma_lb_wal_entries_seq_seq) as position,
          concat_ws('/',
          (select count(*) from chroma_lb_collections), (select coalesce(max(updated_at_ms), 0) from chroma_lb_collections),
          (select count(*) from chroma_lb_collection_instances), (select coalesce(max(updated_at_ms), 0) from chroma_lb_collection_instances)) as v`,
      this.statementTimeoutMs,
    );
    return { version: rows[0]!.v, position: rows[0]!.position };
  }

  /**
   * What /status shows of the cluster, read from Postgres each second (`statusOnce`), so
   * that /status answers at once even while Postgres does not: it then shows the last list
   * read, when it was read, and why it is not newer.
   */
  get statusView(): ClusterStatusView {
    return this.status;
  }

  private status: ClusterStatusView = { nodes: [], operations: [], asOf: null, error: null };

  /** One bounded step: reads the live nodes and the latest operations for /status. */
  async statusOnce(): Promise<ClusterStatusView> {
    try {
      const [rows, operations] = await Promise.all([this.nodes.liveNodes(), this.jobs.list()]);
      this.status = { nodes: rows.map(view), operations, asOf: new Date().toISOString(), error: null };
    } catch (error) {
      this.status = { ...this.status, error: errorText(error) };
    }
    return this.status;
  }

  /**
   * Whether this node posts `payload`: the first node to claim its key with this status
   * posts it, the others do not. The table keeps the last status posted per key (event,
   * instance, collection), so each node's own alerter, which posts an alert once per episode
   * and its resolution once, is reduced to one post for the cluster: `firing` is claimed only
   * when the last post of the key was not `firing`, `resolved` only after a `firing`. The
   * same status is posted again only once ALERT_MIN_INTERVAL (at least a minute) has passed,
   * so a condition a dead node posted and never resolved is not silenced for ever, and a
   * notice (no status change) repeats at most once per interval.
   * When Postgres does not answer, the alert is posted anyway: a duplicate is better than
   * silence while the store itself is down.
   */
  async claimAlert(payload: WebhookPayload): Promise<boolean> {
    const t = this.sql(clusterTables.alertsPosted);
    const windowSeconds = Math.max(alertDedupeMinMs, this.deps.config.alertMinIntervalMs) / 1000;
    try {
      const rows = await bounded(
        "alert claim",
        this.sql`
          insert into ${t} (event, instance, collection, status, node_id, posted_at)
          values (${payload.event}, ${payload.instance ?? ""}, ${payload.collection ?? ""}, ${payload.status}, ${this.nodeId}, now())
          on conflict (event, instance, collection) do update
            set status = excluded.status, node_id = excluded.node_id, posted_at = excluded.posted_at
            where ${t}.status <> excluded.status or ${t}.posted_at < now() - make_interval(secs => ${windowSeconds})
          returning 1`,
        this.statementTimeoutMs,
      );
      return rows.length > 0;
    } catch (error) {
      this.deps.log.warn("alert claim failed; posting it from this node", { event: payload.event, error: errorText(error) });
      return true;
    }
  }

  /** Leaves the live list at once and closes the clients; bounded. */
  async stop(): Promise<void> {
    await this.listener.stop();
    await this.nodes.leave().catch(() => {});
    await this.sql.end({ timeout: 1 }).catch(() => {});
  }
}

const view = (row: NodeRow): NodeView => ({ id: row.id, address: row.address, last_heartbeat_at: row.lastHeartbeatAt.toISOString(), leases: row.leases });

export type { NodeRow };
