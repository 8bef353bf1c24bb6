/**
 * Every long-lived service of one chroma-lb process, built once by `buildServices`
 * (server.ts) and handed to the app, the schedules and the admin endpoints. Modules that
 * need only a few take a `Pick<Services, ...>`.
 */
import type { AccessControl } from "./auth/access";
import type { ClusterNode } from "./cluster/node";
import type { ReplicationCluster } from "./cluster/replication";
import type { Adoption } from "./collections/adoption";
import type { Mirror } from "./collections/mirror";
import type { CollectionStore } from "./collections/store";
import type { Config } from "./config";
import type { InstanceRegistry } from "./instances/registry";
import type { Alerter } from "./observability/alerts";
import type { RecentEvents } from "./observability/events";
import type { Logger } from "./observability/log";
import type { Metrics } from "./observability/metrics";
import type { InflightBudget } from "./proxy/inflight";
import type { InstanceAnswers } from "./proxy/instance-answers";
import type { Replayer } from "./replay/replayer";
import type { BatchSizer } from "./replay/sizing";
import type { KeyedMutex } from "./util/mutex";
import type { WriteAheadLog } from "./wal/log";
import type { ConsistencyChecker } from "./repair/consistency";
import type { Resyncer } from "./repair/resync";
import type { WritePath } from "./writes/pipeline";

export interface Services {
  config: Config;
  log: Logger;
  wal: WriteAheadLog;
  collections: CollectionStore;
  registry: InstanceRegistry;
  replayer: Replayer;
  sizer: BatchSizer;
  adoption: Adoption;
  mirror: Mirror | null;
  /** One lock per collection (and `meta`): writes, and copies made by adoption, take it. */
  writeLocks: KeyedMutex;
  writes: WritePath;
  /** Compares the instances' copies (GET /admin/consistency, the consistency schedule). */
  consistency: ConsistencyChecker;
  /** Rebuilds an instance's copy of a collection from a current one. */
  resyncer: Resyncer;
  /** The instances' last answers to pre-flight checks, version and identity, served while none answers. */
  instanceAnswers: InstanceAnswers;
  /** Bytes of request bodies held in memory at once (MAX_INFLIGHT_MB). */
  inflight: InflightBudget;
  /** Posts alerts and their resolutions to ALERT_WEBHOOK_URL, at most once per ALERT_MIN_INTERVAL each. */
  alerter: Alerter;
  /** Recent alerts, resolutions and health transitions (GET /events). */
  events: RecentEvents;
  /** The Prometheus registry and the figures counted as they happen (GET /metrics). */
  metrics: Metrics;
  /** Who may do what: tokens, roles, scopes, the open or closed data API, audit. */
  access: AccessControl;
  /** This node among several sharing one Postgres (LOG_STORE=postgres); null with SQLite (one node). */
  cluster: ClusterNode | null;
  /** Replay and writes shared with the other nodes: leases, cross-node locks (LOG_STORE=postgres); null with SQLite. */
  replication: ReplicationCluster | null;
  startedAtMs: number;
  close(): Promise<void>;
}
