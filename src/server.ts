/**
 * Wires chroma-lb together: stores, log, instances, replay, schedules, HTTP server.
 * `startServer` is what `src/index.ts` and the in-process test harness call.
 */
import { createApp } from "./app";
import { AccessControl } from "./auth/access";
import { openTokenStore } from "./auth/open";
import { Adoption } from "./collections/adoption";
import { fillCollection } from "./collections/fill";
import { Mirror } from "./collections/mirror";
import { CollectionStore } from "./collections/store";
import type { Config } from "./config";
import { openLocalStore, openMirrorStore } from "./db";
import { PostgresMappingStore } from "./collections/mappings-postgres";
import { PostgresLogStore } from "./wal/postgres";
import { TxScope } from "./wal/postgres/tx-scope";
import { ClusterNode } from "./cluster/node";
import { ReplicationCluster } from "./cluster/replication";
import { InstanceRegistry, type Instance } from "./instances/registry";
import type { CollectionRecord } from "./collections/store";
import { createAlerter, diskFullMessages, instanceDownMessage } from "./observability/alerts";
import { RecentEvents } from "./observability/events";
import { createLogger, type Logger } from "./observability/log";
import { Metrics } from "./observability/metrics";
import { InflightBudget, declaredTooLarge } from "./proxy/inflight";
import { InstanceAnswers } from "./proxy/instance-answers";
import { markOwnAnswer } from "./proxy/headers";
import { Replayer } from "./replay/replayer";
import { BatchSizer } from "./replay/sizing";
import { startSchedules } from "./schedules";
import { KeyedMutex } from "./util/mutex";
import type { Services } from "./services";
import { WriteAheadLog } from "./wal/log";
import { SqliteLogStore } from "./wal/sqlite";
import { StorageReserve } from "./wal/storage";
import { ConsistencyChecker } from "./repair/consistency";
import { Resyncer } from "./repair/resync";
import { WritePath } from "./writes/pipeline";

export type { Services };

/** How long chroma-lb waits between attempts to reach its Postgres store at start. */
const storeOpenRetryMs = 1_000;

/**
 * With LOG_STORE=postgres chroma-lb cannot serve without its store (the mappings and the log
 * are there), so at start it waits for Postgres, trying again each second, instead of
 * exiting: a chroma-lb restarted while Postgres is down serves as soon as it returns.
 */
async function openPostgresStore(databaseUrl: string, log: Logger) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await openMirrorStore(databaseUrl);
    } catch (error) {
      if (attempt === 1 || attempt % 30 === 0) {
        log.warn("the Postgres log store cannot be reached; chroma-lb starts once it answers", { attempt, error: String((error as Error)?.message ?? error).slice(0, 300) });
      }
      await Bun.sleep(storeOpenRetryMs);
    }
  }
}

