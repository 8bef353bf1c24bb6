/**
 * What reaches an instance: query strings, auth and content headers and the body's exact
 * bytes; never hop-by-hop headers (RFC 9110 7.6.1) or chroma-lb's own. A small fake Chroma
 * records every request it gets.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startLbInProcess, waitFor, type LbInProcess } from "../support";

interface Seen {
  method: string;
  path: string;
  search: string;
  headers: Record<string, string>;
  body: string;
}

const collectionUuid = "0f6c6a43-5a3e-4a8e-9d39-6c1b7f2a9e11";
const T = "/api/v2/tenants/default_tenant/databases/default_database";

function fakeChroma() {
  const seen: Seen[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      const url = new URL(request.url);
      const headers: Record<string, string> = {};
      request.headers.forEach((value, key) => (headers[key] = value));
      seen.push({ method: request.method, path: url.pathname, search: url.search, headers, body: await request.text() });
      const reply = (body: unknown, status = 200) => Response.json(body, { status });
      if (url.pathname === "/api/v2/heartbeat") return reply({ "nanosecond heartbeat": 1 });
      if (url.pathname === "/api/v2/version") return reply("1.0.5");
      if (url.pathname.endsWith("/collections_count")) return reply(1);
      if (url.pathname === "/api/v2/pre-flight-checks") return reply({ max_batch_size: 100, supports_base64_encoding: true });
      if (url.pathname === "/api/v2/tenants/default_tenant/databases") return reply([{ id: "d", name: "default_database", tenant: "default_tenant" }]);
      if (url.pathname === `${T}/collections`) {
        return reply([{ id: collectionUuid, name: "docs", configuration_json: {}, metadata: null, dimension: 2, tenant: "default_tenant", database: "default_database", log_position: 0, version: 0 }]);
      }
      if (url.pathname.endsWith("/add")) return reply({}, 201);
      if (url.pathname.endsWith("/get")) return reply({ ids: [], include: [] });
      return new Response(null, { status: 404 });
    },
  });
  return { server, seen, url: `http://127.0.0.1:${server.port}` };
}

const primary = fakeChroma();
const replica = fakeChroma();
let lb: LbInProcess;

beforeAll(async () => {
  lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, READ_REPLICA_RATIO: "0" });
});

afterAll(async () => {
  await lb?.[Symbol.asyncDispose]();
  primary.server.stop(true);
  replica.server.stop(true);
});

const clientHeaders = {
  authorization: "Bearer client-token",
  "x-chroma-token": "chroma-token",
  "x-custom": "kept",
  connection: "keep-alive, x-dropped-by-connection",
  "keep-alive": "timeout=5",
  te: "trailers",
  "proxy-authorization": "Basic secret",
  "x-dropped-by-connection": "1",
  "x-chroma-lb-min-position": "0",
};

function lastTo(fake: ReturnType<typeof fakeChroma>, suffix: string): Seen {
  const found = [...fake.seen].reverse().find((s) => s.path.endsWith(suffix));
  if (!found) throw new Error(`no request ending in ${suffix} reached the instance`);
  return found;
}

test("a write reaches the instance with the body's exact bytes and the client's own headers, without hop-by-hop headers", async () => {
  // Unusual spacing and key order: a re-encoded body would differ.
  const body = '{ "ids" : ["a"],\n  "embeddings": ["AACAPwAAAEA="], "documents":["x"] }';
  const res = await fetch(`${lb.url}${T}/collections/docs/add`, {
    method: "POST",
    headers: { ...clientHeaders, "content-type": "application/json" },
    body,
  });
  expect(res.status).toBe(201);
  const seen = lastTo(primary, "/add");
  expect(seen.path).toBe(`${T}/collections/${collectionUuid}/add`);
  expect(seen.body).toBe(body);
  expect(seen.headers["content-type"]).toBe("application/json");
  // Open data API: the client's credentials are not chroma-lb's, so they pass on.
  expect({
    authorization: seen.headers.authorization,
    token: seen.headers["x-chroma-token"],
    custom: seen.headers["x-custom"],
  }).toEqual({ authorization: clientHeaders.authorization, token: clientHeaders["x-chroma-token"], custom: "kept" });
  for (const dropped of ["keep-alive", "te", "proxy-authorization", "x-dropped-by-connection", "x-chroma-lb-min-position"]) {
    expect(seen.headers[dropped]).toBeUndefined();
  }
  expect(seen.headers.connection ?? "keep-alive").not.toContain("x-dropped-by-connection");
});

test("a read reaches the instance with its query string and headers", async () => {
  const res = await fetch(`${lb.url}${T}/collections/docs/get?limit=7&extra=1`, {
    method: "POST",
    headers: { ...clientHeaders, "content-type": "application/json" },
    body: JSON.stringify({ ids: ["a"] }),
  });
  expect(res.status).toBe(200);
  const seen = lastTo(primary, "/get");
  expect(seen.search).toBe("?limit=7&extra=1");
  expect(seen.headers.authorization).toBe(clientHeaders.authorization);
  expect(seen.headers["x-custom"]).toBe("kept");
  expect(seen.headers.te).toBeUndefined();
});

test("catalog reads pass their query string on", async () => {
  const res = await fetch(`${lb.url}/api/v2/tenants/default_tenant/databases?limit=5&offset=1`);
  expect(res.status).toBe(200);
  // chroma-lb's own adoption pass lists databases too (with its own paging), at any moment.
  const listings = primary.seen.filter((s) => s.path === "/api/v2/tenants/default_tenant/databases").map((s) => s.search);
  expect(listings).toContain("?limit=5&offset=1");
});

test("the admin token never reaches an instance; other credentials pass while the data API is open and never once it is closed", async () => {
  await using guarded = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, READ_REPLICA_RATIO: "0", ADMIN_TOKEN: "s3cret" });
  const get = (headers: Record<string, string>) =>
    fetch(`${guarded.url}${T}/collections/docs/get`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: "{}" });
  const seenFor = async (headers: Record<string, string>) => {
    expect((await get(headers)).status).toBe(200);
    const seen = lastTo(primary, "/get").headers;
    return { authorization: seen.authorization, token: seen["x-chroma-token"] };
  };
  // Open: the admin token is chroma-lb's and stays; a client's own credentials pass on.
  expect(await seenFor({ authorization: "Bearer s3cret" })).toEqual({ authorization: undefined, token: undefined });
  expect(await seenFor({ "x-chroma-token": "s3cret" })).toEqual({ authorization: undefined, token: undefined });
  expect(await seenFor({ authorization: "Bearer client-token", "x-chroma-token": "other" })).toEqual({ authorization: "Bearer client-token", token: "other" });
  // The first data token closes the data API: from then on both headers carry chroma-lb's tokens.
  const created = await fetch(`${guarded.url}/admin/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer s3cret" },
    body: JSON.stringify({ name: "reader", role: "read" }),
  });
  expect(created.status).toBe(201);
  const { token } = (await created.json()) as { token: string };
  expect(await seenFor({ authorization: `Bearer ${token}` })).toEqual({ authorization: undefined, token: undefined });
  expect(await seenFor({ "x-chroma-token": token })).toEqual({ authorization: undefined, token: undefined });
  expect(await seenFor({ authorization: `Bearer ${token}`, "x-chroma-token": token })).toEqual({ authorization: undefined, token: undefined });
});

test("CHROMA_INSTANCE_HEADERS_<NAME> reach that instance on client requests, probes, adoption and replay, over the client's own", async () => {
  // Instances of its own: the file's other servers probe the shared ones all along.
  const [own, ownReplica] = [fakeChroma(), fakeChroma()];
  await using withHeaders = await startLbInProcess({
    CHROMA_PRIMARY_URL: own.url,
    CHROMA_REPLICA_URL: ownReplica.url,
    READ_REPLICA_RATIO: "0",
    CHROMA_INSTANCE_HEADERS_PRIMARY: '{"Authorization":"Bearer instance-secret","X-Custom":"from-config"}',
    CHROMA_INSTANCE_HEADERS_REPLICA: '{"X-Replica-Key":"r-secret"}',
  });
  const send = (op: string, body: string) =>
    fetch(`${withHeaders.url}${T}/collections/docs/${op}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer client-token", "x-custom": "from-client" },
      body,
    });
  expect((await send("get", "{}")).status).toBe(200);
  const seen = lastTo(own, "/get").headers;
  expect({ authorization: seen.authorization, custom: seen["x-custom"] }).toEqual({ authorization: "Bearer instance-secret", custom: "from-config" });
  expect((await send("add", '{"ids":["h"],"embeddings":[[1,2]]}')).status).toBe(201);
  // The add reaches the replica by replay, with the replica's own headers and nothing of the
  // client's (the log keeps bodies, never headers).
  const replayed = await waitFor(() => ownReplica.seen.find((s) => s.path.endsWith("/add")), { timeoutMs: 5000, message: "the add replayed to the replica" });
  expect({ key: replayed.headers["x-replica-key"], authorization: replayed.headers.authorization, custom: replayed.headers["x-custom"] }).toEqual({
    key: "r-secret",
    authorization: undefined,
    custom: undefined,
  });
  // Every request to each instance since this server started carried that instance's headers:
  // probes (heartbeat), adoption (collection lists), pre-flight checks, client requests.
  try {
    expect(own.seen.some((s) => s.path === "/api/v2/heartbeat")).toBe(true);
    expect(ownReplica.seen.some((s) => s.path === `${T}/collections`)).toBe(true);
    expect(own.seen.filter((s) => s.headers.authorization !== "Bearer instance-secret")).toEqual([]);
    expect(ownReplica.seen.filter((s) => s.headers["x-replica-key"] !== "r-secret")).toEqual([]);
  } finally {
    await withHeaders.stop();
    own.server.stop(true);
    ownReplica.server.stop(true);
  }
});

test("the admin token never reaches an instance, whatever the spelling of its Authorization and whatever header carries it", async () => {
  const token = "s3cret-admin";
  await using guarded = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, READ_REPLICA_RATIO: "0", ADMIN_TOKEN: token });
  const requests = [
    { suffix: "/add", send: (headers: Record<string, string>) => fetch(`${guarded.url}${T}/collections/docs/add`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: '{"ids":["a"],"embeddings":[[1,2]]}' }) },
    { suffix: "/get", send: (headers: Record<string, string>) => fetch(`${guarded.url}${T}/collections/docs/get`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: "{}" }) },
    { suffix: "/version", send: (headers: Record<string, string>) => fetch(`${guarded.url}/api/v2/version`, { headers }) },
  ];
  const spellings: Array<Record<string, string>> = [
    { authorization: `Bearer ${token}` },
    { authorization: `bearer ${token}` },
    { authorization: `BEARER ${token}` },
    { authorization: `Bearer  ${token}` },
    { authorization: `Bearer\t${token}` },
    { authorization: `Basic ${token}` },
    { "x-chroma-token": token },
    { "x-forwarded-auth": `prefix ${token} suffix` },
  ];
  const leaks: string[] = [];
  for (const { suffix, send } of requests) {
    for (const [n, headers] of spellings.entries()) {
      const res = await send({ ...headers, "x-probe": `${suffix} ${n}` });
      expect(res.status).toBeLessThan(300);
      const seen = lastTo(primary, suffix);
      // The probe header tells the request sent from an earlier one to the same path.
      expect(seen.headers["x-probe"]).toBe(`${suffix} ${n}`);
      for (const [key, value] of Object.entries(seen.headers)) if (value.includes(token)) leaks.push(`${suffix} ${JSON.stringify(headers)}: ${key}`);
    }
  }
  expect(leaks).toEqual([]);
  // Any other credential is the client's own while the data API is open: it passes on.
  await requests[1]!.send({ authorization: "bearer client-token", "x-chroma-token": "client-token" });
  const seen = lastTo(primary, "/get").headers;
  expect({ authorization: seen.authorization, token: seen["x-chroma-token"] }).toEqual({ authorization: "bearer client-token", token: "client-token" });
});

test("admin endpoints accept the token in any spelling of the Bearer scheme, and nothing else", async () => {
  await using guarded = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, ADMIN_TOKEN: "s3cret" });
  const status = async (authorization: string) => (await fetch(`${guarded.url}/admin/instances`, { headers: { authorization } })).status;
  const statuses = await Promise.all(["Bearer s3cret", "bearer s3cret", "BEARER\ts3cret", "Bearer  s3cret", "Bearer s3cre", "Basic s3cret", "Bearer", "s3cret"].map(status));
  expect(statuses).toEqual([200, 200, 200, 200, 401, 401, 401, 401]);
});

test("admin endpoints check the token before they read the body", async () => {
  await using guarded = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, ADMIN_TOKEN: "s3cret" });
  const cleanup = (headers: Record<string, string>, body: string) =>
    fetch(`${guarded.url}/wal/cleanup`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
  const refused = await cleanup({}, "{not json");
  expect({ status: refused.status, body: await refused.json() }).toEqual({
    status: 401,
    body: { error: "Unauthorized", message: "This endpoint needs an admin token: ADMIN_TOKEN, or a token of role admin for every tenant and database" },
  });
  expect((await cleanup({ authorization: "Bearer s3cre" }, '{"max_age_hours":"x"}')).status).toBe(401);
  expect((await cleanup({ authorization: "Bearer s3cret" }, '{"max_age_hours":1}')).status).toBe(200);
  const reset = await fetch(`${guarded.url}/api/v2/reset`, { method: "POST" });
  expect(reset.status).toBe(401);
});
