/**
 * The Postgres mirror of the mappings (real Postgres, a fresh database per test): it is
 * kept up to date, a chroma-lb on an empty DATA_DIR restores collection ids from it, and
 * it is never on a client's path: Postgres going away (or never being there) only delays
 * the mirror.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import postgres from "postgres";
import { killAll, startChromaServers, startLbInProcess, startLbProcess, waitFor, type ChromaServer } from "../support";
import { startTcpProxy } from "../support/tcp-proxy";

afterAll(() => killAll());

/** Where the test databases are created: the CI Postgres (trust auth). */
const adminUrl = "postgres://postgres@127.0.0.1:5432/test";
const json = { "content-type": "application/json" };
const T = "/api/v2/tenants/default_tenant/databases/default_database";
const post = (body: unknown): RequestInit => ({ method: "POST", headers: json, body: JSON.stringify(body) });
const vec = (i: number) => [i, -i, i / 4];

interface TestDatabase extends AsyncDisposable {
  name: string;
  /** The database's URL with a different host and port (a proxy in front of Postgres). */
  urlVia(port: number): string;
  url: string;
  sql: postgres.Sql;
}

/** Creates `lbtest_<random>`; disposing closes the connection and drops it. */
async function freshDatabase(): Promise<TestDatabase> {
  const name = `lbtest_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = `postgres://postgres@127.0.0.1:5432/${name}`;
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  return {
    name,
    url,
    urlVia: (port) => `postgres://postgres@127.0.0.1:${port}/${name}`,
    sql,
    async [Symbol.asyncDispose]() {
      await sql.end({ timeout: 2 });
      // FORCE: a chroma-lb that failed to stop may still hold a connection.
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end({ timeout: 2 });
    },
  };
}

interface MirrorRow {
  id: string;
  tenant: string;
  database: string;
  name: string;
  status: string;
  instances: Record<string, string>;
}

/** The mirror's content, one row per collection with its instance UUIDs, by name. */
async function mirrorRows(sql: postgres.Sql): Promise<MirrorRow[]> {
  const tables = await sql`select to_regclass('chroma_lb_collections') as t`;
  if (!tables[0]?.t) return [];
  const collections = await sql<Array<Omit<MirrorRow, "instances">>>`
    select id, tenant, database, name, status from chroma_lb_collections order by name, id`;
  const instances = await sql<Array<{ collection_id: string; instance: string; instance_uuid: string }>>`
    select collection_id, instance, instance_uuid from chroma_lb_collection_instances`;
  return collections.map((c) => ({
    ...c,
    instances: Object.fromEntries(instances.filter((i) => i.collection_id === c.id).map((i) => [i.instance, i.instance_uuid])),
  }));
}

interface Mapping {
  collection_name: string;
  collection_id: string;
  tenant: string;
  database: string;
  instances: Record<string, string>;
}

async function call<T>(url: string, init?: RequestInit): Promise<T> {
  const res = await fetch(url, init);
  const body = await res.text();
  if (!res.ok) throw new Error(`${init?.method ?? "GET"} ${url} answered ${res.status}: ${body}`);
  return JSON.parse(body) as T;
}

/** chroma-lb's mappings in the shape of {@link mirrorRows}. */
async function mappingsAsRows(lbUrl: string): Promise<MirrorRow[]> {
  const { mappings } = await call<{ mappings: Mapping[] }>(`${lbUrl}/collection/mappings`);
  return mappings
    .map((m) => ({ id: m.collection_id, tenant: m.tenant, database: m.database, name: m.collection_name, status: "active", instances: m.instances }))
    .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
}

const bothInstancesMapped = (rows: MirrorRow[], names: string[]) =>
  names.every((name) => {
    const row = rows.find((r) => r.name === name);
    return row && row.instances.primary && row.instances.replica;
  });

interface MirrorStatus {
  configured: boolean;
  connected: boolean;
  lastError: string | null;
  restoredRows: number;
}
const mirrorStatus = async (lbUrl: string) => (await call<{ mirror: MirrorStatus }>(`${lbUrl}/status`)).mirror;
const pendingWrites = async (lbUrl: string) => (await call<{ pending_writes: number }>(`${lbUrl}/wal/status`)).pending_writes;

const recordsOn = async (server: ChromaServer, name: string) => {
  const c = await call<{ id: string }>(`${server.url}${T}/collections/${name}`);
  return call<unknown>(`${server.url}${T}/collections/${c.id}/get`, post({ include: ["embeddings", "documents", "metadatas"] }));
};

