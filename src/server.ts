/**
 * Wires chroma-lb together: stores, log, instances, replay, schedules, HTTP server.
 * `startServer` is what `src/index.ts` and the in-process test harness call.
 */
import { createApp } from "./app";
import { Adoption } from "./collections/adoption";
import { fillCollection } from "./collections/fill";
import { Mirror } from "./collections/mirror";
import { CollectionStore } from "./collections/store";
import type { Config } from "./config";
import { openLocalStore } from "./db";
import { InstanceRegistry } from "./instances/registry";
import { createAlerter } from "./observability/alerts";
import { createLogger, type Logger } from "./observability/log";
import { Replayer } from "./replay/replayer";
import { BatchSizer } from "./replay/sizing";
import { startSchedules } from "./schedules";
import { KeyedMutex } from "./util/mutex";
import type { Services } from "./services";
import { WriteAheadLog } from "./wal/log";
import { WritePath } from "./writes/pipeline";

export type { Services };

/** Opens the stores and builds every service; starts nothing in the background. */
export async function buildServices(config: Config, log: Logger = createLogger(config.logLevel)): Promise<Services> {
  const local = openLocalStore(config.dataDir);
  const collections = new CollectionStore(local);
  const registry = new InstanceRegistry(config.instances, config, log);
  const wal = new WriteAheadLog(local, config.instances.map((i) => i.name));
  const recovered = wal.recoverUnanswered();
  if (recovered) log.warn("log entries left unanswered by a crash will be replayed everywhere", { entries: recovered });
  const sizer = new BatchSizer(config.walDefaultBatchSize, config.walMaxBatchSize, config.walMaxMemoryMb * 1024 * 1024);
  sizer.observe(BatchSizer.sampleProcess());
  const replayer = new Replayer(wal, collections, registry, sizer, config, log);
  const adoption = new Adoption(collections, registry, wal, config, log);
  const mirror = config.databaseUrl ? new Mirror(config.databaseUrl, local, collections, log) : null;
  const writeLocks = new KeyedMutex();
  adoption.filler = (record, source, targets) =>
    writeLocks.run(record.id, () => fillCollection(record, source, targets, { collections, wal, config, log }));
  const writes = new WritePath({ config, log, wal, registry, replayer, writeLocks });
  return {
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
    startedAtMs: Date.now(),
    async close() {
      replayer.stop();
      // Let a replay pass in flight record its outcome before the store closes.
      await Promise.race([replayer.idle(), Bun.sleep(2_000)]);
      await mirror?.syncOnce();
      await mirror?.close();
      local.close();
    },
  };
}

export interface RunningServer {
  url: string;
  port: number;
  services: Services;
  stop(): Promise<void>;
}

export async function startServer(config: Config, options: { log?: Logger } = {}): Promise<RunningServer> {
  const services = await buildServices(config, options.log);
  const { log, registry, replayer, wal, adoption, mirror } = services;

  if (mirror) await mirror.restoreIfEmpty();
  await registry.checkAll();
  for (const instance of registry.all) registry.updateCatchingUp(instance, wal.pendingCount(instance.name), 0, true);
  if (registry.all.some((i) => i.healthy)) await adoption.adoptOnce();
  // Replay starts with every write and whenever an instance comes back.
  wal.onAppend(() => replayer.kickAll());
  const alerter = createAlerter(config.alertWebhookUrl, log);
  registry.onChange((instance, healthy) => {
    alerter.send({
      event: healthy ? "instance_up" : "instance_down",
      instance: instance.name,
      message: healthy
        ? `instance ${instance.name} is back`
        : `instance ${instance.name} is down: ${instance.simulated ? "simulated outage" : (instance.lastError ?? "unknown reason")}`,
    });
    if (!healthy && registry.all.every((i) => !i.healthy)) {
      alerter.send({ event: "all_instances_down", message: "no Chroma instance answers; reads fail and writes are only logged" });
    }
    if (healthy) {
      registry.updateCatchingUp(instance, wal.pendingCount(instance.name), 0, true);
      void replayer.kick(instance);
      void adoption.adoptOnce();
    }
  });
  replayer.onDiverged(({ instance, entry, error, first }) => {
    // One alert per collection and instance: later refusals only add to the count in /wal/status.
    if (!first) return;
    const record = entry.collectionId ? services.collections.get(entry.collectionId) : undefined;
    alerter.send({
      event: "collection_diverged",
      instance: instance.name,
      collection: record?.name ?? entry.partition,
      message:
        `instance ${instance.name} refused log entry ${entry.seq} (${entry.op}) of collection ${record?.name ?? entry.partition} that another instance applied: ${error.slice(0, 300)}. ` +
        `Reads of that collection avoid ${instance.name}; GET /wal/status lists diverged collections.`,
    });
  });
  replayer.kickAll();
  const schedules = startSchedules(services);
  if (mirror) void mirror.syncOnce();

  const app = createApp(services);
  const server = Bun.serve({
    port: config.port,
    hostname: config.host,
    maxRequestBodySize: config.maxBodyBytes,
    idleTimeout: Math.min(255, Math.ceil(config.requestTimeoutMs / 1000) + 10),
    fetch: (request) => app.handle(request),
  });
  const url = `http://${config.host === "0.0.0.0" ? "127.0.0.1" : config.host}:${server.port}`;
  log.info("chroma-lb listening", {
    url,
    instances: registry.all.map((i) => ({ name: i.name, url: i.url, healthy: i.healthy })),
  });

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
