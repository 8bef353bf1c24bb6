/**
 * Checks made before a request reaches the log or an instance. They catch only inputs that
 * Chroma would refuse anyway, answered with Chroma's own status and error kind; anything
 * Chroma accepts (`n_results: 0` included) passes.
 */
import { LbError, badRequest } from "../errors";

const missing = (field: string) =>
  new LbError(422, "ChromaError", `Failed to deserialize the JSON body into the target type: missing field \`${field}\``);
const wrongType = (field: string, expected: string) =>
  new LbError(422, "ChromaError", `Failed to deserialize the JSON body into the target type: ${field}: expected ${expected}`);

function stringArray(json: Record<string, unknown>, field: string, required: boolean): string[] | null {
  const value = json[field];
  if (value === undefined || value === null) {
    if (required) throw missing(field);
    return null;
  }
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) throw wrongType(field, "a sequence of strings");
  return value as string[];
}

function sameLength(json: Record<string, unknown>, ids: string[], field: string) {
  const value = json[field];
  if (value === undefined || value === null) return;
  if (typeof value === "string") return; // a single base64 blob is decoded by Chroma itself
  if (!Array.isArray(value)) throw wrongType(field, "a sequence");
  if (value.length !== ids.length) {
    throw badRequest(`Inconsistent number of records: ${ids.length} ids but ${value.length} ${field}`);
  }
}

/** Chroma reads these as unsigned integers: a negative or fractional one fails to deserialize (422). */
function nonNegativeInteger(json: Record<string, unknown>, field: string) {
  const value = json[field];
  if (value === undefined || value === null) return;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) throw wrongType(field, "a non-negative integer");
}

export function validateRecordWrite(op: "add" | "upsert" | "update" | "delete", json: Record<string, unknown>) {
  const ids = stringArray(json, "ids", op !== "delete");
  if (ids && op !== "delete") {
    for (const field of ["embeddings", "documents", "metadatas", "uris"]) sameLength(json, ids, field);
  }
}

export function validateRecordRead(op: "get" | "query", json: Record<string, unknown>) {
  if (op === "query") {
    nonNegativeInteger(json, "n_results");
  } else {
    stringArray(json, "ids", false);
    nonNegativeInteger(json, "limit");
    nonNegativeInteger(json, "offset");
  }
}