test("mappings reach the mirror tables within a sync interval", async () => {
  await using db = await freshDatabase();
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary.url,
    CHROMA_REPLICA_URL: replica.url,
    DATABASE_URL: db.url,
    MIRROR_SYNC_INTERVAL: "1",
  });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });

  const startedMs = performance.now();
  await client.createCollection({ name: "mirrored_a", embeddingFunction: null });
  await client.createCollection({ name: "mirrored_b", metadata: { kind: "b" }, embeddingFunction: null });
  // One interval of 1 s, a sync that may already be running, and croner's whole-second ticks.
  const rows = await waitFor(async () => {
    const r = await mirrorRows(db.sql);
    return bothInstancesMapped(r, ["mirrored_a", "mirrored_b"]) ? r : undefined;
  }, { timeoutMs: 3_000, intervalMs: 50, message: "both collections in the mirror with both instances' UUIDs" });
  const elapsedMs = Math.round(performance.now() - startedMs);
  console.log(`mirror: mappings visible in Postgres ${elapsedMs} ms after the creates`);
  expect(rows).toEqual(await mappingsAsRows(lb.url));
  expect(rows.map((r) => r.name)).toEqual(["mirrored_a", "mirrored_b"]);
  expect(await mirrorStatus(lb.url)).toMatchObject({ configured: true, connected: true, lastError: null });

  // A delete reaches the mirror as a tombstone, so a restore does not bring it back.
  await client.deleteCollection({ name: "mirrored_b" });
  await waitFor(async () => (await mirrorRows(db.sql)).find((r) => r.name === "mirrored_b")?.status === "deleted", {
    timeoutMs: 3_000,
    message: "the delete in the mirror",
  });
}, 60_000);

test("a chroma-lb on an empty DATA_DIR restores the collection ids from the mirror", async () => {
  await using db = await freshDatabase();
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
  const env = { CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, DATABASE_URL: db.url, MIRROR_SYNC_INTERVAL: "1" };

  const first = await startLbInProcess(env);
  const firstClient = new ChromaClient({ host: "127.0.0.1", port: first.port });
  const docs = await firstClient.createCollection({ name: "docs", embeddingFunction: null });
  const notes = await firstClient.createCollection({ name: "notes", embeddingFunction: null });
  await docs.add({ ids: ["d1", "d2"], embeddings: [vec(1), vec(2)], documents: ["first", "second"] });
  await waitFor(async () => bothInstancesMapped(await mirrorRows(db.sql), ["docs", "notes"]), { message: "mappings in the mirror" });
  await waitFor(async () => (await pendingWrites(first.url)) === 0, { message: "replica caught up" });
  const mappingsBefore = await mappingsAsRows(first.url);
  // The ids are chroma-lb's own, not the primary's UUIDs: adoption alone could not find them again.
  for (const row of mappingsBefore) expect(row.id).not.toBe(row.instances.primary);
  await first.stop();

  await using second = await startLbInProcess(env);
  expect(second.dataDir).not.toBe(first.dataDir);
  const client = new ChromaClient({ host: "127.0.0.1", port: second.port });
  expect((await client.getCollection({ name: "docs" })).id).toBe(docs.id);
  expect((await client.getCollection({ name: "notes" })).id).toBe(notes.id);
  expect((await client.listCollections()).map((c) => c.id).sort()).toEqual([docs.id, notes.id].sort());
  expect(await mappingsAsRows(second.url)).toEqual(mappingsBefore);
  expect(await mirrorStatus(second.url)).toMatchObject({ restoredRows: 2, lastError: null });

  // The restored mapping routes reads and writes to the right UUID on each instance.
  const restored = client.collection(docs.id);
  expect(await restored.get({ include: ["documents"] })).toMatchObject({ ids: ["d1", "d2"], documents: ["first", "second"] });
  await restored.add({ ids: ["d3"], embeddings: [vec(3)], documents: ["third"] });
  await waitFor(async () => (await pendingWrites(second.url)) === 0, { message: "both instances applied the add" });
  const onPrimary = await recordsOn(primary, "docs");
  expect(onPrimary).toMatchObject({ ids: ["d1", "d2", "d3"], documents: ["first", "second", "third"] });
  expect(await recordsOn(replica, "docs")).toEqual(onPrimary);
}, 60_000);

