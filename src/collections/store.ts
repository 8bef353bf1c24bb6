/**
 * Logical collection ids and the UUID each instance knows them under: kept by a
 * MappingStore (SQLite here, see mappings-sqlite.ts) and held in memory by CollectionStore,
 * which the hot path reads synchronously (it resolves a collection on every request). A
 * change updates memory at once and resolves once the store has it.
 */
import type { LocalStore } from "../db";
import { SqliteMappingStore } from "./mappings-sqlite";

/** One logical collection as a store keeps it. */
export type CollectionRow = Omit<CollectionRecord, "instanceUuids">;
/** The UUID one instance knows a collection under. */
export interface InstanceUuidRow {
  collectionId: string;
  instance: string;
  instanceUuid: string;
  updatedAtMs: number;
}

/** Where the mappings live. Every call is one transaction. */
export interface MappingStore {
  /** Whether other chroma-lb nodes write these mappings too (Postgres), so that one may hold a collection this node has not read yet. */
  readonly shared: boolean;
  load(): Promise<{ collections: CollectionRow[]; instanceUuids: InstanceUuidRow[] }>;
  /** Inserts the collection, or makes the existing row with its id active under these names. */
  upsertCollection(row: CollectionRow): Promise<void>;
  updateCollection(id: string, change: Partial<Pick<CollectionRow, "name" | "status">> & { updatedAtMs: number }): Promise<void>;
  setInstanceUuid(row: InstanceUuidRow): Promise<void>;
  /** Replaces every mapping (restore from the mirror). */
  replaceAll(collections: CollectionRow[], instanceUuids: InstanceUuidRow[]): Promise<void>;
}

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

const uuidKey = (id: string, instance: string) => `${id}\u0000${instance}`;
const done = Promise.resolve();
const nameKey = (tenant: string, database: string, name: string) => `${tenant}\u0000${database}\u0000${name}`;

export class CollectionStore {
  private readonly byId = new Map<string, CollectionRecord>();
  private readonly activeByName = new Map<string, CollectionRecord>();
  private readonly byInstanceUuid = new Map<string, CollectionRecord>();
  /** When each (collection, instance) UUID last changed, for the mirror. */
  private readonly uuidUpdatedAtMs = new Map<string, number>();

  private constructor(readonly store: MappingStore) {}

  /** Opens the mappings kept by `store` (or, given the local SQLite store, by its tables). */
  static async open(store: MappingStore | LocalStore): Promise<CollectionStore> {
    const collections = new CollectionStore("sqlite" in store ? new SqliteMappingStore(store) : store);
    await collections.reload();
    return collections;
  }

  /** Store writes not answered yet: a refresh waits until none is, so it never drops a change made here. */
  private pendingWrites = 0;
  /** Changes made here so far: a refresh whose load overlapped one is not applied. */
  private changes = 0;
  /** Told after each change made here is in the store (the cluster tells other nodes). */
  onChanged: (() => void) | null = null;

  /** Reads every mapping from the store into memory. */
  async reload() {
    this.apply(await this.store.load());
  }

  /**
   * Reads the mappings again when other nodes changed them (LOG_STORE=postgres, several
   * nodes). Applied only when no change of this node's own was in flight during the load, so
   * a record created here and not yet in the store is never dropped; returns whether it
   * applied (false: try again at the next poll).
   */
  async refreshOnce(): Promise<boolean> {
    if (this.pendingWrites > 0) return false;
    const changesBefore = this.changes;
    const loaded = await this.store.load();
    if (this.pendingWrites > 0 || this.changes !== changesBefore) return false;
    this.apply(loaded);
    return true;
  }

  /** Counts a store write of a change made here until it is answered. */
  private track(persisted: Promise<void>): Promise<void> {
    this.changes += 1;
    this.pendingWrites += 1;
    return persisted.then(
      () => {
        this.pendingWrites -= 1;
        this.onChanged?.();
      },
      (error) => {
        this.pendingWrites -= 1;
        throw error;
      },
    );
  }

