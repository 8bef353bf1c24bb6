/**
 * Filling a collection that exists on some instances only (found by adoption): it is
 * created on the others and its records are copied from an instance that has it. Writes
 * to the collection wait while it is copied (the caller holds its write lock), so the copy
 * is a consistent snapshot and later log entries apply on top of it in order.
 */
import { databasePath } from "../chroma/paths";
import type { Config } from "../config";
import type { Instance } from "../instances/registry";
import type { Logger } from "../observability/log";
import type { WriteAheadLog } from "../wal/log";
import type { CollectionRecord, CollectionStore } from "./store";

/** Records read from the source per request while copying. */
const copyPageSize = 500;

/** One page of a collection's records, as Chroma's get answers it. */
interface CopyPage {
  ids?: string[];
  embeddings?: unknown[] | null;
  documents?: unknown[] | null;
  metadatas?: unknown[] | null;
  uris?: unknown[] | null;
}

export interface FillResult {
  collection: string;
  source: string;
  filled: Array<{ instance: string; records: number }>;
  skipped: Array<{ instance: string; reason: string }>;
}

const base = (record: CollectionRecord) => databasePath(record.tenant, record.database);

export async function fillCollection(
  record: CollectionRecord,
  source: Instance,
  targets: Instance[],
  deps: { collections: CollectionStore; wal: WriteAheadLog; config: Pick<Config, "requestTimeoutMs">; log: Logger },
): Promise<FillResult> {
  const timeoutMs = deps.config.requestTimeoutMs;
  const result: FillResult = { collection: `${record.tenant}/${record.database}/${record.name}`, source: source.name, filled: [], skipped: [] };
  const described = await source.client.json<{ metadata?: unknown; configuration_json?: unknown; id?: string }>(
    "GET",
    `${base(record)}/collections/${encodeURIComponent(record.name)}`,
    undefined,
    timeoutMs,
  );
  const info = described.json;
  if (!described.ok || described.status !== 200 || !info?.id) {
    return { ...result, skipped: targets.map((t) => ({ instance: t.name, reason: `source ${source.name} could not describe the collection` })) };
  }
  const sourceUuid = info.id;

  for (const target of targets) {
    if (record.instanceUuids.has(target.name)) continue;
    if (!deps.wal.isCaughtUp(target.name, record.id) || !deps.wal.isCaughtUp(source.name, record.id)) {
      result.skipped.push({ instance: target.name, reason: "log entries for this collection are still pending" });
      continue;
    }
    // A drop (or rename) the target has not applied yet may leave another collection under
    // this name there, which the get-or-create below would answer: that collection's records
    // would become this one's. Asked of the store, not the view (several nodes).
    if (await deps.wal.firstPendingBefore(target.name, Number.MAX_SAFE_INTEGER, ["collection", "meta"])) {
      result.skipped.push({ instance: target.name, reason: "collection changes are still pending there" });
      continue;
    }
    const create = async (withConfiguration: boolean) =>
      target.client.json<{ id?: string }>(
        "POST",
        `${base(record)}/collections`,
        {
          name: record.name,
          metadata: info.metadata ?? null,
          ...(withConfiguration && info.configuration_json ? { configuration: info.configuration_json } : {}),
          get_or_create: true,
        },
        timeoutMs,
      );
    let created = await create(true);
    // Configuration formats differ between Chroma versions; the collection matters more.
    if (created.ok && created.status >= 400 && created.status < 500) created = await create(false);
    const targetUuid = created.json?.id;
    if (!created.ok || created.status >= 300 || !targetUuid) {
      result.skipped.push({ instance: target.name, reason: created.ok ? `create answered ${created.status}` : created.reason });
      continue;
    }
    const owner = deps.collections.byUuid(targetUuid);
    if (owner && owner.id !== record.id) {
      result.skipped.push({ instance: target.name, reason: `the name is still collection ${owner.id}'s there` });
      continue;
    }

    let copied = 0;
    let failure: string | null = null;
    for (let offset = 0; ; offset += copyPageSize) {
      const page = await source.client.json<CopyPage>(
        "POST",
        `${base(record)}/collections/${sourceUuid}/get`,
        { limit: copyPageSize, offset, include: ["embeddings", "documents", "metadatas", "uris"] },
        timeoutMs,
      );
      const records = page.json;
      if (!page.ok || page.status !== 200 || !records?.ids) {
        failure = page.ok ? `reading the source answered ${page.status}` : page.reason;
        break;
      }
      if (records.ids.length === 0) break;
      const body: Record<string, unknown> = { ids: records.ids, embeddings: records.embeddings };
      if (records.documents) body.documents = records.documents;
      if (records.metadatas) body.metadatas = records.metadatas;
      if (records.uris && records.uris.some((u) => u !== null)) body.uris = records.uris;
      const written = await target.client.json("POST", `${base(record)}/collections/${targetUuid}/upsert`, body, timeoutMs);
      if (!written.ok || written.status >= 300) {
        failure = written.ok ? `writing answered ${written.status}` : written.reason;
        break;
      }
      copied += records.ids.length;
      deps.log.info("filling collection", { collection: record.name, from: source.name, to: target.name, copied });
      if (records.ids.length < copyPageSize) break;
    }
    if (failure) {
      // A partial copy must not be taken for the collection by a later adoption pass.
      await target.client.request({ method: "DELETE", path: `${base(record)}/collections/${encodeURIComponent(record.name)}`, timeoutMs });
      result.skipped.push({ instance: target.name, reason: `copy stopped after ${copied} records: ${failure}; the next adoption pass retries` });
      continue;
    }
    await deps.collections.setInstanceUuid(record.id, target.name, targetUuid);
    result.filled.push({ instance: target.name, records: copied });
    deps.log.info("collection filled", { collection: record.name, from: source.name, to: target.name, records: copied });
  }
  return result;
}
