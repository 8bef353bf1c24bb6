/**
 * Replay and writes shared by several chroma-lb nodes on one Postgres (LOG_STORE=postgres):
 * wires the replay leases and the cross-node locks into the log, replay and the write path,
 * and lists the jobs that keep them going. The node itself (heartbeat, wake-up listener) is
 * node.ts; leases are taken only while its heartbeat goes through.
 *
 * What each node refreshes, and when:
 * - its view of the log (heads, what each instance owes, marks): reloaded every
 *   NODE_HEARTBEAT_INTERVAL, and soon after a wake-up hint (a write recorded by another
 *   node); routing, metrics and the choice of replay leases read it;
 * - decisions that must not lag read Postgres at decision time: what an instance owes
 *   before it takes a write or serves a read, the next entries to replay, the lease's token
 *   where progress is recorded.
 */
import type postgres from "postgres";
import type { Config } from "../config";
import { postgresClient } from "../db";
import type { InstanceRegistry } from "../instances/registry";
import type { Logger } from "../observability/log";
import type { Replayer } from "../replay/replayer";
import type { WriteAheadLog } from "../wal/log";
import type { PostgresLogStore } from "../wal/postgres";
import type { TxScope } from "../wal/postgres/tx-scope";
import type { WritePath } from "../writes/pipeline";
import { ApplyLocks, WriteLockUnavailable } from "./apply-locks";
import type { ClusterJob } from "./index";
import { LeaseManager, type LeaseKey } from "./leases";
import { renewableClient, type RenewableClient } from "./renewable";
import type { ClusterNode } from "./node";

export interface ReplicationDeps {
  /** This node: its heartbeat proves it owns NODE_ID; its listener brings other nodes' hints. */
  node: ClusterNode;
  config: Config;
  log: Logger;
  wal: WriteAheadLog;
  store: PostgresLogStore;
  scope: TxScope;
  registry: InstanceRegistry;
  replayer: Replayer;
  writes: WritePath;
}

/** Connections of the lock client: locks held at once, across writes and replay. */
const lockConnectionsMax = 10;
/** Connections of the lease client (acquire, renew, release). */
const leaseConnectionsMax = 2;
/** Connections of the client that writes apply-lock send rows (outside the holders' transactions). */
const sendRowConnectionsMax = 2;
/** How often send rows no request can need any more are removed. */
const sendRowSweepIntervalMs = 60_000;
/** Reloads of the view after hints are at least this far apart. */
const hintRefreshGapMs = 500;
/** Partitions with `new` entries looked at per orphan pass. */
const orphanPartitionsMax = 100;
/** How often the mappings of creates never logged are looked for, and the margin for clocks before one counts as such. */
const neverCreatedIntervalMs = 10_000;
const neverCreatedMarginMs = 10_000;

export class ReplicationCluster {
  readonly leases: LeaseManager;
  readonly locks: ApplyLocks;
  private readonly lockClient: RenewableClient;
  private readonly leaseClient: postgres.Sql;
  private readonly sendRowClient: RenewableClient;
  private refreshing: Promise<void> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private lastRefreshMs = 0;
  private stopped = false;
  /** When each (instance, collection) was last tried on demand (replayable). */
  private readonly triedAtMs = new Map<string, number>();
  /** Replay passes this node ran under a lease (tests and /metrics read them). */
  readonly stats = { viewRefreshes: 0, hints: 0, leasesAcquired: 0, leasesReleased: 0, clientsRenewed: 0 };

  constructor(private readonly deps: ReplicationDeps) {
    const { config, node } = deps;
    // Both replaceable: a client left waiting for good by the driver is thrown away (onStuck).
    this.lockClient = renewableClient(() => postgresClient(config.databaseUrl!, { max: lockConnectionsMax, connectTimeoutSeconds: 2, fastReconnect: true }));
    // Leases on a client of their own: a renewal never queues behind the node's other
    // statements (switches, mappings, claims), nor behind a lock holder.
    this.leaseClient = postgresClient(config.databaseUrl!, { max: leaseConnectionsMax, connectTimeoutSeconds: 2, fastReconnect: true });
    this.leases = new LeaseManager(this.leaseClient, { nodeId: config.nodeId, ttlMs: config.leaseTtlMs });
    node.onWakeup((event) => {
      if (event.kind !== "entry" && event.kind !== "resync") return;
      this.stats.hints += 1;
      this.refreshSoon();
    });
    // Send rows are only read by the next holder of a lock: they need to be seen, not to
    // survive a crash of Postgres (which frees every lock and takes a while to come back).
    this.sendRowClient = renewableClient(() =>
      postgresClient(config.databaseUrl!, { max: sendRowConnectionsMax, connectTimeoutSeconds: 2, fastReconnect: true, synchronousCommit: "off" }),
    );
    this.locks = new ApplyLocks(
      this.lockClient.sql,
      deps.scope,
      {
        nodeId: config.nodeId,
        requestTimeoutMs: config.requestTimeoutMs,
        leaseOf: (key) => this.leases.holds(key),
        onDoubt: (mark) => {
          deps.wal.view.marked(mark);
          deps.log.warn("a copy is marked in doubt; the repair pass rebuilds it", { instance: mark.instance, partition: mark.partition, reason: mark.error });
        },
        onStuck: (client, what) => {
          // What waited on the old client fails (and is retried); later statements use a new one.
          this.stats.clientsRenewed += 1;
          deps.log.warn("a Postgres client stopped answering; it is replaced", { client, what });
          (client === "locks" ? this.lockClient : this.sendRowClient).renew();
        },
      },
      this.sendRowClient.sql,
    );
  }

