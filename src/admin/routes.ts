/**
 * chroma-lb's own endpoints: health, status, the log, mappings and instance control, on
 * the paths and with the fields operators already use (see README "Endpoints").
 * Read-only figures are public; everything that changes state, and the mappings, needs an
 * admin credential (decided for every request in createApp, see auth/access.ts).
 */
import { Elysia, t } from "elysia";
import { Protection } from "../collections/protection";
import { conflict, forbidden, LbError, notFound } from "../errors";
import { RecentEventsModel } from "../observability/events";
import { ErrorModel } from "../proxy/models";
import { adminDetail, AnyObject, SuccessModel } from "./docs";
import { adminViews, iso, mb, type AdminDeps } from "./views";

export type { AdminDeps };

export function adminRoutes(deps: AdminDeps) {
  const { config, wal, registry, collections, replayer, sizer } = deps;
  const protection = new Protection(deps);

  // Decided when the request arrives (createApp's onRequest); checked again here so that no
  // admin route can be reached by a path the rules would read otherwise.
  const requireAdmin = ({ request }: { request: Request }) => deps.access.check(request, new URL(request.url).pathname) ?? undefined;

  const { instanceView, healthyCount, storeCounts, walStatus, metricsJson, mappingView, clusterView } = adminViews(deps);

  /**
   * Runs an operation once in the cluster (resync, consistency check): on another node when
   * it runs there already (answered 409 with that node). With one node, simply runs it.
   */
  const onceInCluster = async <T>(kind: string, scope: string, progress: () => unknown, fn: () => Promise<T>): Promise<T> => {
    if (!deps.cluster) return fn();
    const outcome = await clusterCall(() => deps.cluster!.jobs.run(kind, scope, progress, fn));
    if (!outcome.ran) throw conflict(`This ${kind} (${scope}) already runs on node ${outcome.runningOn} since ${outcome.startedAt}; GET /status on any node shows its progress`);
    return outcome.result;
  };

  /** A switch or claim that Postgres did not take is not held for the cluster: 503, the caller retries. */
  const clusterCall = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (error) {
      if (error instanceof LbError) throw error;
      throw new LbError(503, "ServiceUnavailableError", `The cluster's Postgres did not take the change (${error instanceof Error ? error.message : String(error)}); nothing changed, retry`);
    }
  };

  const findInstance = (name: string) => {
    const instance = registry.get(name);
    if (!instance) throw notFound(`No instance named ${name}; GET /admin/instances lists them`);
    return instance;
  };

  // Read-only figures are open to anyone, whether the data API needs a token or not.
  const statusTag = { tags: ["chroma-lb status"], security: [] };

  return new Elysia({ name: "admin" })
    .get(
      "/health",
      async ({ set }) => {
        const healthy = healthyCount();
        set.status = healthy > 0 ? 200 : 503;
        return {
          status: healthy === registry.all.length ? "healthy" : healthy > 0 ? "degraded" : "unhealthy",
          healthy_instances: `${healthy}/${registry.all.length}`,
          service: "chroma-lb",
          architecture: "write-ahead log with ordered replay",
          pending_writes: (await storeCounts()).pendingEntries,
        };
      },
      { detail: { summary: "200 while any instance answers, else 503", ...statusTag } },
    )
    .get(
      "/status",
      async () => ({
        service: "chroma-lb",
        architecture: "write-ahead log with ordered replay",
        // `open`: the data API needs no token (AUTH_REQUIRED unset and no token made yet).
        auth: deps.access.open ? "open" : "required",
        uptime_seconds: Math.round((Date.now() - deps.startedAtMs) / 1000),
        healthy_instances: healthyCount(),
        total_instances: registry.all.length,
        write_target: registry.all.find((i) => i.serving && !i.catchingUp)?.name ?? registry.all.find((i) => i.serving)?.name ?? null,
        high_volume_config: {
          max_memory_mb: config.walMaxMemoryMb,
          max_workers: config.walMaxWorkers,
          default_batch_size: config.walDefaultBatchSize,
          max_batch_size: config.walMaxBatchSize,
          current_memory_mb: mb(sizer.lastSample.rssBytes),
          peak_memory_mb: mb(sizer.peakRssBytes),
        },
        unified_wal: {
          pending_writes: (await storeCounts()).pendingEntries,
          is_syncing: replayer.isReplaying(),
          sync_interval_seconds: config.walSyncIntervalMs / 1000,
          head_position: wal.headSeq(),
          disk_bytes: wal.diskBytes(),
          disk_max_bytes: config.walMaxDiskBytes,
        },
        inflight_body_bytes: deps.inflight.bytes,
        inflight_body_max_bytes: deps.inflight.bytesMax,
        performance_stats: {
          batches: replayer.stats.batches,
          memory_pressure_events: sizer.memoryPressureEvents,
          adaptive_batch_reductions: sizer.adaptiveBatchReductions,
          successful_syncs: replayer.stats.successfulSyncs,
          failed_syncs: replayer.stats.failedSyncs,
          entries_replayed: replayer.stats.entriesApplied,
          sync_cycles: replayer.stats.syncCycles,
          avg_sync_throughput: replayer.stats.avgThroughputEntriesPerSecond,
          replay_lag_ms: replayer.stats.lagPercentiles(),
        },
        mirror: deps.mirror ? deps.mirror.status : { configured: false },
        consistency: {
          progress: deps.consistency.progress,
          last_check: deps.consistency.last
            ? {
                finished_at: deps.consistency.last.finished_at,
                collections_checked: deps.consistency.last.collections_checked,
                collections_differing: deps.consistency.last.collections_differing,
              }
            : null,
          interval_seconds: config.consistencyCheckIntervalMs / 1000,
          auto_repair: config.autoRepair,
        },
        resync: { active: deps.resyncer.active(), recent: deps.resyncer.history.slice(-10) },
        instances: registry.all.map(instanceView),
        ...clusterView(),
      }),
      { detail: { summary: "Instances, roles, lag and replay figures", ...statusTag } },
    )
    .get(
      "/metrics",
      ({ set, request }) => {
        // Prometheus asks for text (its Accept never names JSON); the old balancer's scripts ask for JSON.
        // Other query parameters (a scraper's `params`) are ignored, as before.
        const format = new URL(request.url).searchParams.get("format");
        if (format === "json" || (request.headers.get("accept") ?? "").toLowerCase().includes("application/json")) return metricsJson();
        set.headers["content-type"] = deps.metrics.contentType;
        return deps.metrics.render();
      },
      {
        detail: { summary: "Prometheus metrics (text format 0.0.4); with `Accept: application/json` (or `?format=json`), the main figures as JSON (memory in MB)", ...statusTag },
      },
    )
    .get("/events", () => ({ events: deps.events.list() }), {
      response: { 200: RecentEventsModel },
      detail: { summary: "Recent alerts, their resolutions and instance health transitions, newest last (at most 200)", ...statusTag },
    })
    .get("/wal/status", () => walStatus(), { detail: { summary: "The log: head, per-instance positions and lag, batches, memory", ...statusTag } })
    .group("", (app) =>
      app
        .onBeforeHandle(requireAdmin)
        .post(
          "/wal/cleanup",
          async ({ body }) => {
            const maxAgeMs = body?.max_age_hours !== undefined ? body.max_age_hours * 3600 * 1000 : config.walRetentionMs;
            const result = await wal.cleanup(maxAgeMs);
            deps.log.info("log cleanup", { deletedEntries: result.deletedEntries, maxAgeMs });
            // After a full file system, writes resume as soon as the room is back, not at the next check.
            if (wal.storageIsFull) await wal.recoverStorageOnce();
            // `cleaned` is the old balancer's name for the same count.
            return { deleted_entries: result.deletedEntries, reset_entries: 0, cleaned: result.deletedEntries };
          },
          {
            body: t.Optional(t.Object({ max_age_hours: t.Optional(t.Number({ minimum: 0 })) })),
            detail: adminDetail("Remove entries applied everywhere and older than max_age_hours (default WAL_RETENTION_HOURS)"),
          },
        )
        .post(
          "/admin/wal/:seq/skip",
          async ({ params, body }) => {
            const instance = findInstance(body.instance);
            const skipped = await wal.skip(instance.name, params.seq);
            if (!skipped) throw notFound(`Instance ${instance.name} does not owe entry ${params.seq}`);
            deps.log.warn("operator skipped a log entry", { instance: instance.name, seq: params.seq });
            void replayer.kick(instance);
            return { success: true, instance: instance.name, skipped_position: params.seq };
          },
          {
            params: t.Object({ seq: t.Numeric() }),
            body: t.Object({ instance: t.String() }),
            detail: adminDetail("Give up on one stuck entry for one instance (it will never be applied there)", { ok: { 200: SuccessModel }, notFound: "No such instance, or it does not owe that entry" }),
          },
        )
        .get(
          "/collection/mappings",
          () => {
            const mappings = collections.list().map(mappingView);
            return { mappings, count: mappings.length };
          },
          { detail: adminDetail("Collection ids and each instance's UUID") },
        )
        .get(
          "/admin/collection_mappings",
          () => {
            const primary = registry.all[0]?.name ?? "";
            const replica = registry.all[1]?.name ?? "";
            const list = collections.list().map((c) => ({
              collection_name: c.name,
              primary_uuid: c.instanceUuids.get(primary) ?? null,
              replica_uuid: c.instanceUuids.get(replica) ?? null,
              created_at: iso(c.createdAtMs),
              updated_at: iso(c.updatedAtMs),
              collection_id: c.id,
              tenant: c.tenant,
              database: c.database,
            }));
            return { collection_mappings: list, total_mappings: list.length };
          },
          { detail: adminDetail("The mappings in the old balancer's shape (full UUIDs); GET /collection/mappings has more") },
        )
        .delete(
          "/collection/mappings/:name",
          async ({ params, query }) => {
            const tenant = query.tenant ?? "default_tenant";
            const database = query.database ?? "default_database";
            if (config.protectedCollections.includes(params.name)) {
              throw forbidden(`The mapping of ${params.name} is protected (PROTECTED_COLLECTIONS)`);
            }
            const record = collections.byName(tenant, database, params.name);
            if (!record) throw notFound(`No mapping for collection ${params.name} in ${tenant}/${database}`);
            await collections.markDeleted(record.id);
            deps.log.warn("mapping removed by operator", { collection: params.name, id: record.id });
            return { success: true, collection_name: params.name, collection_id: record.id, message: "Mapping removed; the collection itself is untouched on every instance" };
          },
          {
            query: t.Object({ tenant: t.Optional(t.String()), database: t.Optional(t.String()) }),
            detail: adminDetail("Remove one mapping (the collection stays on the instances)", { ok: { 200: SuccessModel }, notFound: "No mapping of that name" }),
          },
        )
        .post(
          "/admin/create_mapping",
          async ({ body }) => {
            const tenant = body.tenant ?? "default_tenant";
            const database = body.database ?? "default_database";
            const primary = registry.all[0]!;
            const replica = registry.all[1];
            if (!body.primary_id && !body.replica_id) throw new LbError(400, "InvalidArgumentError", "Give primary_id, replica_id or both");
            const uuids = new Map<string, string>();
            if (body.primary_id) uuids.set(primary.name, body.primary_id);
            if (body.replica_id && replica) uuids.set(replica.name, body.replica_id);
            await protection.refuseMapping(tenant, database, body.collection_name, uuids);
            let record = collections.byName(tenant, database, body.collection_name);
            if (!record) {
              const id = body.primary_id ?? body.replica_id!;
              if (collections.get(id)?.status === "active") throw conflict(`Id ${id} already belongs to another collection`);
              record = await collections.create(id, tenant, database, body.collection_name);
            }
            if (body.primary_id) await collections.setInstanceUuid(record.id, primary.name, body.primary_id);
            if (body.replica_id && replica) await collections.setInstanceUuid(record.id, replica.name, body.replica_id);
            deps.log.warn("mapping set by operator", { collection: body.collection_name, id: record.id });
            return {
              success: true,
              collection_name: record.name,
              collection_id: record.id,
              primary_id: record.instanceUuids.get(primary.name) ?? null,
              replica_id: replica ? (record.instanceUuids.get(replica.name) ?? null) : null,
              message: "Mapping saved",
            };
          },
          {
            body: t.Object({
              collection_name: t.String({ minLength: 1 }),
              primary_id: t.Optional(t.String({ format: "uuid" })),
              replica_id: t.Optional(t.String({ format: "uuid" })),
              tenant: t.Optional(t.String()),
              database: t.Optional(t.String()),
            }),
            detail: adminDetail("Create or repair a mapping; an omitted id keeps its old value", { ok: { 200: SuccessModel } }),
          },
        )
        .post("/admin/adopt", () => deps.adoption.adoptOnce(), { detail: adminDetail("Match collections on the instances to mappings now") })
        .get("/admin/consistency", ({ query }) => onceInCluster("consistency", query.collection ?? "*", () => deps.consistency.progress, () => deps.consistency.checkOnce(query.collection)), {
          query: t.Object({ collection: t.Optional(t.String({ description: "a collection name or id; all collections when absent" })) }),
          detail: adminDetail(
            "Compare the instances' copies, collection by collection, at a log position both have applied (progress in GET /status while it runs)",
          ),
        })
        .post(
          "/admin/instances/:name/resync",
          async ({ params, body, set }) => {
            const instance = findInstance(params.name);
            const collection = body?.collection;
            if (collection !== undefined && !collections.list().some((c) => c.id === collection || c.name === collection)) {
              throw notFound(`No collection ${collection}; GET /collection/mappings lists them`);
            }
            const run = onceInCluster("resync", `${instance.name}/${collection ?? "*"}`, () => deps.resyncer.active(), () => deps.resyncer.resyncInstance(instance, collection));
            if (body?.wait === false) {
              // Not awaited: a failure later is in /status, never an unhandled rejection. A
              // refusal (another node runs it, Postgres did not take the claim) comes at once
              // and is answered as such.
              const early = await Promise.race([run.then(() => null, (error: unknown) => ({ error })), Bun.sleep(deps.cluster ? 200 : 0).then(() => null)]);
              if (early) throw early.error;
              set.status = 202;
              return { instance: instance.name, started: true, progress: "GET /status shows resync progress" };
            }
            const results = await run;
            return { instance: instance.name, collections: results, ok: results.every((r) => r.state === "done") };
          },
          {
            body: t.Optional(
              t.Object({
                collection: t.Optional(t.String({ description: "a collection name or id; every collection when absent" })),
                wait: t.Optional(t.Boolean({ description: "false answers 202 at once; the default waits for the copy" })),
              }),
            ),
            detail: adminDetail("Rebuild an instance's copy of one or every collection from a current instance, while writes go on", { ok: { 200: AnyObject, 202: AnyObject }, notFound: "No such instance or collection" }),
          },
        )
        .get(
          "/admin/instances",
          () => ({
            instances: registry.all.map(instanceView),
            healthy_count: healthyCount(),
            total_count: registry.all.length,
          }),
          { detail: adminDetail("Every instance with health, role, state and lag") },
        )
        .post(
          "/admin/instances/:name/health",
          async ({ params, body }) => {
            const instance = findInstance(params.name);
            const original = instance.healthy;
            // Only an outage can be simulated. `{"healthy": true}` (the old balancer's way to end
            // a simulated outage, with or without a duration, or `clear`) ends any simulation
            // and hands the instance back to the checker: what probes see is then its health,
            // so no call can make a dead instance look alive.
            if (body.healthy || body.clear) {
              if (deps.cluster) await clusterCall(() => deps.cluster!.switches.endSimulation(instance.name));
              registry.clearSimulation(instance);
              if (instance.healthy) void replayer.kick(instance);
              return {
                success: true,
                instance: instance.name,
                health_set_to: instance.healthy,
                original_health: original,
                permanent: true,
                simulation_ended: true,
                message: instance.healthy
                  ? "No simulation holds the instance; its health is what the checker sees (healthy)"
                  : "No simulation holds the instance; its health is what the checker sees (down: it does not answer its heartbeat)",
              };
            }
            const durationMs = body.duration_seconds === undefined || body.duration_seconds === null ? null : body.duration_seconds * 1000;
            if (deps.cluster) await clusterCall(() => deps.cluster!.switches.simulate(instance.name, durationMs));
            else registry.simulateOutage(instance, durationMs);
            return {
              success: true,
              instance: instance.name,
              health_set_to: false,
              original_health: original,
              ...(durationMs === null ? { permanent: true } : { will_restore_in_seconds: body.duration_seconds }),
            };
          },
          {
            body: t.Object({
              healthy: t.Boolean({ description: "false simulates an outage; true ends any simulation (the checker decides again)" }),
              duration_seconds: t.Optional(t.Union([t.Number({ minimum: 0 }), t.Null()], { description: "how long a simulated outage holds; until ended when absent" })),
              clear: t.Optional(t.Boolean({ description: "end a simulation now (as healthy: true does)" })),
            }),
            detail: adminDetail(
              "Simulate an outage for a while or until ended; {healthy: true} ends it and hands the instance back to the checker (nothing can make a dead instance look alive)",
              { ok: { 200: SuccessModel }, notFound: "No such instance" },
            ),
          },
        )
        .post(
          "/admin/instances/:name/maintenance",
          async ({ params, body }) => {
            const instance = findInstance(params.name);
            if (deps.cluster) await clusterCall(() => deps.cluster!.switches.setMaintenance(instance.name, body.enabled));
            instance.maintenance = body.enabled;
            deps.log.warn(body.enabled ? "instance in maintenance" : "instance back from maintenance", { instance: instance.name });
            let drained = true;
            if (body.enabled) {
              // New requests no longer reach it; wait for those in flight (replay included) to end.
              const deadline = Date.now() + config.requestTimeoutMs;
              while (instance.client.inFlight > 0 && Date.now() < deadline) await Bun.sleep(10);
              drained = instance.client.inFlight === 0;
            } else {
              void replayer.kick(instance);
            }
            return { success: true, instance: instance.name, maintenance: instance.maintenance, drained, in_flight: instance.client.inFlight };
          },
          {
            body: t.Object({ enabled: t.Boolean() }),
            detail: adminDetail("Drain an instance for maintenance (it still receives replayed writes), or return it", { ok: { 200: SuccessModel }, notFound: "No such instance" }),
          },
        ),
    )
    .model({ error: ErrorModel });
}
