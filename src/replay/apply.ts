/**
 * Turns log entries into one request to one instance and classifies the answer. Used by
 * the write path (the client waits for the answer) and by replay (nobody waits).
 */
import type { CollectionStore } from "../collections/store";
import { decodeJson } from "../chroma/client";
import { databasePath } from "../chroma/paths";
import type { Instance } from "../instances/registry";
import type { Entry } from "../wal/log";

export type ApplyOutcome =
  | { kind: "applied"; status: number; headers: Headers; body: Uint8Array }
  /** Chroma answered 4xx: the input is bad for this instance. */
  | { kind: "refused"; status: number; headers: Headers; body: Uint8Array; reason: string }
  /** Chroma answered 5xx, or chroma-lb lacks what it needs (the collection's UUID on this instance). */
  | { kind: "failed"; status: number; headers: Headers | null; body: Uint8Array | null; reason: string }
  /** No answer: `unreachable` never reached the instance, `uncertain` may have. */
  | { kind: "transport"; failure: "unreachable" | "uncertain"; reason: string };

const base = databasePath;

export interface ApplyOptions {
  /** Client headers to pass on (already stripped of hop-by-hop ones); replay sends JSON only. */
  headers?: Headers;
  timeoutMs: number;
  /**
   * True when replaying: an answer that shows the change is already there (409 on create,
   * 404 on delete) counts as applied, since an earlier attempt may have reached the instance.
   */
  replay: boolean;
  signal?: AbortSignal;
}

function requestFor(entry: Entry, instance: Instance, collections: CollectionStore): { method: string; path: string } | string {
  const t = entry.tenant;
  const d = entry.database;
  switch (entry.op) {
    case "add":
    case "upsert":
    case "update":
    case "delete":
    case "modify_collection": {
      const record = entry.collectionId ? collections.get(entry.collectionId) : undefined;
      const uuid = record?.instanceUuids.get(instance.name);
      if (!uuid) return `collection ${entry.collectionId} has no UUID on instance ${instance.name} yet`;
      if (entry.op === "modify_collection") return { method: "PUT", path: `${base(t, d)}/collections/${uuid}` };
      return { method: "POST", path: `${base(t, d)}/collections/${uuid}/${entry.op}` };
    }
    case "create_collection":
      return { method: "POST", path: `${base(t, d)}/collections` };
    case "delete_collection":
      return { method: "DELETE", path: `${base(t, d)}/collections/${encodeURIComponent(entry.name ?? "")}` };
    case "create_tenant":
      return { method: "POST", path: "/api/v2/tenants" };
    case "update_tenant":
      return { method: "PATCH", path: `/api/v2/tenants/${encodeURIComponent(t)}` };
    case "create_database":
      return { method: "POST", path: `/api/v2/tenants/${encodeURIComponent(t)}/databases` };
    case "delete_database":
      return { method: "DELETE", path: base(t, d) };
  }
}

/**
 * Applies `entries` (one entry, or a merged batch with `body`) to the instance. On a
 * collection create it records the instance's UUID for the collection.
 */
export async function applyEntries(
  instance: Instance,
  entries: Entry[],
  body: Uint8Array | null,
  collections: CollectionStore,
  options: ApplyOptions,
): Promise<ApplyOutcome> {
  const first = entries[0]!;
  await linkMissingUuid(first, instance, collections, options);
  const superseded = options.replay ? await supersededOn(first, instance, collections, options) : null;
  if (superseded) return { kind: "applied", status: 200, headers: new Headers(), body: new TextEncoder().encode("{}") };
  const target = requestFor(first, instance, collections);
  if (typeof target === "string") return { kind: "failed", status: 0, headers: null, body: null, reason: target };

  const headers = new Headers(options.headers);
  if (body) headers.set("content-type", "application/json");
  const result = await instance.client.request({
    method: target.method,
    path: target.path,
    headers,
    body: target.method === "DELETE" && !body ? null : body,
    timeoutMs: options.timeoutMs,
    signal: options.signal,
  });
  if (!result.ok) return { kind: "transport", failure: result.failure, reason: result.reason };

  const { status } = result;
  // When replaying, a 404 on a delete or a 409 on a create means an earlier attempt got
  // there. On the write path they are the client's answer: a 404 there may also mean the
  // instance lost what others hold, and the write path tries another instance.
  const alreadyThere =
    options.replay &&
    ((status === 404 && ["delete_collection", "delete_database"].includes(first.op)) ||
      (status === 409 && ["create_collection", "create_tenant", "create_database"].includes(first.op)));

  if (first.op === "create_collection" && (status < 300 || alreadyThere)) {
    const uuid = await createdUuid(instance, first, result.body, status, options.timeoutMs);
    if (!uuid) return { kind: "failed", status, headers: result.headers, body: result.body, reason: "create answered without an id" };
    if (first.collectionId) await collections.setInstanceUuid(first.collectionId, instance.name, uuid);
  }
  // A replayed delete is one its write target applied, or one left unanswered by a crash and
  // now replayed everywhere: the collection is gone, from chroma-lb's mappings too (the write
  // path marks them only when it answers the client, which a crash may have prevented).
  if (options.replay && first.op === "delete_collection" && first.collectionId && (status < 300 || alreadyThere)) {
    await collections.markDeleted(first.collectionId);
  }
  if (status < 300 || alreadyThere) return { kind: "applied", status, headers: result.headers, body: result.body };
  const reason = `${target.method} ${target.path} answered ${status}: ${new TextDecoder().decode(result.body).slice(0, 300)}`;
  if (status === 413) return { kind: "refused", status, ...chromaErrorShape(result.headers, result.body), reason };
  if (status < 500) return { kind: "refused", status, headers: result.headers, body: result.body, reason };
  return { kind: "failed", status, headers: result.headers, body: result.body, reason };
}

