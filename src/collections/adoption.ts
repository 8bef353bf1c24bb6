/**
 * Adoption: collections that exist on the instances but not in chroma-lb's mappings
 * (created before chroma-lb, or while it was away) are matched by name and mapped. An
 * adopted collection keeps the id its clients already hold: the primary's UUID.
 */
import type { Config } from "../config";
import type { Instance, InstanceRegistry } from "../instances/registry";
import type { Logger } from "../observability/log";
import type { WriteAheadLog } from "../wal/log";
import type { FillResult } from "./fill";
import type { CollectionRecord, CollectionStore } from "./store";

export interface AdoptionReport {
  adopted: string[];
  linked: number;
  /** Collections some serving instance lacks, with no pending create for it. */
  incomplete: Array<{ collection: string; missingOn: string[] }>;
  filled: FillResult[];
  scannedInstances: string[];
}

interface Found {
  tenant: string;
  database: string;
  name: string;
  uuid: string;
}

const pageSize = 100;
/** Bounds the tenants remembered from requests (any name a client sends would otherwise be kept). */
const requestedTenantsMax = 1000;

/** Creates a collection on the instances that lack it and copies its records (see fill.ts). */
export type Filler = (record: CollectionRecord, source: Instance, targets: Instance[]) => Promise<FillResult>;

/** A pass skipped because the cluster's mappings could not be read is tried again after this long. */
const retryAfterSkipMs = 2_000;

export class Adoption {
  private running: Promise<AdoptionReport> | null = null;
  /** The pass that starts once the running one ends (see adoptOnce). */
  private next: Promise<AdoptionReport> | null = null;
  private lastRunMs = 0;
  lastReport: AdoptionReport | null = null;
  /** Tenants named in requests, scanned besides default_tenant and those of known collections. */
  private readonly requestedTenants = new Set<string>();
  /** Set by the server; without it incomplete collections are only reported. */
  filler: Filler | null = null;
  /**
   * Called for a collection an instance held (chroma-lb knows its UUID there) and no longer
   * does, under any name: its disk was lost or wiped. Set by the server (repair).
   */
  onLost: ((record: CollectionRecord, instance: Instance) => void) | null = null;
  /**
   * Several nodes: reads the mappings other nodes made (false when it could not apply them
   * now). A collection another node creates is mapped in Postgres before any instance holds
   * it, so mappings read after the listing know every collection made through chroma-lb that
   * the listing found; only the rest are adopted.
   */
  refreshMappings: (() => Promise<boolean>) | null = null;

  constructor(
    private readonly collections: CollectionStore,
    private readonly registry: InstanceRegistry,
    private readonly wal: WriteAheadLog,
    private readonly config: Pick<Config, "requestTimeoutMs">,
    private readonly log: Logger,
  ) {}

  /**
   * Runs a pass unless one ran in the last second (an unknown name in a request calls this).
   * Chroma cannot list tenants, so the request's tenant is remembered and scanned from then
   * on; a tenant not scanned before gets a pass at once.
   */
  async adoptSoon(tenant?: string): Promise<void> {
    const newTenant = tenant !== undefined && !this.requestedTenants.has(tenant) && this.requestedTenants.size < requestedTenantsMax;
    if (newTenant) this.requestedTenants.add(tenant);
    if (this.running) {
      // A pass already running may have started before the tenant was added.
      await this.running;
      if (!newTenant) return;
    } else if (!newTenant && Date.now() - this.lastRunMs < 1000) return;
    await this.adoptOnce();
  }

  /**
   * A pass that starts after this call. A pass already running may have listed the instances
   * before the caller's reason to ask (a collection made on an instance, an instance back),
   * so it is not shared: one more pass follows it, shared by every caller meanwhile.
   */
  adoptOnce(): Promise<AdoptionReport> {
    if (this.next) return this.next;
    if (!this.running) return this.start();
    const next = this.running
      .catch(() => undefined)
      .then(() => {
        this.next = null;
        return this.start();
      });
    this.next = next;
    return next;
  }

  private start(): Promise<AdoptionReport> {
    const running = this.scan().finally(() => {
      this.running = null;
      this.lastRunMs = Date.now();
    });
    this.running = running;
    return running;
  }

