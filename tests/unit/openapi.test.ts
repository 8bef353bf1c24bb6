/**
 * The committed OpenAPI document is the one the app serves, and it describes every route of
 * Chroma's v2 API and every chroma-lb endpoint.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { renderOpenApi } from "../../src/openapi";

const committedPath = join(import.meta.dir, "..", "..", "openapi", "openapi.json");

interface Operation {
  parameters?: Array<{ name: string; in: string; schema?: { default?: unknown } }>;
  responses?: Record<string, { content?: Record<string, { schema?: unknown }> }>;
  security?: unknown[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: { type?: string; properties?: Record<string, unknown>; required?: string[] } }> };
  tags?: string[];
}
type Document = {
  paths: Record<string, Record<string, Operation>>;
  security?: unknown[];
  components?: { securitySchemes?: Record<string, unknown> };
};

let rendered: string;
let document: Document;

beforeAll(async () => {
  rendered = await renderOpenApi();
  document = JSON.parse(rendered);
});

const T = "/api/v2/tenants/{tenant}/databases/{database}";
const C = `${T}/collections/{collection}`;

/** Every route of Chroma's v2 API, as "METHOD path". */
const chromaRoutes = [
  "GET /api/v2",
  "GET /api/v2/heartbeat",
  "GET /api/v2/version",
  "GET /api/v2/healthcheck",
  "GET /api/v2/pre-flight-checks",
  "GET /api/v2/auth/identity",
  "POST /api/v2/reset",
  "POST /api/v2/tenants",
  "GET /api/v2/tenants/{tenant}",
  "PATCH /api/v2/tenants/{tenant}",
  "GET /api/v2/tenants/{tenant}/databases",
  "POST /api/v2/tenants/{tenant}/databases",
  `GET ${T}`,
  `DELETE ${T}`,
  `GET ${T}/collections`,
  `POST ${T}/collections`,
  `GET ${T}/collections_count`,
  `GET ${T}/collections/by-id/{id}`,
  `GET ${C}`,
  `PUT ${C}`,
  `DELETE ${C}`,
  `POST ${C}/add`,
  `POST ${C}/upsert`,
  `POST ${C}/update`,
  `POST ${C}/delete`,
  `POST ${C}/get`,
  `POST ${C}/query`,
  `GET ${C}/count`,
  `POST ${C}/fork`,
];

const statusRoutes = ["GET /health", "GET /status", "GET /wal/status", "GET /metrics", "GET /events"];

const adminRoutes = [
  "POST /wal/cleanup",
  "POST /admin/wal/{seq}/skip",
  "GET /collection/mappings",
  "GET /admin/collection_mappings",
  "DELETE /collection/mappings/{name}",
  "POST /admin/create_mapping",
  "POST /admin/adopt",
  "GET /admin/instances",
  "POST /admin/instances/{name}/health",
  "POST /admin/instances/{name}/maintenance",
  "GET /admin/consistency",
  "POST /admin/instances/{name}/resync",
  "POST /admin/tokens",
  "GET /admin/tokens",
  "DELETE /admin/tokens/{id}",
];

