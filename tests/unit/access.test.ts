/**
 * Access decisions without Chroma: what each route needs, the open and closed data API,
 * tokens in both stores (SQLite, and Postgres on a database of its own), a revoke seen by
 * another node at its next reload and never undone by a reload already under way, and no
 * secret in any log line.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { AccessControl } from "../../src/auth/access";
import { needOf } from "../../src/auth/rules";
import { PostgresTokenStore, SqliteTokenStore, type TokenStore } from "../../src/auth/token-store";
import { hashSecret, type TokenRecord } from "../../src/auth/tokens";
import { createApp } from "../../src/app";
import { loadConfig } from "../../src/config";
import { openLocalStore, openMirrorStore } from "../../src/db";
import { RecentEvents } from "../../src/observability/events";
import { createLogger } from "../../src/observability/log";
import { buildServices } from "../../src/server";

const T = "/api/v2/tenants/default_tenant/databases/default_database";

describe("what each request needs", () => {
  test("roles by route: read for reads, write for record and collection changes, admin for deletes of collections and databases, tenants and reset", () => {
    const role = (method: string, path: string) => {
      const need = needOf(method, path);
      return need.kind === "data" ? need.role : need.kind;
    };
    expect({
      heartbeat: role("GET", "/api/v2/heartbeat"),
      apiRoot: role("GET", "/api/v2"),
      preflight: role("GET", "/api/v2/pre-flight-checks"),
      identity: role("GET", "/api/v2/auth/identity"),
      status: role("GET", "/status"),
      swagger: role("GET", "/swagger/json"),
      mappings: role("GET", "/collection/mappings"),
      tokens: role("POST", "/admin/tokens"),
      reset: role("POST", "/api/v2/reset"),
      createTenant: role("POST", "/api/v2/tenants"),
      getTenant: role("GET", "/api/v2/tenants/acme"),
      updateTenant: role("PATCH", "/api/v2/tenants/acme"),
      listDatabases: role("GET", "/api/v2/tenants/acme/databases"),
      createDatabase: role("POST", "/api/v2/tenants/acme/databases"),
      getDatabase: role("GET", T),
      deleteDatabase: role("DELETE", T),
      listCollections: role("GET", `${T}/collections`),
      countCollections: role("GET", `${T}/collections_count`),
      createCollection: role("POST", `${T}/collections`),
      byId: role("GET", `${T}/collections/by-id/x`),
      getCollection: role("GET", `${T}/collections/docs`),
      modifyCollection: role("PUT", `${T}/collections/docs`),
      deleteCollection: role("DELETE", `${T}/collections/docs`),
      add: role("POST", `${T}/collections/docs/add`),
      upsert: role("POST", `${T}/collections/docs/upsert`),
      update: role("POST", `${T}/collections/docs/update`),
      delete: role("POST", `${T}/collections/docs/delete`),
      get: role("POST", `${T}/collections/docs/get`),
      query: role("POST", `${T}/collections/docs/query`),
      count: role("GET", `${T}/collections/docs/count`),
    }).toEqual({
      heartbeat: "public",
      apiRoot: "public",
      preflight: "public",
      identity: "read",
      status: "public",
      swagger: "public",
      mappings: "admin",
      tokens: "admin",
      reset: "admin",
      createTenant: "admin",
      getTenant: "read",
      updateTenant: "admin",
      listDatabases: "read",
      createDatabase: "admin",
      getDatabase: "read",
      deleteDatabase: "admin",
      listCollections: "read",
      countCollections: "read",
      createCollection: "write",
      byId: "read",
      getCollection: "read",
      modifyCollection: "write",
      deleteCollection: "admin",
      add: "write",
      upsert: "write",
      update: "write",
      delete: "write",
      get: "read",
      query: "read",
      count: "read",
    });
    // Trailing and repeated slashes change nothing; an unknown operation needs admin.
    expect(role("DELETE", `${T}/collections/docs/`)).toBe("admin");
    expect(role("DELETE", `${T}//collections//docs`)).toBe("admin");
    expect(role("POST", `${T}/collections/docs/add/`)).toBe("write");
    expect(role("POST", `${T}/collections/docs/something-new`)).toBe("admin");
    // Encoded path parts are decoded before they are compared with a scope.
    expect(needOf("GET", "/api/v2/tenants/a%20b/databases/d%2Fe/collections")).toMatchObject({ tenant: "a b", database: "d/e" });
  });
});

const record = (id: string, secret: string, over: Partial<TokenRecord> = {}): TokenRecord => ({
  id,
  name: id,
  role: "read",
  tenants: ["*"],
  databases: ["*"],
  hash: hashSecret(secret),
  createdAtMs: 1_000,
  revokedAtMs: null,
  ...over,
});

function accessOver(tokens: TokenStore, config: Partial<ConstructorParameters<typeof AccessControl>[0]["config"]> = {}) {
  return new AccessControl({
    config: { adminToken: null, authRequired: false, declaredTokens: [], ...config },
    log: createLogger("error"),
    events: new RecentEvents(),
    collections: { resolve: () => undefined },
    tokens,
  });
}

const get = (path: string, headers: Record<string, string> = {}) => new Request(`http://lb.test${path}`, { headers });

/** The same checks against either store: what a cluster of nodes sharing it would see. */
async function storeContract(open: () => Promise<{ a: TokenStore; b: TokenStore } & AsyncDisposable>) {
  await using stores = await open();
  const nodeA = accessOver(stores.a);
  const nodeB = accessOver(stores.b);
  await Promise.all([nodeA.refreshOnce(), nodeB.refreshOnce()]);
  expect([nodeA.open, nodeB.open]).toEqual([true, true]);

  const { record: made, secret } = await nodeA.createToken({ name: "cms", role: "write", tenants: ["default_tenant"] }, "test");
  expect(await stores.b.findByHash(hashSecret(secret))).toEqual(made);
  expect(await stores.b.findByHash(hashSecret("other"))).toBeUndefined();
  // Node A knows at once; node B at its next reload.
  expect(nodeA.check(get(`${T}/collections`, { authorization: `Bearer ${secret}` }), `${T}/collections`)).toBeNull();
  expect(nodeB.check(get(`${T}/collections`, { authorization: `Bearer ${secret}` }), `${T}/collections`)).toBeNull(); // still open there
  await nodeB.refreshOnce();
  expect(nodeB.open).toBe(false);
  expect(nodeB.check(get(`${T}/collections`), `${T}/collections`)?.status).toBe(401);
  expect(nodeB.check(get(`${T}/collections`, { "x-chroma-token": secret }), `${T}/collections`)).toBeNull();

  expect(await nodeB.revokeToken(made.id, "test")).toEqual({ revoked: true, atMs: expect.any(Number) });
  expect(await nodeB.revokeToken(made.id, "test")).toEqual({ revoked: false, reason: "unknown" });
  expect(nodeB.check(get(`${T}/collections`, { "x-chroma-token": secret }), `${T}/collections`)?.status).toBe(401);
  await nodeA.refreshOnce();
  expect(nodeA.check(get(`${T}/collections`, { authorization: `Bearer ${secret}` }), `${T}/collections`)?.status).toBe(401);
  // Revoking the last token does not open the data API again.
  expect(nodeA.open).toBe(false);
  const listed = await stores.a.list();
  expect(listed).toEqual([{ ...made, revokedAtMs: expect.any(Number) }]);
}