  private async listAll(instanceName: string, path: string): Promise<unknown[] | null> {
    const instance = this.registry.get(instanceName)!;
    const out: unknown[] = [];
    for (let offset = 0; offset < 1_000_000; offset += pageSize) {
      const result = await instance.client.json("GET", `${path}?limit=${pageSize}&offset=${offset}`, undefined, this.config.requestTimeoutMs);
      const page = result.json;
      if (!result.ok || result.status !== 200 || !Array.isArray(page)) return result.ok && result.status === 404 ? out : null;
      out.push(...page);
      if (page.length < pageSize) break;
    }
    return out;
  }

  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  /** No pass is started from now on (a retry already planned is dropped). */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private retrySoon(): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.stopped) void this.adoptOnce().catch(() => {});
    }, retryAfterSkipMs);
    this.retryTimer.unref?.();
  }

  private async scan(): Promise<AdoptionReport> {
    const report: AdoptionReport = { adopted: [], linked: 0, incomplete: [], filled: [], scannedInstances: [] };
    const tenants = new Set(["default_tenant", ...this.requestedTenants, ...this.collections.list({ includeDeleted: true }).map((c) => c.tenant)]);
    const foundBy = new Map<string, Map<string, Found>>();
    // The UUIDs each instance was known to hold when its listing began. One learnt later (a
    // create replayed to it while the pass listed) may be missing from the listing without
    // the instance having lost anything.
    const knownAtListing = new Map<string, Set<string>>();
    for (const instance of this.registry.all.filter((i) => i.healthy)) {
      knownAtListing.set(
        instance.name,
        new Set(this.collections.list({ includeDeleted: true }).flatMap((c) => c.instanceUuids.get(instance.name) ?? [])),
      );
      const found = new Map<string, Found>();
      let complete = true;
      for (const tenant of tenants) {
        const databases = await this.listAll(instance.name, `/api/v2/tenants/${encodeURIComponent(tenant)}/databases`);
        if (databases === null) {
          complete = false;
          continue;
        }
        for (const db of databases as Array<{ name: string }>) {
          const list = await this.listAll(
            instance.name,
            `/api/v2/tenants/${encodeURIComponent(tenant)}/databases/${encodeURIComponent(db.name)}/collections`,
          );
          if (list === null) {
            complete = false;
            continue;
          }
          for (const c of list as Array<{ id: string; name: string }>) {
            found.set(`${tenant}\u0000${db.name}\u0000${c.name}`, { tenant, database: db.name, name: c.name, uuid: c.id });
          }
        }
      }
      if (complete) {
        foundBy.set(instance.name, found);
        report.scannedInstances.push(instance.name);
      }
    }

    const keys = new Set([...foundBy.values()].flatMap((m) => [...m.keys()]));
    // Several nodes: what the instances hold is judged against the cluster's mappings as
    // they are now, not this node's memory, which learns of a collection created, dropped
    // or remade through another node only at its next reload. Judged from memory, a copy
    // dropped through another node looked lost (and was rebuilt, the dropped collection
    // made again), and a name remade there had the new collection's copies linked to the
    // dropped one. When the mappings cannot be read, nothing is adopted, linked or
    // reported lost in this pass.
    const current = this.refreshMappings ? await this.refreshMappings().catch(() => false) : true;
    if (!current) {
      // A lost copy waits for this pass (a disk wiped while Postgres was cut): tried again soon, not at the next scheduled one.
      this.retrySoon();
      this.lastReport = report;
      return report;
    }
    const deletedUuids = new Set(
      this.collections
        .list({ includeDeleted: true })
        .filter((c) => c.status === "deleted")
        .flatMap((c) => [...c.instanceUuids.values()]),
    );
    for (const key of keys) {
      const perInstance = [...foundBy.entries()]
        .map(([instance, found]) => ({ instance, found: found.get(key) }))
        .filter((x): x is { instance: string; found: Found } => x.found !== undefined);
      const sample = perInstance[0]!.found;
      let record = this.collections.byName(sample.tenant, sample.database, sample.name);
      if (!record) {
        // A known collection under a name that is no longer its own: this instance has not
        // applied its rename (or delete) yet. Adopting it would copy stale records into a new collection.
        if (perInstance.some((p) => this.collections.byUuid(p.found.uuid))) continue;
        // A collection deleted through chroma-lb whose delete has not reached this instance yet.
        if (perInstance.some((p) => deletedUuids.has(p.found.uuid))) continue;
        const preferred = [...perInstance].sort(
          (a, b) => this.registry.get(a.instance)!.priority - this.registry.get(b.instance)!.priority,
        )[0]!;
        if (this.collections.get(preferred.found.uuid)) continue;
        record = await this.collections.create(preferred.found.uuid, sample.tenant, sample.database, sample.name);
        report.adopted.push(`${sample.tenant}/${sample.database}/${sample.name}`);
        this.log.info("collection adopted", { collection: sample.name, tenant: sample.tenant, database: sample.database, id: record.id });
      }
      for (const { instance, found } of perInstance) {
        // That UUID belongs to another collection whose rename this instance has not applied yet.
        const owner = this.collections.byUuid(found.uuid);
        if (owner && owner !== record) continue;
        if (record.instanceUuids.get(instance) !== found.uuid) {
          await this.collections.setInstanceUuid(record.id, instance, found.uuid);
          report.linked += 1;
        }
      }
    }

    for (const record of this.collections.list()) {
      for (const [instance, found] of foundBy) {
        const uuid = record.instanceUuids.get(instance);
        if (uuid && this.onLost && knownAtListing.get(instance)?.has(uuid) && ![...found.values()].some((f) => f.uuid === uuid)) {
          this.log.warn("an instance no longer holds a collection it had", { instance, collection: record.name, uuid });
          this.onLost(record, this.registry.get(instance)!);
        }
      }
      // Healthy now, not only when listed: an instance taken out since (an outage, or a
      // simulated one) is not written to; the pass after its return fills it.
      const missingOn = [...foundBy.keys()].filter(
        (instance) => !record.instanceUuids.has(instance) && this.registry.get(instance)!.healthy && this.wal.isCaughtUp(instance, record.id),
      );
      if (!missingOn.length) continue;
      const label = `${record.tenant}/${record.database}/${record.name}`;
      const source = this.registry.all.find((i) => i.healthy && record.instanceUuids.has(i.name) && foundBy.has(i.name));
      if (this.filler && source) {
        const filled = await this.filler(record, source, missingOn.map((name) => this.registry.get(name)!));
        report.filled.push(filled);
        const stillMissing = missingOn.filter((name) => !record.instanceUuids.has(name));
        if (stillMissing.length) report.incomplete.push({ collection: label, missingOn: stillMissing });
      } else {
        report.incomplete.push({ collection: label, missingOn });
      }
    }
    this.lastReport = report;
    return report;
  }

  /** Mapped collections some instance lacks (computed by the last pass). */
  incompleteIds(): Set<string> {
    return new Set(this.lastReport?.incomplete.map((i) => i.collection) ?? []);
  }
}
