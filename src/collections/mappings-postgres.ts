/**
 * The mappings in Postgres (LOG_STORE=postgres): the tables the mirror fills otherwise are
 * then the only copy, so no mirror runs.
 */
import { eq } from "drizzle-orm";
import type { MirrorDb } from "../db";
import { mirrorCollectionInstances, mirrorCollections } from "../db/pg-schema";
import type { CollectionRow, InstanceUuidRow, MappingStore } from "./store";

export class PostgresMappingStore implements MappingStore {
  readonly shared = true;
  constructor(private readonly db: MirrorDb) {}

  async load() {
    const collections = await this.db.select().from(mirrorCollections);
    const instanceUuids = await this.db.select().from(mirrorCollectionInstances);
    return { collections: collections.map((row) => ({ ...row, status: row.status as CollectionRow["status"] })), instanceUuids };
  }

  async upsertCollection(row: CollectionRow) {
    const { tenant, database, name, status, updatedAtMs } = row;
    await this.db.insert(mirrorCollections).values(row).onConflictDoUpdate({ target: mirrorCollections.id, set: { tenant, database, name, status, updatedAtMs } });
  }

  async updateCollection(id: string, change: Partial<Pick<CollectionRow, "name" | "status">> & { updatedAtMs: number }) {
    await this.db.update(mirrorCollections).set(change).where(eq(mirrorCollections.id, id));
  }

  async setInstanceUuid(row: InstanceUuidRow) {
    await this.db
      .insert(mirrorCollectionInstances)
      .values(row)
      .onConflictDoUpdate({ target: [mirrorCollectionInstances.collectionId, mirrorCollectionInstances.instance], set: { instanceUuid: row.instanceUuid, updatedAtMs: row.updatedAtMs } });
  }

  async replaceAll(rows: CollectionRow[], instanceRows: InstanceUuidRow[]) {
    await this.db.transaction(async (tx) => {
      await tx.delete(mirrorCollectionInstances);
      await tx.delete(mirrorCollections);
      if (rows.length) await tx.insert(mirrorCollections).values(rows);
      if (instanceRows.length) await tx.insert(mirrorCollectionInstances).values(instanceRows);
    });
  }
}
