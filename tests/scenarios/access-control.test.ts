/**
 * Who may do what, with the official `chromadb` client through chroma-lb over two real
 * Chroma servers: ADMIN_TOKEN alone leaves the data API open and the first token closes it;
 * a write token ingests and queries; a read token is refused writes with 403 and nothing
 * changes on either instance (read directly); a token of one tenant learns nothing of
 * another's; admin endpoints refuse read and write tokens; a revoked token stops working at
 * once, and one revoked by `bun run token` (another process) within 2 s; destructive calls
 * are recorded with their principal in GET /events and in the metrics.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { AdminClient, ChromaClient, ChromaForbiddenError, ChromaNotFoundError, ChromaUnauthorizedError } from "chromadb";
import { dumpInstances } from "../support/compare";
import { killAll, startChromaServers, startLbInProcess, waitFor, type ChromaServers, type LbInProcess } from "../support";

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const adminToken = "admin-secret-for-tests";
const projectRoot = join(import.meta.dir, "..", "..");

let servers: ChromaServers;
let lb: LbInProcess;
/** Secrets by principal, made in the first test. */
const secrets: Record<string, string> = {};
const ids: Record<string, string> = {};

beforeAll(async () => {
  servers = await startChromaServers(2);
  lb = await startLbInProcess({ CHROMA_PRIMARY_URL: servers[0]!.url, CHROMA_REPLICA_URL: servers[1]!.url, ADMIN_TOKEN: adminToken });
});

afterAll(async () => {
  await lb?.[Symbol.asyncDispose]();
  await servers?.[Symbol.asyncDispose]();
});
afterAll(() => killAll());

const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });
const client = (headers: Record<string, string> = {}, tenant = "default_tenant") => new ChromaClient({ host: "127.0.0.1", port: lb.port, tenant, headers });

