/**
 * What each request needs, from its method and path alone (so it is decided before any body
 * is read). Roles follow the table:
 * - read: get, query, count, list and fetch collections, tenants and databases;
 * - write: also add, upsert, update and delete records, create and modify collections;
 * - admin: also delete collections and databases, create and update tenants and databases,
 *   reset, and chroma-lb's own admin endpoints.
 */
import type { Role } from "./tokens";

/** Something chroma-lb records in GET /events when it succeeds (see access.ts `audit`). */
export interface AuditedAction {
  event: "delete_collection" | "delete_database" | "delete_records" | "update_tenant" | "reset" | "token_created" | "token_revoked";
  tenant?: string;
  database?: string;
  /** A collection's name (or the ref the caller gave, when unknown). */
  collection?: string;
  collectionId?: string;
}

export type Need =
  /** Open to anyone: liveness and version of the instances, chroma-lb's read-only status, its pages. */
  | { kind: "public" }
  /**
   * chroma-lb's own admin endpoints (and reset): ADMIN_TOKEN, or a token of role admin for
   * every tenant and database. Open only while ADMIN_TOKEN is unset and the data API is open.
   */
  | { kind: "admin"; what: string; audit?: AuditedAction }
  /** Chroma's API: a token whose role and scope cover the request. */
  | {
      kind: "data";
      role: Role;
      /** What the request does, for the 403's message ("Adding records"). */
      what: string;
      tenant: string | null;
      database: string | null;
      /** Needs every tenant and database (creating a tenant, whose name is in the body). */
      everything?: boolean;
      /** Needs every database of the tenant (creating a database, whose name is in the body). */
      allDatabases?: boolean;
      audit?: AuditedAction;
    };

const publicChromaPaths = new Set(["/api/v2", "/api/v2/heartbeat", "/api/v2/version", "/api/v2/healthcheck", "/api/v2/pre-flight-checks"]);
const publicLbPaths = new Set(["/health", "/status", "/metrics", "/events", "/wal/status", "/dashboard", "/swagger", "/swagger/json"]);
const publicLbPrefixes = ["/dashboard/", "/swagger/"];

const recordWhat: Record<string, string> = {
  add: "Adding records",
  upsert: "Upserting records",
  update: "Updating records",
  delete: "Deleting records",
  get: "Getting records",
  query: "Querying records",
  count: "Counting records",
  fork: "Forking a collection",
};

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/** Paths of chroma-lb's own endpoints that need an admin credential. */
export function isLbAdminPath(path: string): boolean {
  return path.startsWith("/admin/") || path === "/admin" || path === "/wal/cleanup" || path.startsWith("/collection/mappings");
}

/**
 * The need of one request; `path` without its query string. Repeated and trailing slashes
 * are read as one and none (routes do not match them today; the rule must not depend on it).
 */
export function needOf(method: string, rawPath: string): Need {
  const path = rawPath.replace(/\/{2,}/g, "/").replace(/(.)\/+$/, "$1");
  if (!path.startsWith("/api/")) {
    if (isLbAdminPath(path)) return { kind: "admin", what: "This endpoint" };
    if (publicLbPaths.has(path) || publicLbPrefixes.some((p) => path.startsWith(p))) return { kind: "public" };
    // Unknown paths answer 404 whoever asks.
    return { kind: "public" };
  }
  if (publicChromaPaths.has(path)) return { kind: "public" };
  // The v1 API is gone (410) for everyone.
  if (path.startsWith("/api/v1/")) return { kind: "public" };
  if (path === "/api/v2/reset") return { kind: "admin", what: "Reset", audit: { event: "reset" } };
  const any = (what: string): Need => ({ kind: "data", role: "read", what, tenant: null, database: null });
  if (path === "/api/v2/auth/identity") return any("Asking for the caller's identity");
  if (path === "/api/v2/tenants") return { kind: "data", role: "admin", what: "Creating a tenant", tenant: null, database: null, everything: true };

  const parts = path.split("/").slice(3).map(decode); // after "", "api", "v2"
  if (parts[0] !== "tenants" || parts.length < 2) return any("This request");
  const tenant = parts[1]!;
  if (parts.length === 2) {
    return method === "GET"
      ? { kind: "data", role: "read", what: "Reading a tenant", tenant, database: null }
      : { kind: "data", role: "admin", what: "Changing a tenant", tenant, database: null, allDatabases: true, audit: { event: "update_tenant", tenant } };
  }
  if (parts[2] !== "databases") return { kind: "data", role: "read", what: "This request", tenant, database: null };
  if (parts.length === 3) {
    return method === "GET"
      ? { kind: "data", role: "read", what: "Listing databases", tenant, database: null }
      : { kind: "data", role: "admin", what: "Creating a database", tenant, database: null, allDatabases: true };
  }
  const database = parts[3]!;
  const at = { tenant, database };
  if (parts.length === 4) {
    return method === "DELETE"
      ? { kind: "data", role: "admin", what: "Deleting a database", ...at, audit: { event: "delete_database", ...at } }
      : { kind: "data", role: "read", what: "Reading a database", ...at };
  }
  const rest = parts.slice(4);
  if (rest[0] === "collections_count") return { kind: "data", role: "read", what: "Counting collections", ...at };
  if (rest[0] !== "collections") return { kind: "data", role: "read", what: "This request", ...at };
  if (rest.length === 1) {
    return method === "POST"
      ? { kind: "data", role: "write", what: "Creating a collection", ...at }
      : { kind: "data", role: "read", what: "Listing collections", ...at };
  }
  if (rest[1] === "by-id") return { kind: "data", role: "read", what: "Reading a collection", ...at };
  const collection = rest[1]!;
  if (rest.length === 2) {
    if (method === "DELETE") return { kind: "data", role: "admin", what: "Deleting a collection", ...at, audit: { event: "delete_collection", ...at, collection } };
    if (method === "PUT") return { kind: "data", role: "write", what: "Changing a collection", ...at };
    return { kind: "data", role: "read", what: "Reading a collection", ...at };
  }
  const op = rest[2]!;
  const reads = op === "get" || op === "query" || op === "count";
  const writes = op === "add" || op === "upsert" || op === "update" || op === "delete" || op === "fork";
  return {
    kind: "data",
    // Anything else under a collection is no route today; were one added, it would need admin until given its own rule.
    role: reads ? "read" : writes ? "write" : "admin",
    what: recordWhat[op] ?? "This request",
    ...at,
    // Only a delete by filter is recorded (see ChromaApi.recordWrite): deletes by id are ordinary writes.
  };
}