/** Opens the stores and builds every service; starts nothing in the background. */
export async function buildServices(config: Config, log: Logger = createLogger(config.logLevel)): Promise<Services> {
  // DATA_DIR is opened with either store: it also holds the mirror's watermark and the spare file.
  const local = openLocalStore(config.dataDir);
  const instanceNames = config.instances.map((i) => i.name);
  const pg = config.logStore === "postgres" ? await openPostgresStore(config.databaseUrl!, log) : null;
  const collections = await CollectionStore.open(pg ? new PostgresMappingStore(pg.db) : local);
  const registry = new InstanceRegistry(config.instances, config, log);
  const reserve = pg ? null : new StorageReserve(config.dataDir, config.walDiskReserveBytes);
  const instanceAnswers = new InstanceAnswers(local);
  // The pre-flight checks each instance answers when it comes up are kept too, so a client
  // started during a later outage of every instance can write even if none asked before.
  registry.onPreflight = (body, contentType) => {
    const key = instanceAnswers.keyFor("/api/v2/pre-flight-checks", new Headers());
    if (key) instanceAnswers.remember(key, body, contentType);
  };
  const scope = new TxScope();
  const pgStore = pg ? new PostgresLogStore({ durable: pg.sql, relaxed: pg.relaxed }, instanceNames, undefined, scope) : null;
  const logStore = pgStore ?? new SqliteLogStore(local, instanceNames);
  const wal = await WriteAheadLog.open(logStore, instanceNames, undefined, reserve);
  // With Postgres other nodes may be applying their `new` entries now: those of gone writers
  // are recovered partition by partition under the write lock (cluster/node.ts).
  const recovered = pgStore ? 0 : await wal.recoverUnanswered();
  if (recovered) log.warn("log entries left unanswered by a crash will be replayed everywhere", { entries: recovered });
  const sizer = new BatchSizer(config.walDefaultBatchSize, config.walMaxBatchSize, config.walMaxMemoryMb * 1024 * 1024);
  sizer.observe(BatchSizer.sampleProcess());
  const replayer = new Replayer(wal, collections, registry, sizer, config, log);
  const adoption = new Adoption(collections, registry, wal, config, log);
  // With the Postgres store the mappings are in Postgres already: no mirror.
  const mirror = config.databaseUrl && !pg ? new Mirror(config.databaseUrl, local, collections, log) : null;
  const writeLocks = new KeyedMutex();
  adoption.filler = (record, source, targets) =>
    writeLocks.run(record.id, () => fillCollection(record, source, targets, { collections, wal, config, log }));
  const writes = new WritePath({ config, log, wal, registry, replayer, writeLocks });
  const consistency = new ConsistencyChecker({ config, log, wal, collections, registry, replayer, writes });
  const resyncer = new Resyncer({ config, log, wal, collections, registry, replayer, writes }, consistency);
  const events = new RecentEvents();
  const metrics = new Metrics();
  // Several nodes may share this Postgres: switches, mappings, jobs and alerts are held for all of them.
  const cluster = pg ? new ClusterNode({ config, log, registry, collections, onMaintenanceEnded: (name) => void replayer.kick(registry.get(name)!) }) : null;
  if (cluster) {
    await cluster.open();
    collections.onChanged = () => void cluster.hint({ kind: "mapping", collection: null });
    metrics.registry.setDefaultLabels({ node: config.nodeId });
  }
  // Replay and writes shared with the other nodes: leases and cross-node locks (README "Running several nodes").
  const replication = cluster && pgStore ? new ReplicationCluster({ node: cluster, config, log, wal, store: pgStore, scope, registry, replayer, writes }) : null;
  replication?.attach();
  if (cluster) adoption.refreshMappings = resyncer.refreshMappings = () => cluster.mappingsCurrent();
  if (cluster) resyncer.claim = (scope, progress, fn) => cluster.jobs.run("resync-copy", scope, progress, fn);
  const access = new AccessControl({ config, log, events, collections, tokens: openTokenStore(local, pg?.db ?? null) });
  const alerter = createAlerter({
    webhookUrl: config.alertWebhookUrl,
    minIntervalMs: config.alertMinIntervalMs,
    log,
    events,
    onOutcome: (event, outcome) => metrics.alerts.inc({ event, outcome }),
    claim: cluster ? (payload) => cluster.claimAlert(payload) : undefined,
  });
  for (const instance of registry.all) instance.client.observer = (options, result) => metrics.observeInstanceRequest(instance.name, options, result);
  replayer.stats.onLag = (ms) => metrics.replayLag.observe(ms / 1000);
  registry.onChange((instance, healthy) => {
    metrics.healthTransitions.inc({ instance: instance.name, direction: healthy ? "up" : "down" });
    events.push({
      event: "instance_health",
      level: healthy ? "info" : "warn",
      instance: instance.name,
      message: healthy ? `instance ${instance.name} is up` : instanceDownMessage(instance),
    });
  });
  const services: Services = {
    config,
    log,
    wal,
    collections,
    registry,
    replayer,
    sizer,
    adoption,
    mirror,
    writeLocks,
    writes,
    consistency,
    resyncer,
    inflight: new InflightBudget(config.maxInflightBytes, config.inflightWaitMs),
    instanceAnswers,
    alerter,
    events,
    metrics,
    access,
    cluster,
    replication,
    startedAtMs: Date.now(),
    async close() {
      adoption.stop();
      replayer.stop();
      // Let a replay pass in flight record its outcome before the store closes.
      await Promise.race([replayer.idle(), Bun.sleep(2_000)]);
      await mirror?.syncOnce();
      await mirror?.close();
      await replication?.stop();
      await cluster?.stop();
      await wal.close();
      await pg?.close();
      local.close();
    },
  };
  metrics.watch(services);
  return services;
}

/**
 * The request with a URL every router reads alike. Elysia finds a path by searching for "/"
 * from a fixed offset of the URL (past "http://" and four characters of host), so a Host
 * of three characters or fewer hides the path's first segment; and Bun gives a request
 * whose Host is empty or malformed a URL without origin (the path alone), which `new URL`
 * refuses. Such a request is given `origin` instead of its Host; any other is unchanged.
 */
