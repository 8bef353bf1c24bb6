/**
 * chroma-lb's routes in-process (`app.handle(new Request(...))`) with both instances
 * unreachable and never probed: they start down, so every answer here is chroma-lb's own.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../src/app";
import { isJsonContentType } from "../../src/proxy/api";
import { loadConfig } from "../../src/config";
import { createLogger } from "../../src/observability/log";
import { buildServices, type Services } from "../../src/server";

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface TestApp extends AsyncDisposable {
  services: Services;
  logLines: string[];
  request(path: string, init?: RequestInit): Promise<Response>;
  json(path: string, method: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
}

/** An app over fresh stores in a temp dir, with extra env on top of two unreachable instances. */
async function buildApp(env: Record<string, string> = {}): Promise<TestApp> {
  const dataDir = mkdtempSync(join(tmpdir(), "chroma-lb-app-"));
  const config = loadConfig({ CHROMA_PRIMARY_URL: "http://127.0.0.1:1", CHROMA_REPLICA_URL: "http://127.0.0.1:2", DATA_DIR: dataDir, ...env });
  const logLines: string[] = [];
  const services = await buildServices(config, createLogger("debug", (line) => logLines.push(line)));
  const app = createApp(services);
  const request = (path: string, init?: RequestInit) => app.handle(new Request(`http://lb.test${path}`, init));
  return {
    services,
    logLines,
    request,
    json: (path, method, body, headers = {}) =>
      request(path, { method, headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) }),
    async [Symbol.asyncDispose]() {
      await services.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A collection created while every instance is down: kept in the log and answered 202. */
async function createLoggedCollection(app: TestApp, name: string): Promise<string> {
  const res = await app.json(`${T}/collections`, "POST", { name, configuration: {} });
  expect(res.status).toBe(202);
  return ((await res.json()) as { id: string }).id;
}

describe("status endpoints", () => {
  test("GET /health answers 503 with the documented fields while no instance answers", async () => {
    await using app = await buildApp();
    const res = await app.request("/health");
    expect(res.status).toBe(503);
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(await res.json()).toEqual({
      status: "unhealthy",
      healthy_instances: "0/2",
      service: "chroma-lb",
      architecture: "write-ahead log with ordered replay",
      pending_writes: 0,
    });
  });

  test("GET /metrics is Prometheus text with the instances and the log head", async () => {
    await using app = await buildApp();
    await createLoggedCollection(app, "metrics_probe");
    const res = await app.request("/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
    const text = await res.text();
    expect(text.endsWith("\n")).toBe(true);
    // Every line is a comment or `name{labels} value` (exposition format 0.0.4).
    const sample = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? -?[0-9.e+-]+$/;
    const bad = text.split("\n").filter((line) => line !== "" && !line.startsWith("# HELP ") && !line.startsWith("# TYPE ") && !sample.test(line));
    expect(bad).toEqual([]);
    const lines = text.split("\n");
    expect(lines).toContain('chroma_lb_instance_healthy{instance="primary"} 0');
    expect(lines).toContain('chroma_lb_instance_healthy{instance="replica"} 0');
    expect(lines).toContain('chroma_lb_instance_pending_entries{instance="primary"} 1');
    expect(lines).toContain("chroma_lb_wal_head_position 1");
    expect(lines).toContain("# TYPE chroma_lb_wal_appended_entries_total counter");
  });
});

describe("routing", () => {
  test("an unknown route is 404 with an empty body, as Chroma answers it", async () => {
    await using app = await buildApp();
    for (const path of ["/nope", "/api/v2/nope", `${T}/collections/x/nope`]) {
      const res = await app.request(path);
      expect({ path, status: res.status, body: await res.text() }).toEqual({ path, status: 404, body: "" });
    }
  });

  test("the v1 API answers 410 Gone in Chroma's error shape", async () => {
    await using app = await buildApp();
    for (const [method, path] of [["GET", "/api/v1/x"], ["POST", "/api/v1/collections"]] as const) {
      const res = await app.request(path, { method });
      expect(res.status).toBe(410);
      expect(await res.json()).toEqual({ error: "Gone", message: "The v1 API is gone; use /api/v2" });
    }
  });

  test("reads answer 503 in Chroma's error shape while no instance answers", async () => {
    await using app = await buildApp();
    const res = await app.request("/api/v2/heartbeat");
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: "ServiceUnavailable", message: expect.stringContaining("primary: down, replica: down") });
  });
});

describe("admin", () => {
  test("POST /api/v2/reset is 403 in Chroma's error shape when ALLOW_RESET is unset", async () => {
    await using app = await buildApp();
    const res = await app.request("/api/v2/reset", { method: "POST" });
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({ error: "Forbidden", message: "Reset is disabled by config" });
  });

  test("with ADMIN_TOKEN set, mappings need it as `Authorization: Bearer <token>` or `X-Chroma-Token`", async () => {
    await using app = await buildApp({ ADMIN_TOKEN: "t0ken" });
    const needs = "This endpoint needs an admin token: ADMIN_TOKEN, or a token of role admin for every tenant and database";
    const refused: Array<[Record<string, string>, string]> = [
      [{}, needs],
      [{ authorization: "t0ken" }, needs],
      [{ authorization: "Basic t0ken" }, needs],
      [{ authorization: "Bearer wrong" }, `The token is unknown or revoked. ${needs}`],
      [{ "x-chroma-token": "t0ken2" }, `The token is unknown or revoked. ${needs}`],
    ];
    for (const [headers, message] of refused) {
      const res = await app.request("/collection/mappings", { headers });
      expect({ status: res.status, body: await res.json() }).toEqual({ status: 401, body: { error: "Unauthorized", message } });
    }
    const accepted: Array<Record<string, string>> = [{ authorization: "Bearer t0ken" }, { authorization: "bearer  t0ken" }, { "x-chroma-token": "t0ken" }];
    for (const headers of accepted) {
      const ok = await app.request("/collection/mappings", { headers });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ mappings: [], count: 0 });
    }
    // State changes are guarded the same way; read-only figures are not.
    expect((await app.json("/wal/cleanup", "POST", {})).status).toBe(401);
    expect((await app.request("/wal/status")).status).toBe(200);
  });

  test("without ADMIN_TOKEN, mappings are open", async () => {
    await using app = await buildApp();
    const res = await app.request("/collection/mappings");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ mappings: [], count: 0 });
  });
});

