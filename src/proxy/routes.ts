/**
 * Every route of Chroma's v2 API, declared one by one so the OpenAPI document describes
 * each. Bodies are not parsed by the framework (`parse: "none"`): they are read as bytes,
 * checked, logged and forwarded unchanged, within the body bounds of inflight.ts; a write
 * is refused (507, Retry-After) before its body is read while the log is at WAL_MAX_DISK_MB or
 * its file system is full.
 */
import { Elysia, t, type DocumentDecoration, type TSchema } from "elysia";
import { databasePath } from "../chroma/paths";
import { TRACE_ID_HEADER, TRACE_ID_NONE, errorResponse, fileSystemFull, insufficientStorage } from "../errors";
import type { Services } from "../services";
import type { ChromaApi, RecordReadOp, RecordWriteOp } from "./api";
import {
  AddRecordsModel,
  CollectionModel,
  CreateCollectionModel,
  DatabaseModel,
  exampleCollectionName,
  DeleteRecordsModel,
  EmptyModel,
  ErrorModel,
  GetRecordsModel,
  GetResultModel,
  ModifyCollectionModel,
  NameModel,
  QueryRecordsModel,
  QueryResultModel,
  TenantModel,
} from "./models";
import { withBody } from "./inflight";

const T = "/api/v2/tenants/:tenant/databases/:database";

/**
 * Path parameters as documented: tenant and database default to Chroma's defaults and the
 * collection to the name of the create example, so "Try it out" in the Swagger UI works
 * as it comes (create, then add, then query).
 */
const Tenant = t.String({ default: "default_tenant" });
const Database = t.String({ default: "default_database" });
const pathParams = {
  t: t.Object({ tenant: Tenant }),
  td: t.Object({ tenant: Tenant, database: Database }),
  tdc: t.Object({ tenant: Tenant, database: Database, collection: t.String({ default: exampleCollectionName, description: "the collection's name or id" }) }),
  tdi: t.Object({ tenant: Tenant, database: Database, id: t.String({ format: "uuid" }) }),
};

type PathParams = typeof pathParams;
type WithParams<K> = K extends keyof PathParams ? { params: PathParams[K] } : {};

function doc<K extends keyof PathParams | undefined = undefined>(
  summary: string,
  options: {
    tag?: string;
    body?: TSchema;
    ok?: TSchema;
    okStatus?: number;
    description?: string;
    /** Which path parameters the route has. */
    at?: K;
    /** Open to anyone, whether the data API needs a token or not. */
    open?: boolean;
  } = {},
): { detail: DocumentDecoration } & WithParams<K> {
  const json = (schema: TSchema) => ({ content: { "application/json": { schema } } });
  const responses: Record<string, unknown> = {
    [String(options.okStatus ?? 200)]: { description: "Chroma's answer", ...(options.ok ? json(options.ok) : {}) },
    "4XX": { description: "Chroma's or chroma-lb's refusal, in Chroma's error shape (401: no token, or an unknown or revoked one; 403: a token without the role or the tenant and database)", ...json(ErrorModel) },
    "503": { description: "No instance can serve the request", ...json(ErrorModel) },
  };
  return {
    ...(options.at ? { params: pathParams[options.at as keyof PathParams] } : {}),
    detail: {
      summary,
      description: options.description,
      tags: [options.tag ?? "Chroma API"],
      ...(options.body ? { requestBody: { required: true, ...json(options.body) } } : {}),
      responses,
      ...(options.open ? { security: [] } : {}),
    } as DocumentDecoration,
  } as { detail: DocumentDecoration } & WithParams<K>;
}

const position =
  "Writes go through chroma-lb's log; the answer carries `X-Chroma-LB-Position`. A read may send it back as `X-Chroma-LB-Min-Position`.";

/** What the routes need besides the API: the bounds on bodies and on the log's disk. */
export type RouteDeps = Pick<Services, "config" | "wal" | "inflight">;