  private apply({ collections, instanceUuids }: { collections: CollectionRow[]; instanceUuids: InstanceUuidRow[] }) {
    this.byId.clear();
    this.activeByName.clear();
    this.byInstanceUuid.clear();
    this.uuidUpdatedAtMs.clear();
    for (const row of collections) this.index({ ...row, instanceUuids: new Map() });
    for (const row of instanceUuids) {
      const record = this.byId.get(row.collectionId);
      if (!record) continue;
      record.instanceUuids.set(row.instance, row.instanceUuid);
      // A UUID mapped to a dropped collection and to a live one (a stale link) answers for the live one.
      const other = this.byInstanceUuid.get(row.instanceUuid);
      if (!other || other.status !== "active" || record.status === "active") this.byInstanceUuid.set(row.instanceUuid, record);
      this.uuidUpdatedAtMs.set(uuidKey(row.collectionId, row.instance), row.updatedAtMs);
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

  /**
   * The record is in memory at once (before this yields); resolves once the store has it.
   * When the store refuses it (Postgres cut), it leaves memory again: kept, it would map the
   * name to a collection no instance has and no log entry creates, and writes to that name
   * would then be logged against it and never apply (chaos, NODES=3, seed 734099232).
   */
  async create(id: string, tenant: string, database: string, name: string): Promise<CollectionRecord> {
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
    const persisted = this.track(this.store.upsertCollection({ id, tenant, database, name, status: "active", createdAtMs: now, updatedAtMs: now }));
    this.index(record);
    try {
      await persisted;
    } catch (error) {
      if (this.byId.get(id) === record) this.byId.delete(id);
      const key = nameKey(tenant, database, name);
      if (this.activeByName.get(key) === record) this.activeByName.delete(key);
      throw error;
    }
    return record;
  }

  setInstanceUuid(id: string, instance: string, instanceUuid: string): Promise<void> {
    const record = this.byId.get(id);
    if (!record) {
      // Several nodes: a collection made through another node, whose create this node
      // replayed before reading its mapping. The store has the collection (it is mapped
      // before its create is logged); the next reload brings both here.
      return this.store.shared ? this.track(this.store.setInstanceUuid({ collectionId: id, instance, instanceUuid, updatedAtMs: Date.now() })) : done;
    }
    if (record.instanceUuids.get(instance) === instanceUuid) return done;
    const now = Date.now();
    const persisted = this.track(this.store.setInstanceUuid({ collectionId: id, instance, instanceUuid, updatedAtMs: now }));
    this.uuidUpdatedAtMs.set(uuidKey(id, instance), now);
    const previous = record.instanceUuids.get(instance);
    if (previous && this.byInstanceUuid.get(previous) === record) this.byInstanceUuid.delete(previous);
    record.instanceUuids.set(instance, instanceUuid);
    this.byInstanceUuid.set(instanceUuid, record);
    return persisted;
  }

  rename(id: string, newName: string): Promise<void> {
    const record = this.byId.get(id);
    if (!record) return done;
    const now = Date.now();
    const persisted = this.track(this.store.updateCollection(id, { name: newName, updatedAtMs: now }));
    if (record.status === "active") this.activeByName.delete(nameKey(record.tenant, record.database, record.name));
    record.name = newName;
    record.updatedAtMs = now;
    this.index(record);
    return persisted;
  }

  /** Marks a collection deleted. The row stays as a tombstone so the mirror and replay still know it. */
  markDeleted(id: string): Promise<void> {
    const record = this.byId.get(id);
    if (!record || record.status === "deleted") return done;
    const now = Date.now();
    const persisted = this.track(this.store.updateCollection(id, { status: "deleted", updatedAtMs: now }));
    this.activeByName.delete(nameKey(record.tenant, record.database, record.name));
    record.status = "deleted";
    record.updatedAtMs = now;
    return persisted;
  }

  list(options: { includeDeleted?: boolean } = {}): CollectionRecord[] {
    return [...this.byId.values()].filter((r) => options.includeDeleted || r.status === "active");
  }

  /** Replaces everything with rows restored from the mirror. */
  async restore(rows: CollectionRow[], instanceRows: InstanceUuidRow[]) {
    await this.track(this.store.replaceAll(rows, instanceRows));
    await this.reload();
  }

  /** Rows changed since `sinceMs`, for the mirror. */
  changedSince(sinceMs: number) {
    const records = this.list({ includeDeleted: true }).filter((r) => r.updatedAtMs >= sinceMs);
    const instanceRows: InstanceUuidRow[] = [];
    for (const record of this.byId.values()) {
      for (const [instance, instanceUuid] of record.instanceUuids) {
        const updatedAtMs = this.uuidUpdatedAtMs.get(uuidKey(record.id, instance)) ?? 0;
        if (updatedAtMs >= sinceMs) instanceRows.push({ collectionId: record.id, instance, instanceUuid, updatedAtMs });
      }
    }
    return { records, instanceRows };
  }

  /** Marks every collection deleted (reset). */
  async markAllDeleted() {
    await Promise.all([...this.byId.values()].map((record) => this.markDeleted(record.id)));
  }
}
