/**
 * Logical collection ids and the UUID each instance knows them under. Kept in SQLite and
 * cached in memory (the hot path resolves a collection on every request).
 */
import { eq } from "drizzle-orm";
import type { LocalStore } from "../db";
import { collectionInstances, collections } from "../db/sqlite-schema";

export interface CollectionRecord {
  id: string;
  tenant: string;
  database: string;
  name: string;
  status: "active" | "deleted";
  createdAtMs: number;
  updatedAtMs: number;
  /** instance name -> that instance's UUID for this collection */
  instanceUuids: Map<string, string>;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return uuidPattern.test(value);
}

const nameKey = (tenant: string, database: string, name: string) => `${tenant}\u0000${database}\u0000${name}`;

export class CollectionStore {
  private readonly byId = new Map<string, CollectionRecord>();
  private readonly activeByName = new Map<string, CollectionRecord>();
  private readonly byInstanceUuid = new Map<string, CollectionRecord>();

  constructor(private readonly store: LocalStore) {
    this.reload();
  }

  /** Reads every mapping from SQLite into memory. */
  reload() {
    this.byId.clear();
    this.activeByName.clear();
    this.byInstanceUuid.clear();
    for (const row of this.store.db.select().from(collections).all()) {
      this.index({ ...row, status: row.status as CollectionRecord["status"], instanceUuids: new Map() });
    }
    for (const row of this.store.db.select().from(collectionInstances).all()) {
      const record = this.byId.get(row.collectionId);
      if (!record) continue;
      record.instanceUuids.set(row.instance, row.instanceUuid);
      this.byInstanceUuid.set(row.instanceUuid, record);
    }
  }

  private index(record: CollectionRecord) {
    this.byId.set(record.id, record);
    if (record.status === "active") this.activeByName.set(nameKey(record.tenant, record.database, record.name), record);
  }

  get(id: string): CollectionRecord | undefined {
    return this.byId.get(id);
  }

  byName(tenant: string, database: string, name: string): CollectionRecord | undefined {
    return this.activeByName.get(nameKey(tenant, database, name));
  }

  byUuid(uuid: string): CollectionRecord | undefined {
    return this.byInstanceUuid.get(uuid);
  }

  /**
   * Finds the active collection a client means by `ref`: chroma-lb's id, any instance's own
   * UUID, or the collection's name. Only collections of the given tenant and database match.
   */
  resolve(tenant: string, database: string, ref: string): CollectionRecord | undefined {
    const candidates = isUuid(ref) ? [this.byId.get(ref), this.byInstanceUuid.get(ref)] : [];
    candidates.push(this.byName(tenant, database, ref));
    return candidates.find((c) => c && c.status === "active" && c.tenant === tenant && c.database === database);
  }

  /** Logical id for an instance's UUID (for rewriting answers); the UUID itself when unmapped. */
  logicalIdFor(instanceUuid: string): string {
    return this.byInstanceUuid.get(instanceUuid)?.id ?? instanceUuid;
  }

  create(id: string, tenant: string, database: string, name: string): CollectionRecord {
    const now = Date.now();
    const record: CollectionRecord = {
      id,
      tenant,
      database,
      name,
      status: "active",
      createdAtMs: now,
      updatedAtMs: now,
      instanceUuids: new Map(),
    };
    this.store.db
      .insert(collections)
      .values({ id, tenant, database, name, status: "active", createdAtMs: now, updatedAtMs: now })
      .onConflictDoUpdate({ target: collections.id, set: { tenant, database, name, status: "active", updatedAtMs: now } })
      .run();
    this.index(record);
    return record;
  }

  setInstanceUuid(id: string, instance: string, instanceUuid: string) {
    const record = this.byId.get(id);
    if (!record) return;
    if (record.instanceUuids.get(instance) === instanceUuid) return;
    const now = Date.now();
    this.store.db
      .insert(collectionInstances)
      .values({ collectionId: id, instance, instanceUuid, updatedAtMs: now })
      .onConflictDoUpdate({
        target: [collectionInstances.collectionId, collectionInstances.instance],
        set: { instanceUuid, updatedAtMs: now },
      })
      .run();
    const previous = record.instanceUuids.get(instance);
    if (previous && this.byInstanceUuid.get(previous) === record) this.byInstanceUuid.delete(previous);
    record.instanceUuids.set(instance, instanceUuid);
    this.byInstanceUuid.set(instanceUuid, record);
  }

  rename(id: string, newName: string) {
    const record = this.byId.get(id);
    if (!record) return;
    const now = Date.now();
    this.store.db.update(collections).set({ name: newName, updatedAtMs: now }).where(eq(collections.id, id)).run();
    if (record.status === "active") this.activeByName.delete(nameKey(record.tenant, record.database, record.name));
    record.name = newName;
    record.updatedAtMs = now;
    this.index(record);
  }

  /** Marks a collection deleted. The row stays as a tombstone so the mirror and replay still know it. */
  markDeleted(id: string) {
    const record = this.byId.get(id);
    if (!record || record.status === "deleted") return;
    const now = Date.now();
    this.store.db.update(collections).set({ status: "deleted", updatedAtMs: now }).where(eq(collections.id, id)).run();
    this.activeByName.delete(nameKey(record.tenant, record.database, record.name));
    record.status = "deleted";
    record.updatedAtMs = now;
  }

  list(options: { includeDeleted?: boolean } = {}): CollectionRecord[] {
    return [...this.byId.values()].filter((r) => options.includeDeleted || r.status === "active");
  }

  /** Replaces everything with rows restored from the mirror. */
  restore(
    rows: Array<Omit<CollectionRecord, "instanceUuids">>,
    instanceRows: Array<{ collectionId: string; instance: string; instanceUuid: string; updatedAtMs: number }>,
  ) {
    this.store.db.transaction((tx) => {
      tx.delete(collectionInstances).run();
      tx.delete(collections).run();
      for (const row of rows) tx.insert(collections).values(row).run();
      for (const row of instanceRows) tx.insert(collectionInstances).values(row).run();
    });
    this.reload();
  }

  /** Rows changed since `sinceMs`, for the mirror. */
  changedSince(sinceMs: number) {
    const records = this.list({ includeDeleted: true }).filter((r) => r.updatedAtMs >= sinceMs);
    const instanceRows = this.store.db.select().from(collectionInstances).all().filter((r) => r.updatedAtMs >= sinceMs);
    return { records, instanceRows };
  }

  /** Marks every collection deleted (reset). */
  markAllDeleted() {
    for (const record of this.byId.values()) this.markDeleted(record.id);
  }
}