/**
 * Chroma 1.0.5 refuses a body over 40 MiB on record routes with a plain-text 413 ("Payload
 * too large"); clients expect its JSON error shape, which it uses on other routes, so the
 * text becomes the message of that shape. A JSON answer is passed on unchanged.
 */
function chromaErrorShape(headers: Headers, body: Uint8Array): { headers: Headers; body: Uint8Array } {
  const json = decodeJson(body) as { error?: unknown } | undefined;
  if (json && typeof json === "object" && typeof json.error === "string") return { headers, body };
  const text = new TextDecoder().decode(body).trim() || "Payload too large";
  const shaped = new Headers(headers);
  shaped.set("content-type", "application/json");
  return { headers: shaped, body: new TextEncoder().encode(JSON.stringify({ error: "ChromaError", message: text })) };
}

/**
 * Replay only: whether the entry has nothing left to do on this instance because its
 * collection is gone from it for good, with its name perhaps taken by a newer collection
 * (one made there by a fill or a resync before this drop was replayed):
 * - a drop, sent by name, whose name on the instance is another collection's: sending it
 *   would delete that newer collection;
 * - a record write to a dropped collection the instance never had a recorded copy of: the
 *   drop that follows it in the log erases its effect anyway.
 * Returns the reason, or null.
 */
async function supersededOn(entry: Entry, instance: Instance, collections: CollectionStore, options: ApplyOptions): Promise<string | null> {
  if (!entry.collectionId) return null;
  const record = collections.get(entry.collectionId);
  if (entry.op === "delete_collection") {
    const id = await uuidByName(instance, entry.tenant, entry.database, entry.name ?? "", options.timeoutMs);
    if (id === null) return null;
    const owner = collections.byUuid(id);
    const ours = record?.instanceUuids.get(instance.name);
    if ((owner && owner.id !== entry.collectionId) || (ours !== undefined && ours !== id)) return `the name ${entry.name} is another collection's on ${instance.name}`;
    return null;
  }
  if (byInstanceUuid.has(entry.op) && record?.status === "deleted" && !record.instanceUuids.has(instance.name)) return `collection ${record.name} was dropped and ${instance.name} never held it`;
  return null;
}

/** Ops sent to a collection by its UUID on the instance. */
const byInstanceUuid = new Set<Entry["op"]>(["add", "upsert", "update", "delete", "modify_collection"]);

/**
 * An entry for a collection whose UUID on this instance chroma-lb has not recorded (a create
 * applied there by a node cut off or killed before it recorded the answer) is not held back
 * for good: the instance is asked for the collection by name, and the UUID it answers is
 * recorded. When it does not hold the collection, the entry fails as before (a copy being
 * filled or rebuilt gets its UUID from that).
 */
async function linkMissingUuid(entry: Entry, instance: Instance, collections: CollectionStore, options: ApplyOptions): Promise<void> {
  if (!byInstanceUuid.has(entry.op) || !entry.collectionId) return;
  const record = collections.get(entry.collectionId);
  if (!record || record.instanceUuids.has(instance.name)) return;
  const id = await uuidByName(instance, record.tenant, record.database, record.name, options.timeoutMs);
  if (id !== null) {
    const owner = collections.byUuid(id);
    // That name is another collection's there (one this instance has not applied the drop of yet).
    if (owner && owner !== record) return;
    await collections.setInstanceUuid(record.id, instance.name, id);
  }
}

/** The UUID the instance gave a created collection; on a replayed 409, looked up by name. */
async function createdUuid(instance: Instance, entry: Entry, body: Uint8Array, status: number, timeoutMs: number): Promise<string | null> {
  if (status < 300) {
    const json = decodeJson(body) as { id?: string } | undefined;
    return typeof json?.id === "string" ? json.id : null;
  }
  return uuidByName(instance, entry.tenant, entry.database, entry.name ?? "", timeoutMs);
}

/** The UUID of the collection the instance holds under that name; null when none (or no answer). */
async function uuidByName(instance: Instance, tenant: string, database: string, name: string, timeoutMs: number): Promise<string | null> {
  const found = await instance.client.json<{ id?: string }>("GET", `${base(tenant, database)}/collections/${encodeURIComponent(name)}`, undefined, timeoutMs);
  const id = found.json?.id;
  return found.ok && found.status === 200 && typeof id === "string" ? id : null;
}
