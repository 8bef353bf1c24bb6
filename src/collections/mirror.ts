/**
 * Mirrors the mappings to Postgres, so that a chroma-lb started on an empty DATA_DIR
 * restores its collection ids, and a second node can share them. The mirror is never on
 * a client's path: when Postgres is down, syncs fail quietly and catch up when it returns.
 */
import { eq, sql } from "drizzle-orm";
import { openMirrorStore, type LocalStore, type MirrorStore } from "../db";
import { mirrorCollectionInstances, mirrorCollections } from "../db/pg-schema";
import { kv } from "../db/sqlite-schema";
import type { Logger } from "../observability/log";
import type { CollectionStore } from "./store";

const watermarkKey = "mirror_synced_through_ms";

export interface MirrorStatus {
  configured: boolean;
  connected: boolean;
  lastSyncAtMs: number | null;
  lastError: string | null;
  rowsSynced: number;
  restoredRows: number;
}

export class Mirror {
  private store: MirrorStore | null = null;
  private syncing: Promise<void> | null = null;
  readonly status: MirrorStatus = { configured: true, connected: false, lastSyncAtMs: null, lastError: null, rowsSynced: 0, restoredRows: 0 };

  constructor(
    private readonly databaseUrl: string,
    private readonly local: LocalStore,
    private readonly collections: CollectionStore,
    private readonly log: Logger,
  ) {}

  private async connect(): Promise<MirrorStore> {
    if (this.store) return this.store;
    this.store = await openMirrorStore(this.databaseUrl, 3);
    this.status.connected = true;
    return this.store;
  }

  /** The driver failed outside any call of ours (see isMirrorDriverError): start over with a new connection. */
  connectionLost(error: unknown) {
    this.fail(error);
  }

  private fail(error: unknown) {
    const message = error instanceof Error ? error.message : String(error);
    if (this.status.lastError !== message) this.log.warn("mirror unavailable; will retry", { error: message });
    this.status.lastError = message;
    this.status.connected = false;
    const store = this.store;
    this.store = null;
    void store?.close().catch(() => {});
  }

  private watermark(): number {
    const row = this.local.db.select().from(kv).where(eq(kv.key, watermarkKey)).get();
    return row ? Number(row.value) : 0;
  }

  private setWatermark(ms: number) {
    this.local.db
      .insert(kv)
      .values({ key: watermarkKey, value: String(ms) })
      .onConflictDoUpdate({ target: kv.key, set: { value: String(ms) } })
      .run();
  }

  /**
   * When the local mappings are empty and the mirror has some, copies them in. Called at
   * start, before chroma-lb serves; a mirror that cannot be reached is skipped.
   */
  async restoreIfEmpty(): Promise<number> {
    if (this.collections.list({ includeDeleted: true }).length > 0) return 0;
    try {
      const store = await this.connect();
      const rows = await store.db.select().from(mirrorCollections);
      if (rows.length === 0) return 0;
      const instanceRows = await store.db.select().from(mirrorCollectionInstances);
      await this.collections.restore(
        rows.map((r) => ({ ...r, status: r.status as "active" | "deleted" })),
        instanceRows,
      );
      this.setWatermark(Date.now());
      this.status.restoredRows = rows.length;
      this.log.info("mappings restored from the mirror", { collections: rows.length });
      return rows.length;
    } catch (error) {
      this.fail(error);
      return 0;
    }
  }

  /** Pushes every mapping changed since the last successful sync. */
  syncOnce(): Promise<void> {
    if (!this.syncing) {
      this.syncing = this.sync().finally(() => (this.syncing = null));
    }
    return this.syncing;
  }

  private async sync(): Promise<void> {
    const startedMs = Date.now();
    try {
      const store = await this.connect();
      const { records, instanceRows } = this.collections.changedSince(this.watermark());
      if (records.length || instanceRows.length) {
        await store.db.transaction(async (tx) => {
          for (const r of records) {
            const row = { id: r.id, tenant: r.tenant, database: r.database, name: r.name, status: r.status, createdAtMs: r.createdAtMs, updatedAtMs: r.updatedAtMs };
            await tx.insert(mirrorCollections).values(row).onConflictDoUpdate({ target: mirrorCollections.id, set: row });
          }
          for (const r of instanceRows) {
            await tx
              .insert(mirrorCollectionInstances)
              .values(r)
              .onConflictDoUpdate({
                target: [mirrorCollectionInstances.collectionId, mirrorCollectionInstances.instance],
                set: { instanceUuid: r.instanceUuid, updatedAtMs: r.updatedAtMs },
              });
          }
        });
      }
      this.setWatermark(startedMs);
      this.status.rowsSynced += records.length + instanceRows.length;
      this.status.lastSyncAtMs = Date.now();
      if (this.status.lastError) this.log.info("mirror reachable again; caught up");
      this.status.lastError = null;
      this.status.connected = true;
    } catch (error) {
      this.fail(error);
    }
  }

  /** Rows in the mirror (for status and tests). */
  async count(): Promise<number | null> {
    try {
      const store = await this.connect();
      const rows = await store.db.select({ n: sql<number>`count(*)::int` }).from(mirrorCollections);
      return rows[0]?.n ?? 0;
    } catch {
      return null;
    }
  }

  async close() {
    await this.syncing?.catch(() => {});
    await this.store?.close().catch(() => {});
    this.store = null;
  }
}

/**
 * Whether an error thrown outside any call of ours comes from the Postgres driver: it can
 * throw from its own timers when a connection is cut in the middle of a write (its socket
 * already gone). The mirror is optional and rebuilt from SQLite, so such an error costs the
 * mirror its connection, never the process.
 */
export function isMirrorDriverError(error: unknown): boolean {
  const stack = error instanceof Error ? (error.stack ?? "") : "";
  return /[\\/]node_modules[\\/]postgres[\\/]/.test(stack);
}