export function chromaRoutes(api: ChromaApi, deps: RouteDeps) {
  const limits = {
    budget: deps.inflight,
    maxBodyBytes: deps.config.maxBodyBytes,
    minBytesPerS: deps.config.bodyMinBytesPerS,
    rateWindowMs: deps.config.bodyRateWindowMs,
  };
  /** The answer to a write while the log is at WAL_MAX_DISK_MB, else null. */
  const logFull = (): Response | null => {
    const bytesMax = deps.config.walMaxDiskBytes;
    if (!deps.wal.diskFull(bytesMax)) return null;
    if (deps.wal.storageIsFull) return errorResponse(fileSystemFull());
    return errorResponse(
      insufficientStorage(
        `chroma-lb's write-ahead log holds ${deps.wal.diskBytes()} bytes on disk, its bound (WAL_MAX_DISK_MB=${bytesMax / 1024 / 1024}), ` +
          "so new writes are refused until it shrinks; every write already acknowledged is kept and will reach every instance. " +
          "Wait for replay to bring every instance up to date and for retention (WAL_RETENTION_HOURS) to remove applied entries, " +
          "remove them sooner with POST /wal/cleanup, or raise WAL_MAX_DISK_MB.",
      ),
    );
  };
  /** A read with a body, within the body bounds. */
  const read = (request: Request, handle: (body: Uint8Array) => Promise<Response>) => withBody(request, limits, handle);
  /** A write with a body: the log's bound first, then the body bounds. */
  const write = (request: Request, handle: (body: Uint8Array) => Promise<Response>) => logFull() ?? withBody(request, limits, handle);
  /** A write without a body (deletes) still adds to the log. */
  const writeNoBody = (handle: () => Promise<Response>) => logFull() ?? handle();

  const passthrough = (path: string) => ({ request }: { request: Request }) => api.passthrough(request, path + new URL(request.url).search);
  const raw = { parse: "none" as const };

  const records = (op: RecordWriteOp) =>
    ({ request, params }: { request: Request; params: { tenant: string; database: string; collection: string } }) =>
      write(request, (b) => api.recordWrite(request, params.tenant, params.database, params.collection, op, b));
  const reads = (op: RecordReadOp) =>
    ({ request, params }: { request: Request; params: { tenant: string; database: string; collection: string } }) =>
      op === "count"
        ? api.recordRead(request, params.tenant, params.database, params.collection, op, null)
        : read(request, (b) => api.recordRead(request, params.tenant, params.database, params.collection, op, b));
  const base = (p: { tenant: string; database: string }) => databasePath(p.tenant, p.database);

  return new Elysia({ name: "chroma-api" })
    .get("/api/v2/heartbeat", passthrough("/api/v2/heartbeat"), doc("Heartbeat of a serving instance", { open: true, ok: t.Object({ "nanosecond heartbeat": t.Number() }) }))
    // Chroma answers its API root as the heartbeat; the Python async client's heartbeat() calls it.
    .get("/api/v2", ({ request }) => (new URL(request.url).pathname === "/api/v2" ? api.passthrough(request, "/api/v2") : chromaNotFound()), doc("Heartbeat of a serving instance (Chroma's alias of /api/v2/heartbeat)", { open: true, ok: t.Object({ "nanosecond heartbeat": t.Number() }) }))
    .get("/api/v2/version", passthrough("/api/v2/version"), doc("Chroma version", { open: true, ok: t.String() }))
    .get("/api/v2/healthcheck", passthrough("/api/v2/healthcheck"), doc("Chroma health check", { open: true }))
    .get("/api/v2/pre-flight-checks", passthrough("/api/v2/pre-flight-checks"), doc("Pre-flight checks", { open: true, ok: t.Object({ max_batch_size: t.Integer(), supports_base64_encoding: t.Boolean() }) }))
    .get(
      "/api/v2/auth/identity",
      ({ request }) => api.identity(request),
      doc("Caller identity: the token's principal, tenant and databases (an instance answers while the data API is open and no token is sent)", {
        ok: t.Object({ user_id: t.String(), tenant: t.String(), databases: t.Array(t.String()) }),
      }),
    )
    .post("/api/v2/reset", ({ request }) => api.reset(request), { ...raw, ...doc("Reset every instance and chroma-lb's state (needs ALLOW_RESET=true)", { ok: t.Boolean() }) })
    .post(
      "/api/v2/tenants",
      ({ request }) => write(request, (body) => api.metaWrite(request, "create_tenant", nameIn(body) ?? "", "", body)),
      { ...raw, ...doc("Create a tenant on every instance", { body: NameModel, ok: EmptyModel, description: position }) },
    )
    .get("/api/v2/tenants/:tenant", ({ request, params }) => api.catalogRead(request, () => `/api/v2/tenants/${encodeURIComponent(params.tenant)}`, null), doc("Get a tenant", { at: "t", ok: TenantModel }))
    .patch(
      "/api/v2/tenants/:tenant",
      ({ request, params }) => write(request, (body) => api.metaWrite(request, "update_tenant", params.tenant, "", body)),
      { ...raw, ...doc("Update a tenant on every instance", { at: "t", body: t.Record(t.String(), t.Any()), description: position }) },
    )
    .get(
      "/api/v2/tenants/:tenant/databases",
      ({ request, params }) => api.listDatabases(request, params.tenant),
      doc("List databases (those the caller's token may use)", { at: "t", ok: t.Array(DatabaseModel) }),
    )
    .post(
      "/api/v2/tenants/:tenant/databases",
      ({ request, params }) => write(request, (body) => api.metaWrite(request, "create_database", params.tenant, nameIn(body) ?? "", body)),
      { ...raw, ...doc("Create a database on every instance", { at: "t", body: NameModel, ok: EmptyModel, description: position }) },
    )
    .get(T, ({ request, params }) => api.catalogRead(request, () => base(params), null), doc("Get a database", { at: "td", ok: DatabaseModel }))
    .delete(T, ({ request, params }) => writeNoBody(() => api.metaWrite(request, "delete_database", params.tenant, params.database, null)), {
      ...raw,
      ...doc("Delete a database on every instance", { at: "td", ok: EmptyModel, description: position }),
    })
    .get(
      `${T}/collections`,
      ({ request, params }) => api.listCollections(request, params.tenant, params.database),
      doc("List collections (limit, offset)", { at: "td", ok: t.Array(CollectionModel) }),
    )
    .post(
      `${T}/collections`,
      ({ request, params }) => write(request, (body) => api.createCollection(request, params.tenant, params.database, body)),
      { ...raw, ...doc("Create a collection on every instance", { at: "td", body: CreateCollectionModel, ok: CollectionModel, description: position }) },
    )
    .get(`${T}/collections_count`, ({ request, params }) => api.catalogRead(request, () => `${base(params)}/collections_count`, null), doc("Count collections", { at: "td", ok: t.Integer() }))
    .get(
      `${T}/collections/by-id/:id`,
      ({ request, params }) => api.getCollectionById(request, params.tenant, params.database, params.id),
      doc("Get a collection by id (answered from chroma-lb's mappings)", { at: "tdi", ok: CollectionModel }),
    )
    .get(
      `${T}/collections/:collection`,
      ({ request, params }) => api.getCollection(request, params.tenant, params.database, params.collection),
      doc("Get a collection by name or id", { at: "tdc", ok: CollectionModel }),
    )
    .put(
      `${T}/collections/:collection`,
      ({ request, params }) => write(request, (body) => api.modifyCollection(request, params.tenant, params.database, params.collection, body)),
      { ...raw, ...doc("Rename a collection or replace its metadata (409 on an existing name)", { at: "tdc", body: ModifyCollectionModel, ok: EmptyModel, description: position }) },
    )
    .delete(`${T}/collections/:collection`, ({ request, params }) => writeNoBody(() => api.deleteCollection(request, params.tenant, params.database, params.collection)), {
      ...raw,
      ...doc("Delete a collection on every instance (never a protected one)", { at: "tdc", ok: EmptyModel, description: position }),
    })
    .post(`${T}/collections/:collection/add`, records("add"), { ...raw, ...doc("Add records", { at: "tdc", body: AddRecordsModel, ok: EmptyModel, okStatus: 201, description: position }) })
    .post(`${T}/collections/:collection/upsert`, records("upsert"), { ...raw, ...doc("Upsert records", { at: "tdc", body: AddRecordsModel, ok: EmptyModel, description: position }) })
    .post(`${T}/collections/:collection/update`, records("update"), { ...raw, ...doc("Update records", { at: "tdc", body: AddRecordsModel, ok: EmptyModel, description: position }) })
    .post(`${T}/collections/:collection/delete`, records("delete"), { ...raw, ...doc("Delete records by ids or filter", { at: "tdc", body: DeleteRecordsModel, ok: EmptyModel, description: position }) })
    .post(`${T}/collections/:collection/get`, reads("get"), { ...raw, ...doc("Get records", { at: "tdc", body: GetRecordsModel, ok: GetResultModel, description: position }) })
    .post(`${T}/collections/:collection/query`, reads("query"), { ...raw, ...doc("Query nearest records", { at: "tdc", body: QueryRecordsModel, ok: QueryResultModel, description: position }) })
    .get(`${T}/collections/:collection/count`, reads("count"), doc("Count records", { at: "tdc", ok: t.Integer() }))
    .post(`${T}/collections/:collection/fork`, () => api.unsupported("Forking a collection is not supported through chroma-lb"), {
      ...raw,
      ...doc("Fork a collection (not supported through chroma-lb: 501)", { at: "tdc" }),
    });
}

/** Chroma's answer to a path it has no route for (`/api/v2/`, for one): 404, empty body. */
function chromaNotFound(): Response {
  return new Response(null, { status: 404, headers: { [TRACE_ID_HEADER]: TRACE_ID_NONE } });
}

function nameIn(body: Uint8Array): string | null {
  try {
    const json = JSON.parse(new TextDecoder().decode(body));
    return typeof json?.name === "string" ? json.name : null;
  } catch {
    return null;
  }
}
