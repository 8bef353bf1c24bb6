/**
 * Reading records as text: a Chroma `get` answer (from an instance or through chroma-lb)
 * into one state key per id, in the form the model gives (see `stateKeyOf`), so metadata
 * values are compared as the server wrote them (`1` and `1.0` differ).
 */
import { decodeString, elementStride, splitArray, splitObject } from "../../src/replay/raw-json";
import { canonicalGet } from "../support/raw";
import { stateKeyOf } from "./model";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The raw text of each element of the array that `field` of the object `top` holds; null when the field is null or absent. */
function elementTexts(bytes: Uint8Array, top: ReturnType<typeof splitObject>, field: string): string[] | null {
  const slice = top!.get(field);
  if (!slice) return null;
  const raw = decoder.decode(bytes.subarray(slice.start, slice.end));
  if (raw === "null") return null;
  const bounds = splitArray(bytes, slice.start, slice.end);
  if (!bounds) throw new Error(`${field} is not an array: ${raw.slice(0, 200)}`);
  const out: string[] = [];
  for (let k = 0; k < bounds.length; k += elementStride) out.push(decoder.decode(bytes.subarray(bounds[k]!, bounds[k + 1]!)));
  return out;
}

/**
 * Each record of a `get` answer (asked with documents, metadatas and embeddings) as a
 * state key, by id. Also answers the canonical text of the whole answer.
 */
export function readRecords(answer: string): { canonical: string; records: Map<string, string> } {
  const canonical = canonicalGet(answer);
  const bytes = encoder.encode(canonical);
  const top = splitObject(bytes);
  if (!top) throw new Error(`not a get answer: ${canonical.slice(0, 200)}`);
  const idsSlice = top.get("ids")!;
  const idBounds = splitArray(bytes, idsSlice.start, idsSlice.end)!;
  const ids: string[] = [];
  for (let k = 0; k < idBounds.length; k += elementStride) ids.push(decodeString(bytes, idBounds[k]!, idBounds[k + 1]!));
  const documents = elementTexts(bytes, top, "documents");
  const embeddings = elementTexts(bytes, top, "embeddings");
  const metadatas = elementTexts(bytes, top, "metadatas");
  const records = new Map<string, string>();
  ids.forEach((id, i) => {
    const document = documents ? (JSON.parse(documents[i]!) as string | null) : null;
    const embedding = embeddings ? (JSON.parse(embeddings[i]!) as number[] | null) : null;
    records.set(id, stateKeyOf(document, embedding, metadatas ? metadatas[i]! : "null"));
  });
  return { canonical, records };
}
