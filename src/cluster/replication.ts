/**
 * One chroma-lb node among several sharing one Postgres (LOG_STORE=postgres): wires the
 * node registry, the replay leases, the wake-up listener and the cross-node locks into the
 * log, replay and the write path, and lists the jobs that keep them going.
 *
 * What each node refreshes, and when:
 * - its view of the log (heads, what each instance owes, marks): reloaded every
 *   NODE_HEARTBEAT_INTERVAL, and soon after a wake-up hint (a write recorded by another
 *   node); routing, metrics and the choice of replay leases read it;
 * - decisions that must not lag read Postgres at decision time: what an instance owes
 *   before it takes a write or serves a read, the next entries to replay, the lease's token
 *   where progress is recorded.
 */
import os from "node:os";
import type postgres from "postgres";
import type { Config } from "../config";
import { postgresClient } from "../db";
import { LbError, storageRetryAfterSeconds } from "../errors";
import type { InstanceRegistry } from "../instances/registry";
import type { Logger } from "../observability/log";
import type { Replayer } from "../replay/replayer";
import type { WriteAheadLog } from "../wal/log";
import type { PostgresLogStore } from "../wal/postgres";
import type { TxScope } from "../wal/postgres/tx-scope";
import type { WritePath } from "../writes/pipeline";
import { ApplyLocks, WriteLockUnavailable } from "./apply-locks";
import { clusterJobs, type ClusterJob } from "./index";
import { LeaseManager, type LeaseKey } from "./leases";
import { NodeRegistry } from "./nodes";
import { ensureClusterSchema } from "./schema";
import { WakeupListener } from "./wakeups";

export interface ClusterNodeDeps {
  config: Config;
  log: Logger;
  wal: WriteAheadLog;
  store: PostgresLogStore;
  scope: TxScope;
  registry: InstanceRegistry;
  replayer: Replayer;
  writes: WritePath;
}

/** Connections of the coordination client (heartbeat, leases) and of the lock client. */
const coordinationConnectionsMax = 3;
const lockConnectionsMax = 16;
/** Reloads of the view after hints are at least this far apart. */
const hintRefreshGapMs = 200;
/** Partitions with `new` entries looked at per orphan pass. */
const orphanPartitionsMax = 100;

export class ClusterNode {
  readonly nodes: NodeRegistry;
  readonly leases: LeaseManager;
  readonly listener: WakeupListener;
  readonly locks: ApplyLocks;
  private readonly coordination: postgres.Sql;
  private readonly lockClient: postgres.Sql;
  private refreshing: Promise<void> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private lastRefreshMs = 0;
  private stopped = false;
  /** Replay passes this node ran under a lease (tests and /metrics read them). */
  readonly stats = { viewRefreshes: 0, hints: 0, leasesAcquired: 0, leasesReleased: 0 };

  constructor(private readonly deps: ClusterNodeDeps) {
    const { config } = deps;
    const url = config.databaseUrl!;
    this.coordination = postgresClient(url, { max: coordinationConnectionsMax, connectTimeoutSeconds: 2 });
    this.lockClient = postgresClient(url, { max: lockConnectionsMax, connectTimeoutSeconds: 2 });
    const host = config.host === "0.0.0.0" || config.host === "::" ? os.hostname() : config.host;
    this.nodes = new NodeRegistry(this.coordination, { nodeId: config.nodeId, address: `http://${host}:${config.port}`, liveMs: config.leaseTtlMs });
    this.leases = new LeaseManager(this.coordination, { nodeId: config.nodeId, ttlMs: config.leaseTtlMs });
    this.listener = new WakeupListener({
      nodeId: config.nodeId,
      connect: () => postgresClient(url, { max: 2, connectTimeoutSeconds: 2 }),
      onEvent: () => {
        this.stats.hints += 1;
        this.refreshSoon();
      },
    });
    this.locks = new ApplyLocks(this.lockClient, deps.scope, {
      nodeId: config.nodeId,
      requestTimeoutMs: config.requestTimeoutMs,
      leaseOf: (key) => this.leases.holds(key),
    });
  }

  /** Creates the cluster tables if missing and plugs the node into the log, replay and writes. */
  async attach(): Promise<void> {
    const { wal, store, replayer, writes, scope, log } = this.deps;
    await ensureClusterSchema(this.coordination);
    const locks = this.locks;
    replayer.crossNode = {
      applying: (instance, partition, fn, fenced) => locks.applying(instance, partition, fn, fenced),
      replays: (instance, partition) => this.leases.holds({ instance, collection: partition }) !== null,
      beforeSend: () => locks.beforeSend(),
      detach: (fn) => scope.detach(fn),
    };
    writes.partitionLock = async (partition, fn) => {
      try {
        return await locks.writing(partition, () => store.recoverOrphans(partition), fn);
      } catch (error) {
        if (!(error instanceof WriteLockUnavailable)) throw error;
        log.warn("a write could not take its collection's lock; answered 503", { partition, reason: error.reason });
        throw new LbError(503, "ServiceUnavailable", `chroma-lb cannot order this write now (${error.reason}); nothing was kept, retry shortly`, {
          "retry-after": String(storageRetryAfterSeconds),
        });
      }
    };
    wal.instancesBehind = (instances, partition, uptoSeq) => store.instancesBehind(instances, partition, uptoSeq);
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
      })
      .finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  /** After a hint: a reload (at most one per hintRefreshGapMs), then replay of what this node holds. */
  private refreshSoon() {
    if (this.refreshTimer || this.stopped) return;
    const waitMs = Math.max(0, hintRefreshGapMs - (performance.now() - this.lastRefreshMs));
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null;
      this.refreshOnce()
        .then(() => this.deps.replayer.kickAll())
        .catch(() => {}); // The poll tries again; the store's own errors surface on its writes.
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

  /** Every background job of the node (schedules.ts runs them). */
  jobs(): ClusterJob[] {
    const { config, replayer, registry } = this.deps;
    const base = clusterJobs({
      registry: this.nodes,
      leases: this.leases,
      listener: this.listener,
      heartbeatIntervalMs: config.nodeHeartbeatIntervalMs,
      wantedKeys: () => this.wantedKeys(),
    });
    return [
      ...base.map((job) =>
        job.name !== "lease-acquire"
          ? job
          : {
              ...job,
              run: async () => {
                const result = (await job.run()) as { acquired: Array<{ instance: string }> } | null;
                if (!result?.acquired.length) return result;
                this.stats.leasesAcquired += result.acquired.length;
                // A lease just taken (a takeover, or new work) is replayed at once.
                for (const name of new Set(result.acquired.map((l) => l.instance))) {
                  const instance = registry.get(name);
                  if (instance) void replayer.kick(instance);
                }
                return result;
              },
            },
      ),
      { name: "cluster-view-refresh", everyMs: config.nodeHeartbeatIntervalMs, run: () => this.refreshOnce() },
      { name: "lease-release", everyMs: config.nodeHeartbeatIntervalMs, run: () => this.releaseUnwantedOnce() },
      { name: "orphan-recovery", everyMs: config.nodeHeartbeatIntervalMs, run: () => this.recoverOrphansOnce() },
    ];
  }

  /** A graceful stop: leases released and the node's row removed, so others take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    await this.leases.releaseAll().catch(() => {});
    await this.nodes.leave().catch(() => {});
    await this.listener.stop().catch(() => {});
    await Promise.all([this.coordination.end({ timeout: 2 }), this.lockClient.end({ timeout: 2 })]).catch(() => {});
  }
}