describe("requests refused before the log", () => {
  test("a query with a negative n_results is 422 in Chroma's shape and appends nothing", async () => {
    await using app = await buildApp();
    const id = await createLoggedCollection(app, "docs");
    const head = app.services.wal.headSeq();
    expect(head).toBe(1);
    const res = await app.json(`${T}/collections/${id}/query`, "POST", { query_embeddings: [[0.1, 0.2]], n_results: -1 });
    expect(res.status).toBe(422);
    expect(await res.json()).toEqual({
      error: "ChromaError",
      message: "Failed to deserialize the JSON body into the target type: n_results: expected a non-negative integer",
    });
    expect(app.services.wal.headSeq()).toBe(head);
  });

  test("a negative n_results is refused even before the collection is looked up", async () => {
    await using app = await buildApp();
    const res = await app.json(`${T}/collections/missing/query`, "POST", { query_embeddings: [[0.1]], n_results: -1 });
    expect(res.status).toBe(422);
    expect(app.services.wal.headSeq()).toBe(0);
  });

  test("an add with malformed JSON is 400 and appends nothing", async () => {
    await using app = await buildApp();
    const id = await createLoggedCollection(app, "docs");
    const res = await app.request(`${T}/collections/${id}/add`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"ids": ["a"], "embeddings": [[0.1,',
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: "InvalidArgumentError", message: expect.stringMatching(/^Failed to parse the request body as JSON: /) });
    expect(app.services.wal.headSeq()).toBe(1);
    expect(await app.services.wal.counts()).toEqual({ total: 1, pendingEntries: 1, rejected: 0 });
  });

  test("an add whose content type is not JSON is 415 ChromaError, as Chroma 1.0.5 answers, and appends nothing; one without a content type is read as JSON, as Chroma reads it", async () => {
    await using app = await buildApp();
    const id = await createLoggedCollection(app, "docs");
    const body = () => new TextEncoder().encode(JSON.stringify({ ids: ["a"], embeddings: [[0.1, 0.2]] }));
    const notJson = ["text/plain", "", "text/json", "application/jsonx", "multipart/form-data; boundary=x"];
    for (const contentType of notJson) {
      const res = await app.request(`${T}/collections/${id}/add`, { method: "POST", headers: { "content-type": contentType }, body: body() });
      expect({ contentType, status: res.status, body: await res.json() }).toEqual({
        contentType,
        status: 415,
        body: { error: "ChromaError", message: "Expected request with `Content-Type: application/json`" },
      });
    }
    expect(app.services.wal.headSeq()).toBe(1);
    // A byte body gets no Content-Type of its own; no instance answers here, so the add is logged (202).
    expect(new Request("http://lb.test/", { method: "POST", body: body() }).headers.get("content-type")).toBeNull();
    expect((await app.request(`${T}/collections/${id}/add`, { method: "POST", body: body() })).status).toBe(202);
    expect(app.services.wal.headSeq()).toBe(2);
  });

  test("JSON content types are those Chroma accepts: application/json and application/*+json, any case and parameters", () => {
    const accepted = [null, "application/json", "APPLICATION/JSON", "application/json; charset=utf-8", " application/json", "application/vnd.api+json", "application/json-patch+json"];
    const refused = ["", "text/plain", "text/json", "application/jsonx", "application/x-json", "json"];
    expect(accepted.map(isJsonContentType)).toEqual(accepted.map(() => true));
    expect(refused.map(isJsonContentType)).toEqual(refused.map(() => false));
  });

  test("an add without ids is 422 and a length mismatch 400, neither logged", async () => {
    await using app = await buildApp();
    const id = await createLoggedCollection(app, "docs");
    const missing = await app.json(`${T}/collections/${id}/add`, "POST", { embeddings: [[0.1]] });
    expect(missing.status).toBe(422);
    expect(await missing.json()).toEqual({
      error: "ChromaError",
      message: "Failed to deserialize the JSON body into the target type: missing field `ids`",
    });
    const mismatch = await app.json(`${T}/collections/${id}/upsert`, "POST", { ids: ["a", "b"], embeddings: [[0.1]] });
    expect(mismatch.status).toBe(400);
    expect(await mismatch.json()).toEqual({ error: "InvalidArgumentError", message: "Inconsistent number of records: 2 ids but 1 embeddings" });
    expect(app.services.wal.headSeq()).toBe(1);
  });

  test("a record write to an unknown collection is 404 NotFoundError and appends nothing", async () => {
    await using app = await buildApp();
    for (const ref of ["nothing_here", "11111111-2222-4333-8444-555555555555"]) {
      const res = await app.json(`${T}/collections/${ref}/add`, "POST", { ids: ["a"], embeddings: [[0.1, 0.2]] });
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ error: "NotFoundError", message: `Collection [${ref}] does not exists.` });
    }
    expect(app.services.wal.headSeq()).toBe(0);
  });

  test("a collection of another database is not found by its id", async () => {
    await using app = await buildApp();
    const id = await createLoggedCollection(app, "docs");
    const res = await app.json(`/api/v2/tenants/default_tenant/databases/other/collections/${id}/add`, "POST", { ids: ["a"], embeddings: [[0.1]] });
    expect(res.status).toBe(404);
    expect(app.services.wal.headSeq()).toBe(1);
  });
});

