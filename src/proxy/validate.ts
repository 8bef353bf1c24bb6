/**
 * Checks made before a request reaches the log or an instance. They catch only inputs that
 * Chroma would refuse anyway, answered with Chroma's own status and error kind; anything
 * Chroma accepts (`n_results: 0` included) passes.
 *
 * The checks read a body through a small view. Record bodies are read by the raw scanner
 * (replay/raw-json.ts), which finds ids and counts elements without building JavaScript
 * values for embeddings: a 100 x 384 add parsed with JSON.parse makes tens of thousands of
 * numbers that are garbage at once. A body the scanner refuses is parsed instead, so that
 * its error is JSON.parse's (or it passes, when only the scanner is stricter).
 */
import { LbError, badRequest } from "../errors";
import { elementStride, splitObject, type RawValue } from "../replay/raw-json";

const decoder = new TextDecoder();

const missing = (field: string) =>
  new LbError(422, "ChromaError", `Failed to deserialize the JSON body into the target type: missing field \`${field}\``);
const wrongType = (field: string, expected: string) =>
  new LbError(422, "ChromaError", `Failed to deserialize the JSON body into the target type: ${field}: expected ${expected}`);

/** What the checks need to know of a JSON object body. */
export interface BodyView {
  /** What the field holds; null and absent are the same to Chroma. */
  kind(field: string): "absent" | "array" | "string" | "number" | "other";
  /** Element count of an array field. */
  length(field: string): number;
  /** Whether every element of an array field is a string. */
  allStrings(field: string): boolean;
  /** The value of a number field. */
  number(field: string): number;
}

/** A view over an already parsed body. */
export function parsedView(json: Record<string, unknown>): BodyView {
  return {
    kind(field) {
      const value = json[field];
      if (value === undefined || value === null) return "absent";
      if (Array.isArray(value)) return "array";
      if (typeof value === "string") return "string";
      if (typeof value === "number") return "number";
      return "other";
    },
    length: (field) => (json[field] as unknown[]).length,
    allStrings: (field) => (json[field] as unknown[]).every((v) => typeof v === "string"),
    number: (field) => json[field] as number,
  };
}

/** A view over the raw bytes; null when the scanner cannot read them (the caller parses instead). */
export function rawView(body: Uint8Array): BodyView | null {
  const fields = splitObject(body);
  if (!fields) return null;
  const first = (value: RawValue) => body[value.start];
  const text = (value: RawValue) => decoder.decode(body.subarray(value.start, value.end));
  return {
    kind(field) {
      const value = fields.get(field);
      if (!value) return "absent";
      const c = first(value)!;
      if (c === 0x5b) return "array";
      if (c === 0x22) return "string";
      if (c === 0x6e) return "absent"; // null
      if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return "number";
      return "other";
    },
    length: (field) => (fields.get(field)!.elements?.length ?? 0) / elementStride,
    allStrings(field) {
      const elements = fields.get(field)!.elements ?? [];
      for (let k = 0; k < elements.length; k += elementStride) if (body[elements[k]!] !== 0x22) return false;
      return true;
    },
    number: (field) => Number(text(fields.get(field)!)),
  };
}

function stringArray(body: BodyView, field: string, required: boolean): number | null {
  const kind = body.kind(field);
  if (kind === "absent") {
    if (required) throw missing(field);
    return null;
  }
  if (kind !== "array" || !body.allStrings(field)) throw wrongType(field, "a sequence of strings");
  return body.length(field);
}

function sameLength(body: BodyView, ids: number, field: string) {
  const kind = body.kind(field);
  if (kind === "absent" || kind === "string") return; // a single base64 blob is decoded by Chroma itself
  if (kind !== "array") throw wrongType(field, "a sequence");
  const length = body.length(field);
  if (length !== ids) throw badRequest(`Inconsistent number of records: ${ids} ids but ${length} ${field}`);
}

/** Chroma reads these as unsigned integers: a negative or fractional one fails to deserialize (422). */
function nonNegativeInteger(body: BodyView, field: string) {
  const kind = body.kind(field);
  if (kind === "absent") return;
  const value = kind === "number" ? body.number(field) : NaN;
  if (!Number.isInteger(value) || value < 0) throw wrongType(field, "a non-negative integer");
}

export function validateRecordWrite(op: "add" | "upsert" | "update" | "delete", body: BodyView) {
  const ids = stringArray(body, "ids", op !== "delete");
  if (ids !== null && op !== "delete") {
    for (const field of ["embeddings", "documents", "metadatas", "uris"]) sameLength(body, ids, field);
  }
}

export function validateRecordRead(op: "get" | "query", body: BodyView) {
  if (op === "query") {
    nonNegativeInteger(body, "n_results");
  } else {
    stringArray(body, "ids", false);
    nonNegativeInteger(body, "limit");
    nonNegativeInteger(body, "offset");
  }
}