  /** Plugs the cross-node locks and leases into the log, replay and writes (the cluster tables exist: node.open). */
  attach(): void {
    const { wal, store, replayer, writes, scope, log } = this.deps;
    const locks = this.locks;
    replayer.crossNode = {
      applying: (instance, partition, fn, fenced) => locks.applying(instance, partition, fn, fenced),
      replays: (instance, partitions) => this.replayable(instance, partitions),
      holding: (instance, partition, fn) => locks.holding(instance, partition, fn),
      beforeSend: (instance, partition) => locks.beforeSend(instance, partition),
      detach: (fn) => scope.detach(fn),
    };
    writes.partitionLock = async (partition, fn) => {
      // Nothing can be ordered (or kept) while Postgres does not answer: refused at once.
      if (wal.storeUnreachable) throw new WriteLockUnavailable(`the log store cannot be reached (${wal.storeUnreachable.error})`).toLbError();
      try {
        return await locks.writing(partition, () => store.recoverOrphans(partition), fn);
      } catch (error) {
        if (error instanceof WriteLockUnavailable) {
          log.warn("a write could not take its collection's lock; answered 503", { partition, reason: error.reason });
          throw error.toLbError();
        }
        // Postgres went away during the write: not acknowledged. If its entry was appended it is
        // replayed everywhere (recovered by the next writer); a retry of the same write is safe.
        if (!store.isUnreachableError(error)) throw error;
        log.warn("the log store went away during a write; answered 503", { partition, error: String((error as Error)?.message ?? error).slice(0, 200) });
        throw new WriteLockUnavailable("the log store went away during the write").toLbError(true);
      }
    };
    writes.collectionDropped = (partition) => store.collectionDropped(partition);
    wal.instancesBehind = (instances, partition, uptoSeq) => store.instancesBehind(instances, partition, uptoSeq);
    wal.deferViewChange = (change) => scope.afterCommit(change);
  }

  /**
   * Of `partitions`, those this node holds the lease of for `instance`, after trying once to
   * take the ones nobody holds (new work is replayed at once, not at the next acquire job).
   * A key is tried at most once per NODE_HEARTBEAT_INTERVAL, so a key another node holds
   * costs no statement per pass.
   */
  private async replayable(instance: string, partitions: string[]): Promise<Set<string>> {
    const now = performance.now();
    const held = (collection: string) => this.leases.holds({ instance, collection }) !== null;
    const untried = partitions.filter((collection) => {
      if (held(collection)) return false;
      const key = JSON.stringify([instance, collection]);
      if (now - (this.triedAtMs.get(key) ?? -Infinity) < this.deps.config.nodeHeartbeatIntervalMs) return false;
      this.triedAtMs.set(key, now);
      return true;
    });
    if (this.triedAtMs.size > 100_000) this.triedAtMs.clear();
    if (untried.length > 0 && this.ownsNodeId()) {
      const { acquired } = await this.leases.tryAcquire(untried.map((collection) => ({ instance, collection })));
      this.stats.leasesAcquired += acquired.length;
    }
    return new Set(partitions.filter(held));
  }

  /**
   * Leases are taken once a heartbeat proved this process owns its NODE_ID, and not while
   * the registry says another live process runs under it. A heartbeat that merely fails
   * (the node's client waiting on Postgres) does not stop replay: the lease statements
   * themselves then fail or succeed on their own.
   */
  private ownsNodeId(): boolean {
    const { nodes } = this.deps.node;
    return nodes.lastHeartbeatOkMs !== null && !(nodes.lastError ?? "").startsWith("another live process");
  }

  /** The (instance, collection) pairs this node should replay: owed entries, on instances it reaches. */
  wantedKeys(): LeaseKey[] {
    const { registry, wal } = this.deps;
    return registry.all.filter((i) => i.healthy).flatMap((i) => wal.view.owedPartitions(i.name).map((collection) => ({ instance: i.name, collection })));
  }

