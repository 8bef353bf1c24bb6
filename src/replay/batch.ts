/**
 * Merging consecutive log entries of one collection into one request, when the result is
 * the same as applying them one by one: adds with adds, upserts with upserts, deletes by
 * ids with deletes by ids. The rule is that a merged request must be exactly as valid as
 * its parts, so that Chroma accepts it when, and only when, it would accept each part:
 * entries whose ids overlap are never merged (Chroma resolves duplicates inside one request
 * differently from across requests), nor entries that carry different fields, embeddings in
 * different encodings (base64 and float arrays) or of different dimensions, or base64 that
 * is not strict standard base64 (such an entry goes alone and Chroma judges it alone).
 *
 * The merged body is built from the raw bytes of the parts (see raw-json.ts), never from
 * parsed values: re-serializing would turn `1.0` into `1`, which Chroma stores as an int,
 * and cut integers beyond 2^53.
 */
import type { Entry } from "../wal/log";
import { decodeString, elementStride, splitObject } from "./raw-json";

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

/** The record fields, in the order the merged body carries them. */
const recordFields = ["ids", "embeddings", "documents", "metadatas", "uris"] as const;
/** Fields a delete may carry, null apart from ids, and still merge. */
const deleteFields = ["ids", "where", "where_document"];

type EmbeddingEncoding = "floats" | "base64";

interface Part<E extends Mergeable> {
  entry: E;
  body: Uint8Array;
  /** The op and the non-null fields: only parts with the same signature merge. */
  signature: string;
  /** Decoded ids, for the overlap check; the body carries them raw. */
  ids: string[];
  /** Per record field (in `recordFields` order): its elements (see raw-json's `elementStride`), or null when absent. */
  elements: Array<number[] | null>;
  encoding: EmbeddingEncoding | null;
  /** Floats per embedding. */
  dimension: number;
}

const encoder = new TextEncoder();

/** `{"ids":[` for the first field, `,"embeddings":[` and so on for the others. */
const fieldOpenings = recordFields.map((field, i) => encoder.encode(`${i === 0 ? "{" : ","}"${field}":[`));

