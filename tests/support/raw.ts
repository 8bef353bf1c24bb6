/**
 * Comparing Chroma answers as text. A `get` answer is put in one canonical form (records in
 * id order, metadata keys sorted, since Chroma fixes neither) with every value's text left
 * exactly as the server wrote it, so `1` and `1.0` still differ.
 */
import { decodeString, elementStride, splitArray, splitObject } from "../../src/replay/raw-json";

interface RawSlice {
  start: number;
  end: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const text = (bytes: Uint8Array, slice: RawSlice) => decoder.decode(bytes.subarray(slice.start, slice.end));

function elements(bytes: Uint8Array, slice: RawSlice): RawSlice[] {
  const bounds = splitArray(bytes, slice.start, slice.end);
  if (!bounds) throw new Error(`not a JSON array: ${text(bytes, slice).slice(0, 200)}`);
  const out: RawSlice[] = [];
  for (let k = 0; k < bounds.length; k += elementStride) out.push({ start: bounds[k]!, end: bounds[k + 1]! });
  return out;
}

/** An object's text with its keys sorted and its values' text unchanged (`null` stays `null`). */
function sortedObject(bytes: Uint8Array, slice: RawSlice): string {
  const raw = text(bytes, slice);
  if (raw === "null") return raw;
  const fields = splitObject(bytes, slice.start, slice.end);
  if (!fields) throw new Error(`not a JSON object: ${raw.slice(0, 200)}`);
  const keys = [...fields.keys()].sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${text(bytes, fields.get(k)!)}`).join(",")}}`;
}

/** The canonical text of a `get` answer (see above). */
export function canonicalGet(answer: Uint8Array | string): string {
  const bytes = typeof answer === "string" ? encoder.encode(answer) : answer;
  const top = splitObject(bytes);
  if (!top) throw new Error(`not a get answer: ${decoder.decode(bytes).slice(0, 200)}`);
  const ids = elements(bytes, top.get("ids")!).map((slice) => decodeString(bytes, slice.start, slice.end));
  const order = ids.map((_, i) => i).sort((a, b) => (ids[a]! < ids[b]! ? -1 : ids[a]! > ids[b]! ? 1 : 0));
  const parts: string[] = [];
  for (const field of ["ids", "embeddings", "documents", "metadatas", "uris"]) {
    const slice = top.get(field);
    if (!slice || text(bytes, slice) === "null") continue;
    const items = elements(bytes, slice);
    const rendered = order.map((i) => (field === "metadatas" ? sortedObject(bytes, items[i]!) : text(bytes, items[i]!)));
    parts.push(`${JSON.stringify(field)}:[${rendered.join(",")}]`);
  }
  return `{${parts.join(",")}}`;
}

/** POSTs raw bytes as JSON and answers the raw answer text. */
export async function postRaw(url: string, body: string): Promise<{ status: number; text: string; headers: Headers }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
  return { status: res.status, text: await res.text(), headers: res.headers };
}