async function call(path: string, init: RequestInit = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(`${lb.url}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const json = (method: string, body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method,
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

async function makeToken(name: string, role: string, tenants?: string[]) {
  const made = await call("/admin/tokens", json("POST", { name, role, ...(tenants ? { tenants } : {}) }, bearer(adminToken)));
  expect(made.status).toBe(201);
  secrets[name] = made.body.token;
  ids[name] = made.body.id;
  return made.body;
}

/** Both instances' contents, read from them directly (never through chroma-lb). */
const instances = () => dumpInstances(servers.map((s) => s.url), { tenants: ["default_tenant", "acme"] });

describe("access control through chroma-lb", () => {
  test("ADMIN_TOKEN alone leaves the data API open (and says so); the first token closes it", async () => {
    expect((await call("/status")).body.auth).toBe("open");
    // Open: the official client works without a token, as before.
    await client().getOrCreateCollection({ name: "before-tokens", embeddingFunction: null });
    // Admin endpoints still need ADMIN_TOKEN.
    expect((await call("/admin/tokens")).status).toBe(401);

    const writer = await makeToken("writer", "write", ["default_tenant"]);
    expect(writer).toEqual({
      id: expect.stringMatching(/^tok_[0-9a-f]{18}$/),
      name: "writer",
      role: "write",
      tenants: ["default_tenant"],
      databases: ["*"],
      created_at: expect.any(String),
      revoked_at: null,
      source: "store",
      token: expect.stringMatching(/^clb_[A-Za-z0-9_-]{43}$/),
    });
    await makeToken("reader", "read", ["default_tenant"]);
    await makeToken("acme-app", "write", ["acme"]);
    await makeToken("ops", "admin");

    expect((await call("/status")).body.auth).toBe("required");
    // No token, or an unknown one: 401 in Chroma's error shape, naming what is missing.
    const none = await call(`${T}/collections`);
    expect(none).toEqual({ status: 401, body: { error: "Unauthorized", message: "Listing collections needs a token: `Authorization: Bearer <token>` or `X-Chroma-Token: <token>`" } });
    expect((await call(`${T}/collections`, { headers: bearer("clb_unknown") })).status).toBe(401);
    await expect(client().listCollections()).rejects.toBeInstanceOf(ChromaUnauthorizedError);
    // Liveness stays open.
    expect((await call("/api/v2/heartbeat")).status).toBe(200);
    // The list holds no secret and no hash.
    const listed = await call("/admin/tokens", { headers: bearer(adminToken) });
    expect(listed.body.tokens.map((t: any) => t.name)).toEqual(["writer", "reader", "acme-app", "ops"]);
    expect(JSON.stringify(listed.body)).not.toContain(secrets.writer!);
    expect(Object.keys(listed.body.tokens[0]).sort()).toEqual(["created_at", "databases", "id", "name", "revoked_at", "role", "source", "tenants"]);
  });

  test("a write token ingests and queries with the official client (Authorization: Bearer and X-Chroma-Token alike)", async () => {
    const writer = client(bearer(secrets.writer!));
    const docs = await writer.createCollection({ name: "docs", embeddingFunction: null });
    await docs.add({
      ids: ["a", "b", "c"],
      embeddings: [
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
      ],
      documents: ["alpha", "beta", "gamma"],
      metadatas: [{ k: 1 }, { k: 2 }, { k: 3 }],
    });
    const answer = await docs.query({ queryEmbeddings: [[0.9, 0.1, 0]], nResults: 2 });
    expect(answer.ids).toEqual([["a", "b"]]);
    const viaChromaToken = await client({ "x-chroma-token": secrets.writer! }).getCollection({ name: "docs" });
    expect(await viaChromaToken.count()).toBe(3);
    expect(await writer.getUserIdentity()).toEqual({ user_id: "writer", tenant: "default_tenant", databases: ["*"] });
  });

  test("a read token reads, is refused every write with 403, and nothing changes on either instance", async () => {
    const before = await instances();
    const reader = client(bearer(secrets.reader!));
    const docs = await reader.getCollection({ name: "docs" });
    expect(await docs.count()).toBe(3);
    expect((await docs.get({ ids: ["a"] })).documents).toEqual(["alpha"]);
    const refusals = [
      () => docs.add({ ids: ["d"], embeddings: [[1, 1, 1]] }),
      () => docs.upsert({ ids: ["a"], embeddings: [[1, 1, 1]] }),
      () => docs.update({ ids: ["a"], embeddings: [[1, 1, 1]] }),
      () => docs.delete({ ids: ["a"] }),
      () => docs.modify({ metadata: { changed: true } }),
      () => reader.createCollection({ name: "new-one", embeddingFunction: null }),
      () => reader.deleteCollection({ name: "docs" }),
    ];
    for (const refused of refusals) await expect(refused()).rejects.toBeInstanceOf(ChromaForbiddenError);
    const add = await call(`${T}/collections/docs/add`, json("POST", { ids: ["d"], embeddings: [[1, 1, 1]] }, bearer(secrets.reader!)));
    expect(add).toEqual({ status: 403, body: { error: "Forbidden", message: "Adding records needs role write; the token of reader has role read" } });
    // The log took nothing either: no entry was appended for any of them.
    const after = await instances();
    expect(after).toEqual(before);
    expect(after[0]!["default_tenant/default_database"]!.docs!.records.map((r) => r.document)).toEqual(["alpha", "beta", "gamma"]);
  });

  test("a token of tenant acme learns nothing of default_tenant: its collection answers as a missing one", async () => {
    const ops = new AdminClient({ host: "127.0.0.1", port: lb.port, ssl: false, headers: bearer(secrets.ops!) });
    await ops.createTenant({ name: "acme" });
    await ops.createDatabase({ name: "default_database", tenant: "acme" });
    const acme = client({ "x-chroma-token": secrets["acme-app"]! }, "acme");
    const own = await acme.createCollection({ name: "acme-docs", embeddingFunction: null });
    await own.add({ ids: ["x"], embeddings: [[1, 2, 3]] });
    expect((await acme.listCollections()).map((c) => c.name)).toEqual(["acme-docs"]);
    expect(await acme.getUserIdentity()).toEqual({ user_id: "acme-app", tenant: "acme", databases: ["*"] });

    const as = { headers: { "x-chroma-token": secrets["acme-app"]! } };
    const existing = await call(`${T}/collections/docs`, as);
    const missing = await call(`${T}/collections/no-such-collection`, as);
    expect(existing).toEqual({ status: 403, body: { error: "Forbidden", message: "The token of acme-app may not use tenant default_tenant" } });
    expect(missing).toEqual(existing);
    for (const path of [`${T}/collections`, `${T}/collections_count`, `${T}/collections/docs/count`, "/api/v2/tenants/default_tenant/databases"]) {
      expect(await call(path, as)).toEqual(existing);
    }
    // Collection ids are global: asked by id under its own tenant, default_tenant's collection
    // answers exactly as an id that exists nowhere.
    const docsId = (await client(bearer(secrets.writer!)).getCollection({ name: "docs" })).id;
    const A = "/api/v2/tenants/acme/databases/default_database";
    const byId = await call(`${A}/collections/by-id/${docsId}`, as);
    const unknownId = crypto.randomUUID();
    const byUnknownId = await call(`${A}/collections/by-id/${unknownId}`, as);
    expect(byId.status).toBe(404);
    expect({ ...byId.body, message: byId.body.message.replace(docsId, "ID") }).toEqual({ ...byUnknownId.body, message: byUnknownId.body.message.replace(unknownId, "ID") });
    const countById = await call(`${A}/collections/${docsId}/count`, as);
    const countByUnknownId = await call(`${A}/collections/${unknownId}/count`, as);
    expect({ ...countById.body, message: countById.body.message.replace(docsId, "ID") }).toEqual({
      ...countByUnknownId.body,
      message: countByUnknownId.body.message.replace(unknownId, "ID"),
    });
    await expect(acme.getCollection({ name: docsId })).rejects.toBeInstanceOf(ChromaNotFoundError);
  });

  test("a token of one database sees only that database in lists, and its identity names it", async () => {
    const ops = new AdminClient({ host: "127.0.0.1", port: lb.port, ssl: false, headers: bearer(secrets.ops!) });
    await ops.createDatabase({ name: "other_db", tenant: "default_tenant" });
    await makeToken("narrow", "read", ["default_tenant"]);
    const narrowed = await call("/admin/tokens", json("POST", { name: "narrow-db", role: "read", tenants: ["default_tenant"], databases: ["default_database"] }, bearer(adminToken)));
    const as = { headers: bearer(narrowed.body.token) };
    const everyDatabase = await call("/api/v2/tenants/default_tenant/databases", { headers: bearer(secrets.narrow!) });
    expect(everyDatabase.body.map((d: { name: string }) => d.name).sort()).toEqual(["default_database", "other_db"]);
    const listed = await call("/api/v2/tenants/default_tenant/databases", as);
    expect({ status: listed.status, names: listed.body.map((d: { name: string }) => d.name) }).toEqual({ status: 200, names: ["default_database"] });
    expect((await call("/api/v2/tenants/default_tenant/databases/other_db", as)).body).toEqual({ error: "Forbidden", message: "The token of narrow-db may not use database other_db" });
    expect((await call("/api/v2/auth/identity", as)).body).toEqual({ user_id: "narrow-db", tenant: "default_tenant", databases: ["default_database"] });
  });

  test("admin endpoints and reset refuse read and write tokens (403), need one (401), and take an admin token", async () => {
    const endpoints: Array<[string, RequestInit]> = [
      ["/collection/mappings", {}],
      ["/admin/tokens", {}],
      ["/admin/tokens", json("POST", { name: "sneaky", role: "admin" })],
      ["/admin/instances", {}],
      ["/wal/cleanup", json("POST", {})],
      ["/api/v2/reset", { method: "POST" }],
    ];
    for (const [path, init] of endpoints) {
      for (const name of ["reader", "writer", "acme-app"]) {
        const res = await call(path, { ...init, headers: { ...(init.headers as Record<string, string>), ...bearer(secrets[name]!) } });
        expect({ path, name, status: res.status, error: res.body.error }).toEqual({ path, name, status: 403, error: "Forbidden" });
      }
      expect({ path, status: (await call(path, init)).status }).toEqual({ path, status: 401 });
    }
    expect((await call("/collection/mappings", { headers: bearer(secrets.ops!) })).status).toBe(200);
    expect((await call("/admin/tokens", { headers: { "x-chroma-token": adminToken } })).status).toBe(200);
    const refusal = await call("/admin/instances", { headers: bearer(secrets.writer!) });
    expect(refusal.body.message).toBe("This endpoint needs a token of role admin for every tenant and database; the token of writer has role write for tenants default_tenant and databases *");
  });

  test("destructive calls are recorded with principal, time and target in GET /events and the metrics", async () => {
    const writer = client(bearer(secrets.writer!));
    const doomed = await writer.createCollection({ name: "doomed", embeddingFunction: null });
    await doomed.add({ ids: ["1", "2"], embeddings: [[1, 0, 0], [0, 1, 0]], metadatas: [{ keep: false }, { keep: true }] });
    await doomed.delete({ where: { keep: false } });
    // A delete by ids is an ordinary write: not recorded.
    await doomed.delete({ ids: ["nope"] });
    // Deleting a collection needs admin.
    await expect(writer.deleteCollection({ name: "doomed" })).rejects.toBeInstanceOf(ChromaForbiddenError);
    await client(bearer(secrets.ops!)).deleteCollection({ name: "doomed" });

    const events = (await call("/events")).body.events as Array<Record<string, string>>;
    const audited = events.filter((e) => ["delete_records", "delete_collection"].includes(e.event!));
    expect(audited.map(({ at, message, ...rest }) => rest)).toEqual([
      { event: "delete_records", level: "info", principal: "writer", collection: "doomed", target: `default_tenant/default_database/doomed (${doomed.id})` },
      { event: "delete_collection", level: "info", principal: "ops", collection: "doomed", target: `default_tenant/default_database/doomed (${doomed.id})` },
    ]);
    for (const e of audited) expect(Date.now() - Date.parse(e.at!)).toBeLessThan(60_000);
    expect(events.filter((e) => e.event === "token_created").map((e) => e.principal)).toEqual(Array(6).fill("admin-token"));

    const metrics = await (await fetch(`${lb.url}/metrics`)).text();
    const principals = new Set([...metrics.matchAll(/^chroma_lb_requests_total\{[^}]*principal="([^"]+)"/gm)].map((m) => m[1]));
    expect([...principals].sort()).toEqual(["acme-app", "admin-token", "anonymous", "narrow", "narrow-db", "ops", "reader", "unauthenticated", "writer"]);
  });

  test("a revoked token stops at once on this node; one revoked by `bun run token` elsewhere within 2 s", async () => {
    const writer = client(bearer(secrets.writer!));
    expect((await writer.listCollections()).length).toBeGreaterThan(0);
    const revoked = await call(`/admin/tokens/${ids.writer}`, { method: "DELETE", headers: bearer(adminToken) });
    expect(revoked).toEqual({ status: 200, body: { id: ids.writer, revoked: true, revoked_at: expect.any(String) } });
    await expect(writer.listCollections()).rejects.toBeInstanceOf(ChromaUnauthorizedError);
    expect((await call(`${T}/collections`, { headers: bearer(secrets.writer!) })).body.message).toStartWith("The token is unknown or revoked.");
    expect((await call(`/admin/tokens/${ids.writer}`, { method: "DELETE", headers: bearer(adminToken) })).status).toBe(404);

    // The command writes to the same store while chroma-lb runs.
    const run = async (...args: string[]) => {
      const child = Bun.spawn(["bun", "run", "token", ...args], { cwd: projectRoot, env: { ...process.env, DATA_DIR: lb.dataDir }, stdout: "pipe", stderr: "pipe" });
      const [code, out] = await Promise.all([child.exited, new Response(child.stdout).text()]);
      expect(code).toBe(0);
      return out;
    };
    const made = JSON.parse(await run("create", "--name", "cli-made", "--tenant", "default_tenant", "--role", "read"));
    await waitFor(async () => (await call(`${T}/collections`, { headers: bearer(made.token) })).status === 200, { timeoutMs: 2000, message: "the token made by the command works" });
    await run("revoke", made.id);
    const revokedAt = performance.now();
    await waitFor(async () => (await call(`${T}/collections`, { headers: bearer(made.token) })).status === 401, { timeoutMs: 2000, message: "the token revoked by the command is refused" });
    console.log(`revoked by another process, refused after ${Math.round(performance.now() - revokedAt)} ms`);
  });
});

describe("AUTH_REQUIRED", () => {
  test("closes the data API from the start: /status says so, requests need a token, ADMIN_TOKEN works as admin", async () => {
    await using closed = await startLbInProcess({ CHROMA_PRIMARY_URL: servers[0]!.url, CHROMA_REPLICA_URL: servers[1]!.url, ADMIN_TOKEN: adminToken, AUTH_REQUIRED: "true" });
    const status = (await (await fetch(`${closed.url}/status`)).json()) as { auth: string };
    expect(status.auth).toBe("required");
    expect((await fetch(`${closed.url}${T}/collections`)).status).toBe(401);
    const admin = new ChromaClient({ host: "127.0.0.1", port: closed.port, headers: bearer(adminToken) });
    expect((await admin.listCollections()).map((c) => c.name)).toContain("docs");
    expect(await admin.getUserIdentity()).toEqual({ user_id: "admin-token", tenant: "default_tenant", databases: ["*"] });
  });
});
