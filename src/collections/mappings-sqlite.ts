/** The mappings in the local SQLite file (tables `collections` and `collection_instances`). */
import { eq } from "drizzle-orm";
import type { LocalStore } from "../db";
import { collectionInstances, collections } from "../db/sqlite-schema";
import type { CollectionRow, InstanceUuidRow, MappingStore } from "./store";

export class SqliteMappingStore implements MappingStore {
  readonly shared = false;
  constructor(private readonly local: LocalStore) {}

  async load() {
    return {
      collections: this.local.db
        .select()
        .from(collections)
        .all()
        .map((row) => ({ ...row, status: row.status as CollectionRow["status"] })),
      instanceUuids: this.local.db.select().from(collectionInstances).all(),
    };
  }

  async upsertCollection(row: CollectionRow) {
    const { tenant, database, name, status, updatedAtMs } = row;
    this.local.db.insert(collections).values(row).onConflictDoUpdate({ target: collections.id, set: { tenant, database, name, status, updatedAtMs } }).run();
  }

  async updateCollection(id: string, change: Partial<Pick<CollectionRow, "name" | "status">> & { updatedAtMs: number }) {
    this.local.db.update(collections).set(change).where(eq(collections.id, id)).run();
  }

  async setInstanceUuid(row: InstanceUuidRow) {
    this.local.db
      .insert(collectionInstances)
      .values(row)
      .onConflictDoUpdate({ target: [collectionInstances.collectionId, collectionInstances.instance], set: { instanceUuid: row.instanceUuid, updatedAtMs: row.updatedAtMs } })
      .run();
  }

  async replaceAll(rows: CollectionRow[], instanceRows: InstanceUuidRow[]) {
    this.local.db.transaction((tx) => {
      tx.delete(collectionInstances).run();
      tx.delete(collections).run();
      for (const row of rows) tx.insert(collections).values(row).run();
      for (const row of instanceRows) tx.insert(collectionInstances).values(row).run();
    });
  }
}