  /** Reloads the view now, unless a reload is running (then waits for it). */
  refreshOnce(): Promise<void> {
    this.refreshing ??= this.deps.wal
      .refreshView()
      .then(() => {
        this.stats.viewRefreshes += 1;
        this.lastRefreshMs = performance.now();
        // An instance back from an outage serves again once the reloaded view says it owes nothing.
        for (const instance of this.deps.registry.all) this.deps.registry.updateCatchingUp(instance, this.deps.wal.pendingCount(instance.name));
      })
      .finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  /**
   * After a hint (another node recorded a write): replay starts at once on every instance
   * this node reaches (replay reads what is owed from Postgres, not from the view), and the
   * view is reloaded, at most once per hintRefreshGapMs (a reload reads every owed row).
   */
  private refreshSoon() {
    if (this.stopped) return;
    for (const instance of this.deps.registry.all) if (instance.healthy) void this.deps.replayer.kick(instance);
    if (this.refreshTimer) return;
    const waitMs = Math.max(0, hintRefreshGapMs - (performance.now() - this.lastRefreshMs));
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refreshOnce().catch(() => {}); // The poll tries again; the store's own errors surface on its writes.
    }, waitMs);
  }

  /**
   * Gives up leases this node should not hold: keys no longer owed, and instances it sees
   * down (nodes that reach them replay them).
   */
  async releaseUnwantedOnce(): Promise<number> {
    const wanted = new Set(this.wantedKeys().map((k) => `${k.instance}\u0000${k.collection}`));
    const unwanted = this.leases.leases().filter((l) => !wanted.has(`${l.instance}\u0000${l.collection}`));
    if (unwanted.length === 0) return 0;
    const { released } = await this.leases.release(unwanted);
    this.stats.leasesReleased += released;
    return released;
  }

  /** Makes ready the `new` entries left by writers that are gone, partition by partition, where no writer holds the lock. */
  async recoverOrphansOnce(): Promise<number> {
    let recovered = 0;
    for (const partition of await this.deps.store.partitionsWithUnanswered(orphanPartitionsMax)) {
      recovered += await this.locks.recoverIfFree(partition, () => this.deps.store.recoverOrphans(partition));
    }
    if (recovered > 0) {
      this.deps.log.warn("log entries left unanswered by a node that is gone will be replayed everywhere", { entries: recovered });
      await this.refreshOnce();
      this.deps.replayer.kickAll();
    }
    return recovered;
  }

  /**
   * Drops the mappings of creates whose outcome was unknown and whose entry was never
   * logged (see `dropNeverCreated`), once any append of theirs would have ended: twice
   * REQUEST_TIMEOUT, plus 10 s for the nodes' clocks.
   */
  async dropNeverCreatedOnce(): Promise<number> {
    const dropped = await this.deps.store.dropNeverCreated(Date.now() - 2 * this.deps.config.requestTimeoutMs - neverCreatedMarginMs);
    if (dropped.length) {
      this.deps.log.warn("mappings of collections whose create was never logged are removed", { collections: dropped });
      await this.deps.node.mappingsCurrent().catch(() => false);
    }
    return dropped.length;
  }

  /**
   * Takes the leases this node should hold, once its heartbeat has proved it owns NODE_ID
   * (two processes must never share one node's leases); a lease just taken (a takeover, or
   * new work) is replayed at once.
   */
  async acquireOnce(): Promise<number> {
    if (!this.ownsNodeId()) return 0;
    const { acquired } = await this.leases.tryAcquire(this.wantedKeys());
    this.stats.leasesAcquired += acquired.length;
    for (const name of new Set(acquired.map((l) => l.instance))) {
      const instance = this.deps.registry.get(name);
      if (instance) void this.deps.replayer.kick(instance);
    }
    return acquired.length;
  }

  /** Every background job of replication (schedules.ts runs them). */
  jobs(): ClusterJob[] {
    const everyMs = this.deps.config.nodeHeartbeatIntervalMs;
    return [
      // Renewal on the heartbeat's beat: a node that cannot renew stops replaying at its local deadline.
      { name: "lease-renew", everyMs, run: () => this.leases.renewOnce() },
      { name: "lease-acquire", everyMs, run: () => this.acquireOnce() },
      { name: "lease-release", everyMs, run: () => this.releaseUnwantedOnce() },
      { name: "log-view-refresh", everyMs, run: () => this.refreshOnce() },
      { name: "orphan-recovery", everyMs, run: () => this.recoverOrphansOnce() },
      { name: "never-created", everyMs: neverCreatedIntervalMs, run: () => this.dropNeverCreatedOnce() },
      { name: "apply-send-sweep", everyMs: sendRowSweepIntervalMs, run: () => this.locks.sweepSends() },
    ];
  }

  /** A graceful stop: leases released, so others take over at once (before node.stop closes its client). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    await this.leases.releaseAll().catch(() => {});
    await Promise.all([this.lockClient.sql, this.leaseClient, this.sendRowClient.sql].map((client) => client.end({ timeout: 2 }))).catch(() => {});
  }
}
