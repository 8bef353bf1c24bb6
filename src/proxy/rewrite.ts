/**
 * Replacing each instance's collection UUID with chroma-lb's collection id in answers, and
 * nothing else: the bytes around the id (metadata, configuration) reach the client exactly
 * as the instance sent them, since a JSON round trip would turn `1.0` into `1`.
 */
import { decodeString, elementStride, splitArray, splitObject } from "../replay/raw-json";

const encoder = new TextEncoder();

/** One collection object of an answer, with the id it now carries. */
export interface RewrittenCollection {
  id: string;
  bytes: Uint8Array;
}

/** The collection object in [start, end) with its `id` mapped; null when it is not one. */
function rewriteOne(body: Uint8Array, start: number, end: number, idFor: (uuid: string) => string): RewrittenCollection | null {
  const fields = splitObject(body, start, end);
  const id = fields?.get("id");
  if (!id || body[id.start] !== 0x22) return null;
  const uuid = decodeString(body, id.start, id.end);
  const logical = idFor(uuid);
  if (logical === uuid) return { id: uuid, bytes: body.subarray(start, end) };
  const replacement = encoder.encode(JSON.stringify(logical));
  const out = new Uint8Array(end - start - (id.end - id.start) + replacement.byteLength);
  out.set(body.subarray(start, id.start), 0);
  out.set(replacement, id.start - start);
  out.set(body.subarray(id.end, end), id.start - start + replacement.byteLength);
  return { id: logical, bytes: out };
}

/** A collection answer with its id mapped; the answer itself when it is not a collection. */
export function rewriteCollection(body: Uint8Array, idFor: (uuid: string) => string): Uint8Array {
  return rewriteOne(body, 0, body.byteLength, idFor)?.bytes ?? body;
}

/** The collections of a list answer with their ids mapped; null when it is not such a list. */
export function rewriteCollectionList(body: Uint8Array, idFor: (uuid: string) => string): RewrittenCollection[] | null {
  const bounds = splitArray(body);
  if (!bounds) return null;
  const out: RewrittenCollection[] = [];
  for (let k = 0; k < bounds.length; k += elementStride) {
    const one = rewriteOne(body, bounds[k]!, bounds[k + 1]!, idFor);
    if (!one) return null;
    out.push(one);
  }
  return out;
}

/** A JSON array of raw elements, in order. */
export function joinArray(elements: Uint8Array[]): Uint8Array {
  const size = elements.reduce((n, e) => n + e.byteLength, 0) + Math.max(0, elements.length - 1) + 2;
  const out = new Uint8Array(size);
  let at = 0;
  out[at++] = 0x5b;
  elements.forEach((element, i) => {
    if (i > 0) out[at++] = 0x2c;
    out.set(element, at);
    at += element.byteLength;
  });
  out[at] = 0x5d;
  return out;
}