/** The 6-bit value of each standard base64 character by byte, -1 for every other byte (URL-safe `-` and `_` included). */
const base64Values = (() => {
  const table = new Int8Array(256).fill(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (let v = 0; v < alphabet.length; v++) table[alphabet.charCodeAt(v)] = v;
  return table;
})();

/**
 * The float32 count of the standard base64 text in bytes [from, to), counted from its length
 * and padding without decoding it; -1 unless it is strict (canonical padding, zero trailing
 * bits, as Chroma's decoder wants) and encodes a whole number of floats.
 */
function base64Floats(b: Uint8Array, from: number, to: number): number {
  const length = to - from;
  if (length === 0 || length % 4 !== 0) return -1;
  let padding = 0;
  if (b[to - 1] === 0x3d) padding = b[to - 2] === 0x3d ? 2 : 1;
  for (let k = from; k < to - padding; k++) if (base64Values[b[k]!]! < 0) return -1;
  // The bits of the last character that the padding leaves unused must be zero.
  const last = base64Values[b[to - padding - 1]!]!;
  if ((padding === 1 && (last & 0x03) !== 0) || (padding === 2 && (last & 0x0f) !== 0)) return -1;
  const bytes = (length / 4) * 3 - padding;
  return bytes % 4 === 0 ? bytes / 4 : -1;
}

/** The dimension of a base64 embedding held in the JSON string at [start, end), or -1. */
function base64Dimension(b: Uint8Array, start: number, end: number): number {
  const dimension = base64Floats(b, start + 1, end - 1);
  if (dimension >= 0 || !b.subarray(start + 1, end - 1).includes(0x5c)) return dimension;
  // Escaped (some encoders write `/` as `\/`): judge the decoded string instead.
  const decoded = decodeString(b, start, end);
  const chars = new Uint8Array(decoded.length);
  for (let k = 0; k < decoded.length; k++) {
    const c = decoded.charCodeAt(k);
    if (c > 0x7f) return -1;
    chars[k] = c;
  }
  return base64Floats(chars, 0, chars.length);
}

/** What merging needs of an entry, or null when it must go alone. */
function parse<E extends Mergeable>(entry: E): Part<E> | null {
  const body = entry.body;
  if (!body) return null;
  const op = entry.op;
  if (op !== "add" && op !== "upsert" && op !== "delete") return null;
  const fields = splitObject(body);
  if (!fields) return null;
  const allowed: readonly string[] = op === "delete" ? deleteFields : recordFields;
  const present: string[] = [];
  for (const [key, value] of fields) {
    // Unknown fields are refused even when null: dropping them could make a merged request
    // acceptable where the part alone is not.
    if (!allowed.includes(key)) return null;
    const isNull = body[value.start] === 0x6e;
    if (!isNull) present.push(key);
  }
  // Only a delete by ids alone merges; a where filter's meaning depends on the data.
  if (op === "delete" && (present.length !== 1 || present[0] !== "ids")) return null;

  const elements = recordFields.map((field) => (present.includes(field) ? fields.get(field)!.elements : null));
  const idElements = elements[0];
  if (!idElements || idElements.length === 0) return null;
  // Every field has one element per id (and is an array), or Chroma refuses the entry alone.
  for (let f = 1; f < recordFields.length; f++) {
    if (present.includes(recordFields[f]!) && elements[f]?.length !== idElements.length) return null;
  }

  const count = idElements.length / elementStride;
  const ids: string[] = new Array(count);
  const unique = new Set<string>();
  for (let r = 0; r < count; r++) {
    const start = idElements[r * elementStride]!;
    if (body[start] !== 0x22) return null;
    const id = decodeString(body, start, idElements[r * elementStride + 1]!);
    // Repeated ids inside one entry make Chroma refuse it; merged, the refusal would move.
    if (unique.has(id)) return null;
    unique.add(id);
    ids[r] = id;
  }

  let encoding: EmbeddingEncoding | null = null;
  let dimension = -1;
  const embeddingElements = elements[1];
  if (embeddingElements) {
    for (let k = 0; k < embeddingElements.length; k += elementStride) {
      const start = embeddingElements[k]!;
      const first = body[start];
      const kind: EmbeddingEncoding | null = first === 0x5b ? "floats" : first === 0x22 ? "base64" : null;
      // The scan counted the floats of arrays holding numbers only (-1 for other arrays).
      const size =
        kind === "floats" ? embeddingElements[k + 2]! : kind === "base64" ? base64Dimension(body, start, embeddingElements[k + 1]!) : -1;
      // One encoding and one dimension per entry, as Chroma requires within a request.
      if (size <= 0 || (encoding !== null && (kind !== encoding || size !== dimension))) return null;
      encoding = kind;
      dimension = size;
    }
  }
  return { entry, body, signature: `${op}|${present.sort().join(",")}`, ids, elements, encoding, dimension };
}

/** The merged body: each present field's elements from every part, raw, in order. */
function mergeBodies(run: Part<Mergeable>[]): Uint8Array {
  const head = run[0]!;
  let total = 1; // The closing brace.
  for (let f = 0; f < recordFields.length; f++) {
    if (!head.elements[f]) continue;
    let count = 0;
    for (const part of run) {
      const elements = part.elements[f]!;
      for (let k = 0; k < elements.length; k += elementStride) total += elements[k + 1]! - elements[k]!;
      count += elements.length / elementStride;
    }
    total += fieldOpenings[f]!.length + (count - 1) + 1; // The commas, and the closing bracket.
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let f = 0; f < recordFields.length; f++) {
    if (!head.elements[f]) continue;
    // Ids are always present and come first, so `{"ids":[` opens the object.
    const opening = fieldOpenings[f]!;
    out.set(opening, at);
    at += opening.length;
    for (let p = 0; p < run.length; p++) {
      if (p > 0) out[at++] = 0x2c;
      const part = run[p]!;
      const elements = part.elements[f]!;
      const n = elements.length;
      const spanStart = elements[0]!;
      const spanEnd = elements[n - elementStride + 1]!;
      let compact = n / elementStride - 1;
      for (let k = 0; k < n; k += elementStride) compact += elements[k + 1]! - elements[k]!;
      if (spanEnd - spanStart === compact) {
        // Elements separated by bare commas, as most encoders write them: one copy.
        out.set(part.body.subarray(spanStart, spanEnd), at);
        at += compact;
        continue;
      }
      for (let k = 0; k < n; k += elementStride) {
        if (k > 0) out[at++] = 0x2c;
        out.set(part.body.subarray(elements[k]!, elements[k + 1]!), at);
        at += elements[k + 1]! - elements[k]!;
      }
    }
    out[at++] = 0x5d;
  }
  out[at++] = 0x7d;
  return out;
}

/** Takes the longest mergeable run from the start of `entries` (at least one entry). */
export function takeBatch<E extends Mergeable>(entries: E[], limits: BatchLimits): Batch<E> {
  const first = entries[0];
  if (!first) return { entries: [], body: null };
  const head = entries.length > 1 && limits.entriesMax > 1 ? parse(first) : null;
  if (!head) return { entries: [first], body: first.body };

  const run: Part<E>[] = [head];
  const seen = new Set(head.ids);
  let records = head.ids.length;
  let bytes = first.bodyBytes;
  for (let i = 1; i < entries.length; i++) {
    const entry = entries[i]!;
    // The cheap limits first, before reading the entry.
    if (run.length >= limits.entriesMax || bytes + entry.bodyBytes > limits.bytesMax) break;
    const next = parse(entry);
    if (!next || next.signature !== head.signature) break;
    if (records + next.ids.length > limits.recordsMax) break;
    if (next.encoding !== head.encoding || next.dimension !== head.dimension) break;
    if (next.ids.some((id) => seen.has(id))) break;
    for (const id of next.ids) seen.add(id);
    records += next.ids.length;
    bytes += entry.bodyBytes;
    run.push(next);
  }
  if (run.length === 1) return { entries: [first], body: first.body };
  return { entries: run.map((p) => p.entry), body: mergeBodies(run) };
}