describe("writes while every instance is down", () => {
  test("with ACCEPT_WRITES_WHEN_ALL_DOWN (default) a collection is created in the log: 202, logged, with its id", async () => {
    await using app = await buildApp();
    const res = await app.json(`${T}/collections`, "POST", { name: "docs", configuration: {}, metadata: { owner: "team" } });
    expect(res.status).toBe(202);
    expect(res.headers.get("x-chroma-lb-accepted")).toBe("logged");
    expect(res.headers.get("x-chroma-lb-position")).toBe("1");
    const body = (await res.json()) as { id: string; [field: string]: unknown };
    expect(body).toEqual({
      id: expect.stringMatching(uuidPattern),
      name: "docs",
      configuration_json: {},
      metadata: { owner: "team" },
      dimension: null,
      tenant: "default_tenant",
      database: "default_database",
      log_position: 0,
      version: 0,
    });

    // Kept for every instance, ready to replay when they return.
    const { wal } = app.services;
    expect((await wal.nextPending("primary", body.id, 10)).map((e) => ({ seq: e.seq, op: e.op, state: e.state, name: e.name }))).toEqual([
      { seq: 1, op: "create_collection", state: "ready", name: "docs" },
    ]);
    expect((await wal.nextPending("replica", body.id, 10)).map((e) => e.seq)).toEqual([1]);

    // Clients may use the id (and the name) at once.
    const mappings = (await (await app.request("/collection/mappings")).json()) as { mappings: Array<Record<string, unknown>>; count: number };
    expect(mappings.count).toBe(1);
    expect(mappings.mappings[0]).toMatchObject({ collection_name: "docs", collection_id: body.id, complete: false, missing_on: ["primary", "replica"] });

    const write = await app.json(`${T}/collections/${body.id}/add`, "POST", { ids: ["a"], embeddings: [[0.1, 0.2]], documents: ["hello"] });
    expect(write.status).toBe(202);
    expect([write.headers.get("x-chroma-lb-accepted"), write.headers.get("x-chroma-lb-position")]).toEqual(["logged", "2"]);
    expect(await write.json()).toEqual({});
    const byName = await app.json(`${T}/collections/docs/upsert`, "POST", { ids: ["b"], embeddings: [[0.3, 0.4]] });
    expect([byName.status, byName.headers.get("x-chroma-lb-position")]).toEqual([202, "3"]);
    expect((await wal.nextPending("replica", body.id, 10)).map((e) => e.op)).toEqual(["create_collection", "add", "upsert"]);
    // Each kept write is logged as an event, never with its body.
    expect(app.logLines.filter((line) => line.includes("kept in the log")).length).toBe(3);
    expect(app.logLines.filter((line) => line.includes("hello") || line.includes("0.3"))).toEqual([]);

    // A second create of the same name is refused with Chroma's own answer.
    const again = await app.json(`${T}/collections`, "POST", { name: "docs" });
    expect(again.status).toBe(409);
    expect(await again.json()).toEqual({ error: "ChromaError", message: "Collection [docs] already exists" });
    expect(wal.headSeq()).toBe(3);
  });

  test("with ACCEPT_WRITES_WHEN_ALL_DOWN=false a create is 503 and the log holds no ready entry", async () => {
    await using app = await buildApp({ ACCEPT_WRITES_WHEN_ALL_DOWN: "false" });
    const res = await app.json(`${T}/collections`, "POST", { name: "docs", configuration: {} });
    expect(res.status).toBe(503);
    expect(res.headers.get("x-chroma-lb-accepted")).toBeNull();
    expect(await res.json()).toEqual({ error: "ServiceUnavailable", message: expect.stringContaining("No Chroma instance can serve writes") });

    const { wal } = app.services;
    expect(await wal.counts()).toEqual({ total: 1, pendingEntries: 0, rejected: 1 });
    expect([wal.pendingCount("primary"), wal.pendingCount("replica")]).toEqual([0, 0]);
    expect(await wal.pendingPartitions("primary", 10)).toEqual([]);
    expect(await wal.pendingPartitions("replica", 10)).toEqual([]);
    // The name is free again: nothing maps to the refused collection.
    expect(await (await app.request("/collection/mappings")).json()).toEqual({ mappings: [], count: 0 });
  });
});

test("a request during which Postgres stops answering is answered 503 with Retry-After, never 500", async () => {
  await using app = await buildApp();
  // What drizzle throws when the mapping store's connection closes: its own error, the driver's as the cause.
  const dropped = Object.assign(new Error("write CONNECTION_CLOSED 127.0.0.1:5432"), { code: "CONNECTION_CLOSED" });
  app.services.collections.create = async () => {
    throw new Error('Failed query: insert into "chroma_lb_collections"', { cause: dropped });
  };
  const res = await app.json(`${T}/collections`, "POST", { name: "during_outage" });
  expect(res.status).toBe(503);
  expect(res.headers.get("retry-after")).toBe("5");
  const body = (await res.json()) as { error: string; message: string };
  expect(body.error).toBe("ServiceUnavailable");
  expect(body.message).toStartWith("Postgres did not answer during this request (write CONNECTION_CLOSED");
});