const operations = (doc: Document) =>
  Object.entries(doc.paths)
    .flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`))
    .sort();

const operation = (route: string): Operation => {
  const [method, path] = route.split(" ") as [string, string];
  return document.paths[path]![method.toLowerCase()]!;
};

describe("openapi/openapi.json", () => {
  test("equals what the app serves, byte for byte", () => {
    const committed = readFileSync(committedPath, "utf8");
    if (committed !== rendered) {
      throw new Error("openapi/openapi.json is stale: run `bun run openapi` and commit the result");
    }
    expect(committed).toBe(rendered);
  });

  test("lists every Chroma route and every chroma-lb endpoint, and nothing else", () => {
    expect(operations(document)).toEqual([...chromaRoutes, ...statusRoutes, ...adminRoutes].sort());
  });

  test("tags each endpoint with its group", () => {
    const tags = (routes: string[]) => [...new Set(routes.flatMap((r) => operation(r).tags ?? []))];
    expect(tags(chromaRoutes)).toEqual(["Chroma API"]);
    expect(tags(statusRoutes)).toEqual(["chroma-lb status"]);
    expect(tags(adminRoutes)).toEqual(["chroma-lb admin"]);
  });

  test("describes the JSON body of every record write", () => {
    const bodies = Object.fromEntries(
      ["add", "upsert", "update", "delete"].map((op) => {
        const body = operation(`POST ${C}/${op}`).requestBody;
        const schema = body?.content?.["application/json"]?.schema;
        return [op, { required: body?.required, type: schema?.type, fields: Object.keys(schema?.properties ?? {}).sort(), requiredFields: schema?.required ?? [] }];
      }),
    );
    const records = { required: true, type: "object", fields: ["documents", "embeddings", "ids", "metadatas", "uris"], requiredFields: ["ids"] };
    expect(bodies).toEqual({
      add: records,
      upsert: records,
      update: records,
      delete: { required: true, type: "object", fields: expect.arrayContaining(["ids", "where", "where_document"]), requiredFields: [] },
    });
  });

  test("describes the JSON body of collection, tenant, database and read requests", () => {
    for (const route of [`POST ${T}/collections`, `PUT ${C}`, "POST /api/v2/tenants", "POST /api/v2/tenants/{tenant}/databases", `POST ${C}/get`, `POST ${C}/query`]) {
      const schema = operation(route).requestBody?.content?.["application/json"]?.schema;
      expect({ route, type: schema?.type }).toEqual({ route, type: "object" });
    }
  });

  test("declares both token schemes, so the Swagger UI's Authorize works; only liveness and version are open", () => {
    expect(document.components?.securitySchemes).toEqual({
      bearer: { type: "http", scheme: "bearer", description: expect.any(String) },
      chromaToken: { type: "apiKey", in: "header", name: "X-Chroma-Token", description: expect.any(String) },
    });
    expect(document.security).toEqual([{ bearer: [] }, { chromaToken: [] }]);
    const open = [...chromaRoutes, ...statusRoutes, ...adminRoutes].filter((r) => operation(r).security?.length === 0);
    expect(open).toEqual(["GET /api/v2", "GET /api/v2/heartbeat", "GET /api/v2/version", "GET /api/v2/healthcheck", "GET /api/v2/pre-flight-checks", ...statusRoutes]);
  });

  test("every admin operation documents its success, 401 and 403 with schemas, and 404 where it names something", () => {
    for (const route of adminRoutes) {
      const responses = operation(route).responses ?? {};
      const schemaOf = (status: string) => responses[status]?.content?.["application/json"]?.schema;
      const success = Object.keys(responses).filter((s) => /^20[0-2]$/.test(s));
      expect({ route, success: success.length > 0, successSchemas: success.every((s) => schemaOf(s) !== undefined), e401: schemaOf("401") !== undefined, e403: schemaOf("403") !== undefined }).toEqual({
        route,
        success: true,
        successSchemas: true,
        e401: true,
        e403: true,
      });
      if (route.includes("{name}") || route.includes("{id}") || route.includes("{seq}")) expect({ route, e404: schemaOf("404") !== undefined }).toEqual({ route, e404: true });
    }
  });

  test("tenant and database path parameters default to Chroma's defaults, and the collection to the create example's name", () => {
    const defaults = (route: string) => Object.fromEntries((operation(route).parameters ?? []).filter((p) => p.in === "path").map((p) => [p.name, p.schema?.default]));
    const create = operation(`POST ${T}/collections`).requestBody?.content?.["application/json"]?.schema as { example?: { name?: string } };
    for (const route of [`POST ${C}/add`, `POST ${C}/query`, `POST ${C}/get`]) {
      expect(defaults(route)).toEqual({ tenant: "default_tenant", database: "default_database", collection: create.example!.name });
    }
    expect(defaults(`POST ${T}/collections`)).toEqual({ tenant: "default_tenant", database: "default_database" });
  });
});
