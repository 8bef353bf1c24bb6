/**
 * Merging consecutive log entries of one collection into one request, when the result is
 * the same as applying them one by one: adds with adds, upserts with upserts, deletes by
 * ids with deletes by ids. Entries whose ids overlap are never merged (Chroma resolves
 * duplicates inside one request differently from across requests), and neither are entries
 * that carry different fields. Embeddings sent as base64 (what the official client sends)
 * and as float arrays merge: the base64 ones are decoded to the same float32 values.
 */
import type { Entry } from "../wal/log";

/** What merging looks at in an entry; log entries and writes not yet logged both have it. */
export type Mergeable = Pick<Entry, "op" | "body" | "bodyBytes">;

export interface BatchLimits {
  /** Entries merged into one request at most. */
  entriesMax: number;
  /** Records (ids) in one request at most: the instance's max_batch_size. */
  recordsMax: number;
  /** Bytes of merged bodies at most. */
  bytesMax: number;
}

export interface Batch<E extends Mergeable> {
  entries: E[];
  /** The body to send: the entry's own bytes when alone, a merged JSON body otherwise. */
  body: Uint8Array | null;
}

const recordFields = ["ids", "embeddings", "documents", "metadatas", "uris"] as const;

interface Parsed<E extends Mergeable> {
  entry: E;
  json: Record<string, unknown>;
  signature: string;
  ids: string[];
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function parse<E extends Mergeable>(entry: E): Parsed<E> | null {
  if (!entry.body) return null;
  if (entry.op !== "add" && entry.op !== "upsert" && entry.op !== "delete") return null;
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(decoder.decode(entry.body));
  } catch {
    return null;
  }
  if (!json || typeof json !== "object" || !Array.isArray(json.ids)) return null;
  const keys = Object.keys(json).filter((k) => json[k] !== null && json[k] !== undefined);
  if (entry.op === "delete") {
    // Only a delete by ids alone merges; a where filter's meaning depends on the data.
    if (keys.length !== 1 || keys[0] !== "ids" || json.ids.length === 0) return null;
  } else if (keys.some((k) => !(recordFields as readonly string[]).includes(k))) {
    return null;
  }
  const embeddings = json.embeddings;
  if (embeddings !== undefined && embeddings !== null) {
    // One encoding per entry, as Chroma requires within a request.
    if (!Array.isArray(embeddings) || embeddings.length !== json.ids.length) return null;
    const first = typeof embeddings[0];
    if (first !== "string" && first !== "object") return null;
    if (embeddings.some((e) => typeof e !== first)) return null;
  }
  return { entry, json, signature: `${entry.op}|${keys.sort().join(",")}`, ids: json.ids as string[] };
}

/** Chroma's base64 embedding: little-endian float32 values. */
export function decodeBase64Embedding(encoded: string): number[] {
  const bytes = Buffer.from(encoded, "base64");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Array<number>(bytes.byteLength >> 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

const isBase64Embeddings = (json: Record<string, unknown>) => Array.isArray(json.embeddings) && typeof json.embeddings[0] === "string";

/** Takes the longest mergeable run from the start of `entries` (at least one entry). */
export function takeBatch<E extends Mergeable>(entries: E[], limits: BatchLimits): Batch<E> {
  const first = entries[0];
  if (!first) return { entries: [], body: null };
  const head = entries.length > 1 && limits.entriesMax > 1 ? parse(first) : null;
  if (!head) return { entries: [first], body: first.body };

  const run: Parsed<E>[] = [head];
  const seen = new Set(head.ids);
  let records = head.ids.length;
  let bytes = first.bodyBytes;
  for (const entry of entries.slice(1)) {
    if (run.length >= limits.entriesMax) break;
    const next = parse(entry);
    if (!next || next.signature !== head.signature) break;
    if (records + next.ids.length > limits.recordsMax || bytes + entry.bodyBytes > limits.bytesMax) break;
    if (next.ids.some((id) => seen.has(id))) break;
    for (const id of next.ids) seen.add(id);
    records += next.ids.length;
    bytes += entry.bodyBytes;
    run.push(next);
  }
  if (run.length === 1) return { entries: [first], body: first.body };

  const merged: Record<string, unknown[]> = {};
  const mixedEncodings = new Set(run.filter((p) => p.json.embeddings).map((p) => isBase64Embeddings(p.json))).size > 1;
  for (const field of recordFields) {
    if (head.json[field] === undefined || head.json[field] === null) continue;
    if (field === "embeddings" && mixedEncodings) {
      merged[field] = run.flatMap((p) =>
        isBase64Embeddings(p.json) ? (p.json.embeddings as string[]).map(decodeBase64Embedding) : (p.json.embeddings as unknown[]),
      );
      continue;
    }
    merged[field] = run.flatMap((p) => p.json[field] as unknown[]);
  }
  return { entries: run.map((p) => p.entry), body: encoder.encode(JSON.stringify(merged)) };
}