export function withRoutableUrl(request: Request, origin: string): Request {
  const url = request.url;
  const authorityStart = url.startsWith("http://") ? 7 : url.startsWith("https://") ? 8 : -1;
  if (authorityStart !== -1) {
    const pathStart = url.indexOf("/", authorityStart);
    // Four characters of host or more: what Elysia's offset assumes.
    if (pathStart === -1 || pathStart - authorityStart >= 4) return request;
  }
  const pathStart = authorityStart === -1 ? 0 : url.indexOf("/", authorityStart);
  const path = pathStart === -1 ? "/" : url.slice(pathStart);
  return new Request(origin + (path.startsWith("/") ? path : `/${path}`), request);
}

/** Bun's own body limit above MAX_BODY_MB (see Bun.serve below). */
const bodyBackstopBytes = 1024 * 1024 * 1024;

export interface RunningServer {
  url: string;
  port: number;
  services: Services;
  stop(): Promise<void>;
}

export async function startServer(config: Config, options: { log?: Logger } = {}): Promise<RunningServer> {
  const services = await buildServices(config, options.log);
  const { log, registry, replayer, wal, adoption, mirror, access } = services;

  // Tokens are known before the first request is taken.
  await access.refreshOnce();
  access.announce();

  if (mirror) await mirror.restoreIfEmpty();
  await registry.checkAll();
  for (const instance of registry.all) registry.updateCatchingUp(instance, wal.pendingCount(instance.name), 0, true);
  const { alerter } = services;
  /**
   * Auto repair (AUTO_REPAIR): a copy found diverged, lost with its disk, or different by the
   * consistency check is resynced from a current instance, in the background; a resync
   * already running for that copy is joined.
   */
  const repairSoon = (instance: Instance, record: CollectionRecord, why: string, lost = false) => {
    if (!config.autoRepair) return;
    // A lost copy is resynced even without a whole copy to serve: it may be rebuilt from a
    // marked one (Resyncer.lastResortSourceFor), and adoption reports it again at each pass.
    if (!lost && !services.resyncer.sourceFor(instance, record)) {
      // Nothing to copy from yet: the mark keeps the copy out of use, and the repair schedule
      // starts the resync once a source serves.
      void wal.markUnderRepair(instance.name, record.id, `${why}; waiting for a source to resync from`).catch((error) =>
        log.error("could not mark a copy for repair", { instance: instance.name, collection: record.name, error: String(error) }),
      );
      return;
    }
    log.warn("repair scheduled", { instance: instance.name, collection: record.name, why });
    void services.resyncer.resync(instance, record);
  };
  adoption.onLost = (record, instance) => {
    const why = "the instance no longer holds it (lost disk?)";
    // Marked before the resync: a lost copy stays out of use even if the resync fails before it copies anything.
    void wal
      .markUnderRepair(instance.name, record.id, why)
      .then(() => repairSoon(instance, record, why, true))
      .catch((error) => log.error("could not mark a copy for repair", { instance: instance.name, collection: record.name, error: String(error) }));
  };
  services.consistency.onDifference = (verdict) => {
    const record = services.collections.get(verdict.collection_id);
    if (!record) return;
    alerter.send({
      event: "consistency_difference",
      collection: record.name,
      message: `consistency check: copies of ${record.name} differ (${verdict.differences.join("; ")}); sample ids: ${verdict.sample_ids.slice(0, 5).join(", ")}`,
    });
    // The copy of the preferred write target (unless it diverged) is taken as the reference.
    const reference = verdict.instances
      .map((v) => registry.get(v.name)!)
      .filter((i) => !wal.isDiverged(i.name, record.id))
      .sort((a, b) => a.priority - b.priority)[0];
    for (const v of verdict.instances) if (v.name !== reference?.name) repairSoon(registry.get(v.name)!, record, "the consistency check found a difference");
  };
  services.resyncer.onFinished = (progress) => {
    alerter.send({
      event: "repair_finished",
      instance: progress.instance,
      collection: progress.collection_name,
      message:
        progress.state === "done"
          ? `resync of ${progress.collection_name} on ${progress.instance} from ${progress.source} finished: ${progress.records_copied} records copied${progress.verified === false ? ", but the copies still differ" : ""}`
          : `resync of ${progress.collection_name} on ${progress.instance} failed: ${progress.error}`,
    });
  };
  if (registry.all.some((i) => i.healthy)) await adoption.adoptOnce();
  // Replay starts with every write and whenever an instance comes back.
  wal.onAppend(() => replayer.kickAll());
  registry.onChange((instance, healthy) => {
    alerter.send({
      event: healthy ? "instance_up" : "instance_down",
      instance: instance.name,
      message: healthy ? `instance ${instance.name} is back` : instanceDownMessage(instance),
    });
    if (!healthy && registry.all.every((i) => !i.healthy)) {
      alerter.send({ event: "all_instances_down", message: "no Chroma instance answers; reads fail and writes are only logged" });
    }
    if (healthy) {
      alerter.resolve({ event: "all_instances_down", message: `instance ${instance.name} answers again; reads are served` });
      registry.updateCatchingUp(instance, wal.pendingCount(instance.name), 0, true);
      void replayer.kick(instance);
      void adoption.adoptOnce();
    }
  });
  replayer.onDiverged(({ instance, entry, error, first }) => {
    const record = entry.collectionId ? services.collections.get(entry.collectionId) : undefined;
    if (record && config.autoRepair) repairSoon(instance, record, "a replayed entry was refused");
    // One alert per collection and instance: later refusals only add to the count in /wal/status.
    if (!first) return;
    alerter.send({
      event: "collection_diverged",
      instance: instance.name,
      collection: record?.name ?? entry.partition,
      message:
        `instance ${instance.name} refused log entry ${entry.seq} (${entry.op}) of collection ${record?.name ?? entry.partition} that another instance applied: ${error.slice(0, 300)}. ` +
        `Reads of that collection avoid ${instance.name}; GET /wal/status lists diverged collections.`,
    });
  });
  wal.onDiskFull((state) => {
    // Told at the crossing (the log is checked before every write, but only a change is
    // reported); the alert schedule would see it only at its next pass.
    if (!state.full) {
      alerter.resolve({ event: "wal_disk_full", message: diskFullMessages(state).resolved });
      return;
    }
    log.error("the write-ahead log cannot grow; new writes are answered 507", { bytes: state.bytes, bytesMax: state.bytesMax, fileSystemFull: state.filesystem });
    alerter.send({ event: "wal_disk_full", message: diskFullMessages(state).full });
  });
  replayer.kickAll();
  const schedules = startSchedules(services);
  if (mirror) void mirror.syncOnce();

  const app = createApp(services);
  // Set once the port is known, before any request is served.
  let url = "";
  const instrumented = services.metrics.instrument(
    async (request: Request) => markOwnAnswer(await (declaredTooLarge(request, config.maxBodyBytes) ?? app.handle(request))),
    (request, status) => access.answered(request, status),
  );
  const server = Bun.serve({
    port: config.port,
    hostname: config.host,
    // Bun answers a body past its own limit with an empty 413 before any route sees it, so
    // its limit is far above MAX_BODY_MB: a body over MAX_BODY_MB is answered 413 in Chroma's
    // JSON shape here by its Content-Length (unread), or by the Chroma routes as it arrives
    // when it has none. Bun's limit stays the bound on a body without Content-Length sent to
    // chroma-lb's own admin routes.
    maxRequestBodySize: config.maxBodyBytes + bodyBackstopBytes,
    idleTimeout: Math.min(255, Math.ceil(config.requestTimeoutMs / 1000) + 10),
    // Every client request is counted and timed here, 404s and refusals included.
    // Every answer names who served it: an instance, or `none` for chroma-lb's own. The
    // request is made routable first, so that the one counted (with its principal) is the
    // one the app decided access for.
    fetch: (incoming: Request) => instrumented(withRoutableUrl(incoming, url)),
  });
  url = `http://${config.host === "0.0.0.0" ? "127.0.0.1" : config.host.includes(":") ? `[${config.host}]` : config.host}:${server.port}`;
  await services.cluster?.start(url);
  log.info("chroma-lb listening", {
    url,
    instances: registry.all.map((i) => ({ name: i.name, url: i.url, healthy: i.healthy })),
  });
  if (registry.all.length === 1) {
    log.warn("only one Chroma instance is configured: there is no failover; while it is down reads fail and writes are only logged", {
      instance: registry.all[0]!.name,
    });
  }

  let stopped = false;
  return {
    url,
    port: server.port!,
    services,
    async stop() {
      if (stopped) return;
      stopped = true;
      schedules.stop();
      await server.stop(true);
      replayer.stop();
      await services.close();
    },
  };
}