describe("token stores", () => {
  test("SQLite: two nodes on one file see each other's tokens and revokes at their next reload", async () => {
    await storeContract(async () => {
      const dir = mkdtempSync(join(tmpdir(), "chroma-lb-tokens-"));
      const [one, two] = [openLocalStore(dir), openLocalStore(dir)];
      return {
        a: new SqliteTokenStore(one),
        b: new SqliteTokenStore(two),
        async [Symbol.asyncDispose]() {
          one.close();
          two.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    });
  });

  test("Postgres: two nodes on one database see each other's tokens and revokes at their next reload", async () => {
    await storeContract(async () => {
      const name = `lbtest_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
      const admin = postgres("postgres://postgres@127.0.0.1:5432/test", { max: 1, onnotice: () => {} });
      await admin.unsafe(`CREATE DATABASE ${name}`);
      const url = `postgres://postgres@127.0.0.1:5432/${name}`;
      const [one, two] = [await openMirrorStore(url), await openMirrorStore(url)];
      return {
        a: new PostgresTokenStore(one.db),
        b: new PostgresTokenStore(two.db),
        async [Symbol.asyncDispose]() {
          await one.close();
          await two.close();
          await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
          await admin.end({ timeout: 2 });
        },
      };
    });
  });

  test("a reload that read the store before a revoke here does not bring the token back", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chroma-lb-tokens-"));
    const local = openLocalStore(dir);
    try {
      const inner = new SqliteTokenStore(local);
      let releaseList: () => void = () => {};
      let listing = false;
      // A store whose list() answers what it read, but only when the test lets it.
      const slow: TokenStore = {
        create: (r) => inner.create(r),
        revoke: (id, at) => inner.revoke(id, at),
        findByHash: (h) => inner.findByHash(h),
        async list() {
          const read = await inner.list();
          if (listing) await new Promise<void>((resolve) => (releaseList = resolve));
          return read;
        },
      };
      const access = accessOver(slow);
      await inner.create(record("tok_a", "secret-a"));
      await access.refreshOnce();
      listing = true;
      const reload = access.refreshOnce();
      await Bun.sleep(0);
      expect(await access.revokeToken("tok_a", "test")).toEqual({ revoked: true, atMs: expect.any(Number) });
      releaseList();
      await reload;
      expect(access.check(get(`${T}/collections`, { authorization: "Bearer secret-a" }), `${T}/collections`)?.status).toBe(401);
    } finally {
      local.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("tokens of AUTH_TOKENS_FILE close the data API and work, and cannot be revoked through chroma-lb", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chroma-lb-tokens-"));
    const local = openLocalStore(dir);
    try {
      const access = accessOver(new SqliteTokenStore(local), {
        declaredTokens: [{ name: "ci", role: "read", tenants: ["default_tenant"], databases: ["default_database"], sha256: hashSecret("from-the-file") }],
      });
      await access.refreshOnce();
      expect(access.open).toBe(false);
      expect(access.check(get(`${T}/collections`, { authorization: "Bearer from-the-file" }), `${T}/collections`)).toBeNull();
      const otherDb = "/api/v2/tenants/default_tenant/databases/other/collections";
      const refused = access.check(get(otherDb, { authorization: "Bearer from-the-file" }), otherDb);
      expect({ status: refused?.status, body: await refused?.json() }).toEqual({ status: 403, body: { error: "Forbidden", message: "The token of ci may not use database other" } });
      expect(await access.revokeToken("file_1", "test")).toEqual({ revoked: false, reason: "declared" });
      expect((await access.listTokens()).map((t) => [t.id, t.source])).toEqual([["file_1", "file"]]);
    } finally {
      local.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("in the app", () => {
  test("chroma-lb says at start whether the data API is open", async () => {
    const dir = mkdtempSync(join(tmpdir(), "chroma-lb-tokens-"));
    const local = openLocalStore(dir);
    try {
      const said = async (config: Parameters<typeof accessOver>[1]) => {
        const lines: string[] = [];
        const access = new AccessControl({
          config: { adminToken: null, authRequired: false, declaredTokens: [], ...config },
          log: createLogger("info", (line) => lines.push(line)),
          events: new RecentEvents(),
          collections: { resolve: () => undefined },
          tokens: new SqliteTokenStore(local),
        });
        await access.refreshOnce();
        access.announce();
        return lines.map((line) => JSON.parse(line) as { level: string; message: string }).map((l) => [l.level, l.message.split(":")[0]]);
      };
      expect(await said({ adminToken: "a" })).toEqual([["warn", "the data API is open"]]);
      expect(await said({ adminToken: "a", authRequired: true })).toEqual([["info", "the data API needs a token"]]);
    } finally {
      local.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("secrets appear in no log line, whether made, used, refused or revoked", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "chroma-lb-access-"));
    const lines: string[] = [];
    try {
      const config = loadConfig({ CHROMA_PRIMARY_URL: "http://127.0.0.1:1", CHROMA_REPLICA_URL: "http://127.0.0.1:2", DATA_DIR: dataDir, ADMIN_TOKEN: "the-admin-secret" });
      const services = await buildServices(config, createLogger("debug", (line) => lines.push(line)));
      const app = createApp(services);
      const call = (path: string, init: RequestInit = {}) => app.handle(new Request(`http://lb.test${path}`, init));
      const made = await call("/admin/tokens", { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer the-admin-secret" }, body: JSON.stringify({ name: "cms", role: "read" }) });
      expect(made.status).toBe(201);
      const { token, id } = (await made.json()) as { token: string; id: string };
      await call(`${T}/collections`, { headers: { authorization: `Bearer ${token}` } });
      await call(`${T}/collections/docs/add`, { method: "POST", headers: { "content-type": "application/json", "x-chroma-token": token }, body: '{"ids":["a"]}' });
      await call(`/admin/tokens/${id}`, { method: "DELETE", headers: { authorization: "Bearer the-admin-secret" } });
      await call(`${T}/collections`, { headers: { authorization: `Bearer ${token}` } });
      await services.close();
      const all = lines.join("\n");
      expect(lines.length).toBeGreaterThan(0);
      for (const secret of [token, "the-admin-secret", hashSecret(token)]) expect(all).not.toContain(secret);
      expect(JSON.stringify(services.events.list())).not.toContain(token);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