test("while Postgres is unreachable, writes and creates succeed; the mirror catches up when it returns", async () => {
  await using db = await freshDatabase();
  await using proxy = await startTcpProxy({ host: "127.0.0.1", port: 5432 });
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary.url,
    CHROMA_REPLICA_URL: replica.url,
    DATABASE_URL: db.urlVia(proxy.port),
    MIRROR_SYNC_INTERVAL: "1",
  });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const before = await client.createCollection({ name: "before_outage", embeddingFunction: null });
  await waitFor(async () => bothInstancesMapped(await mirrorRows(db.sql), ["before_outage"]), { message: "first mapping in the mirror" });
  expect(proxy.accepted).toBeGreaterThan(0);

  await proxy.close();
  const outageStartedMs = performance.now();
  await before.add({ ids: ["b1", "b2"], embeddings: [vec(1), vec(2)], documents: ["one", "two"] });
  const during = await client.createCollection({ name: "during_outage", embeddingFunction: null });
  await during.upsert({ ids: ["u1"], embeddings: [vec(5)], documents: ["upserted"] });
  const also = await client.getOrCreateCollection({ name: "also_during_outage", embeddingFunction: null });
  await before.delete({ ids: ["b1"] });
  const outageWritesMs = Math.round(performance.now() - outageStartedMs);
  console.log(`mirror outage: 5 writes and creates took ${outageWritesMs} ms`);
  // The mirror is never on a client's path: no write waited for a Postgres connect timeout.
  expect(outageWritesMs).toBeLessThan(3_000);
  expect(await before.get({ include: ["documents"] })).toMatchObject({ ids: ["b2"], documents: ["two"] });
  expect(await during.count()).toBe(1);

  const failing = await waitFor(async () => {
    const status = await mirrorStatus(lb.url);
    return status.lastError ? status : undefined;
  }, { message: "the mirror's failure in /status" });
  expect(failing).toMatchObject({ configured: true, connected: false, lastError: expect.any(String) });
  expect((await mirrorRows(db.sql)).map((r) => r.name)).toEqual(["before_outage"]);

  await proxy.reopen();
  const reopenedMs = performance.now();
  const rows = await waitFor(async () => {
    const r = await mirrorRows(db.sql);
    return bothInstancesMapped(r, ["before_outage", "during_outage", "also_during_outage"]) ? r : undefined;
  }, { timeoutMs: 10_000, message: "collections created during the outage in the mirror" });
  console.log(`mirror outage: caught up ${Math.round(performance.now() - reopenedMs)} ms after Postgres returned`);
  await waitFor(async () => (await mirrorStatus(lb.url)).lastError === null, { message: "lastError cleared" });
  expect(await mirrorStatus(lb.url)).toMatchObject({ connected: true, lastError: null });
  expect(rows.map((r) => ({ id: r.id, name: r.name }))).toEqual([
    { id: also.id, name: "also_during_outage" },
    { id: before.id, name: "before_outage" },
    { id: during.id, name: "during_outage" },
  ]);
  expect(rows).toEqual(await mappingsAsRows(lb.url));
}, 60_000);

test("a chroma-lb started while Postgres is unreachable starts, serves, and fills the mirror later", async () => {
  await using db = await freshDatabase();
  await using proxy = await startTcpProxy({ host: "127.0.0.1", port: 5432 });
  await proxy.close();
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
  await using lb = await startLbProcess({
    CHROMA_PRIMARY_URL: primary.url,
    CHROMA_REPLICA_URL: replica.url,
    DATABASE_URL: db.urlVia(proxy.port),
    MIRROR_SYNC_INTERVAL: "1",
  });
  const health = await call<{ status: string }>(`${lb.url}/health`);
  expect(health.status).toBe("healthy");
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const c = await client.createCollection({ name: "started_without_mirror", embeddingFunction: null });
  await c.add({ ids: ["s1", "s2"], embeddings: [vec(1), vec(2)], documents: ["one", "two"] });
  const found = await c.query({ queryEmbeddings: [vec(2)], nResults: 1 });
  expect(found.ids).toEqual([["s2"]]);
  expect(await mirrorStatus(lb.url)).toMatchObject({ configured: true, connected: false, lastError: expect.any(String) });

  await proxy.reopen();
  const rows = await waitFor(async () => {
    const r = await mirrorRows(db.sql);
    return bothInstancesMapped(r, ["started_without_mirror"]) ? r : undefined;
  }, { timeoutMs: 10_000, message: "the mapping in the mirror once Postgres is reachable" });
  expect(rows.map((r) => ({ id: r.id, name: r.name, status: r.status }))).toEqual([{ id: c.id, name: "started_without_mirror", status: "active" }]);
  await waitFor(async () => (await mirrorStatus(lb.url)).lastError === null, { message: "lastError cleared" });
}, 60_000);
