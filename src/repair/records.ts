/**
 * Records as Chroma's `get` answers them, read without converting values: each record's
 * canonical text (for digests), and add bodies built from the answer's own bytes (for
 * copies). Metadata keys are sorted, since Chroma does not keep their order; every value
 * keeps the text the instance wrote, so `1` and `1.0` stay different.
 */
import { decodeString, elementStride, splitArray, splitObject, type RawValue } from "../replay/raw-json";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The fields a copy or a digest reads. */
export const recordFields = ["embeddings", "documents", "metadatas", "uris"] as const;
export type RecordField = (typeof recordFields)[number];

/** One page of a `get` answer: ids, and each field's element texts (null when not included). */
export interface RecordPage {
  ids: string[];
  fields: Record<RecordField, Uint8Array[] | null>;
}

function elements(body: Uint8Array, value: RawValue): Uint8Array[] | null {
  const bounds = value.elements ?? splitArray(body, value.start, value.end);
  if (!bounds) return null;
  const out: Uint8Array[] = [];
  for (let k = 0; k < bounds.length; k += elementStride) out.push(body.subarray(bounds[k]!, bounds[k + 1]!));
  return out;
}

const isNull = (bytes: Uint8Array) => bytes.length === 4 && decoder.decode(bytes) === "null";

/** Reads a `get` answer; null when it is not one. */
export function readRecordPage(body: Uint8Array): RecordPage | null {
  const top = splitObject(body);
  const idsValue = top?.get("ids");
  if (!top || !idsValue) return null;
  const idTexts = elements(body, idsValue);
  if (!idTexts) return null;
  const ids = idTexts.map((t) => decodeString(t, 0, t.length));
  const fields = {} as RecordPage["fields"];
  for (const field of recordFields) {
    const value = top.get(field);
    if (!value || isNull(body.subarray(value.start, value.end))) {
      fields[field] = null;
      continue;
    }
    const items = elements(body, value);
    if (!items || items.length !== ids.length) return null;
    fields[field] = items;
  }
  return { ids, fields };
}

/** An object's text with its keys sorted and every value's text unchanged; `null` stays `null`. */
export function sortedObjectText(bytes: Uint8Array): string {
  const text = decoder.decode(bytes);
  if (text === "null") return text;
  const fields = splitObject(bytes);
  if (!fields) return text;
  const keys = [...fields.keys()].sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${decoder.decode(bytes.subarray(fields.get(k)!.start, fields.get(k)!.end))}`).join(",")}}`;
}

/**
 * An embedding as the hex of its float32 bits. Chroma stores float32 and prints each value
 * in its shortest form, so parsing the printed number and rounding to float32 gives back
 * the stored bits exactly; a base64 embedding is its bytes already.
 */
export function embeddingBits(bytes: Uint8Array): string {
  const text = decoder.decode(bytes);
  if (text === "null") return text;
  if (text.startsWith('"')) return Buffer.from(JSON.parse(text) as string, "base64").toString("hex");
  const values = Float32Array.from(JSON.parse(text) as number[]);
  return Buffer.from(values.buffer).toString("hex");
}

/** The canonical text of record `i` of a page: what two instances must agree on. */
export function canonicalRecord(page: RecordPage, i: number): string {
  const { fields } = page;
  const part = (field: RecordField, render: (b: Uint8Array) => string) => (fields[field] ? render(fields[field]![i]!) : "-");
  return [
    JSON.stringify(page.ids[i]),
    part("documents", (b) => decoder.decode(b)),
    part("metadatas", sortedObjectText),
    part("embeddings", embeddingBits),
    part("uris", (b) => decoder.decode(b)),
  ].join("\u0000");
}

/**
 * An add body holding the page's records exactly as the instance answered them. Fields
 * whose every element is null are left out (Chroma treats a missing field as all null).
 */
export function addBodyFor(page: RecordPage, indexes: number[]): Uint8Array {
  const parts = [`"ids":[${indexes.map((i) => JSON.stringify(page.ids[i])).join(",")}]`];
  for (const field of recordFields) {
    const items = page.fields[field];
    if (!items || indexes.every((i) => isNull(items[i]!))) continue;
    parts.push(`${JSON.stringify(field)}:[${indexes.map((i) => decoder.decode(items[i]!)).join(",")}]`);
  }
  return encoder.encode(`{${parts.join(",")}}`);
}
