/**
 * Adoption: collections that already exist on the instances when chroma-lb starts are
 * matched by name. Clients keep the id they already hold (the primary's UUID), and writes
 * through chroma-lb reach both instances' copies.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, waitFor, type ChromaServer } from "../support";

afterAll(() => killAll());

const json = { "content-type": "application/json" };
const T = (tenant = "default_tenant", database = "default_database") => `/api/v2/tenants/${tenant}/databases/${database}`;
const post = (body: unknown): RequestInit => ({ method: "POST", headers: json, body: JSON.stringify(body) });
const everything = { include: ["embeddings", "documents", "metadatas"] };
const vec = (i: number) => [i, 1 - i, i * 2];

const view = (m: Mapping) => ({
  name: m.collection_name,
  id: m.collection_id,
  primary: m.primary_collection_id,
  replica: m.replica_collection_id,
  complete: m.complete,
  missing_on: m.missing_on,
});

interface Mapping {
  collection_name: string;
  collection_id: string;
  tenant: string;
  database: string;
  primary_collection_id: string | null;
  replica_collection_id: string | null;
  complete: boolean;
  missing_on: string[];
}

async function call<T>(url: string, init?: RequestInit): Promise<T> {
  const res = await fetch(url, init);
  const body = await res.text();
  if (!res.ok) throw new Error(`${init?.method ?? "GET"} ${url} answered ${res.status}: ${body}`);
  return JSON.parse(body) as T;
}

/** Creates a collection on one instance directly (as before chroma-lb existed) and fills it. */
async function createDirectly(server: ChromaServer, name: string, ids: string[], where = T()) {
  const c = await call<{ id: string }>(`${server.url}${where}/collections`, post({ name, configuration: {} }));
  if (ids.length) {
    await call(`${server.url}${where}/collections/${c.id}/add`, post({
      ids,
      embeddings: ids.map((_, i) => vec(i)),
      documents: ids.map((id) => `text of ${id}`),
      metadatas: ids.map((id, i) => ({ i, origin: id })),
    }));
  }
  return c.id;
}

const recordsOn = (server: ChromaServer, uuid: string, where = T()) =>
  call<{ ids: string[]; documents: string[]; [field: string]: unknown }>(`${server.url}${where}/collections/${uuid}/get`, post(everything));

test("collections found on the instances are adopted under the primary's UUID and replicated from then on", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];

  // Before chroma-lb: the same collections on both (each under its own UUID), one on the primary only.
  const seed = ["s1", "s2", "s3"];
  const uuids = {
    sharedA: { primary: await createDirectly(primary, "shared_a", seed), replica: await createDirectly(replica, "shared_a", seed) },
    sharedB: { primary: await createDirectly(primary, "shared_b", ["b1"]), replica: await createDirectly(replica, "shared_b", ["b1"]) },
    primaryOnly: { primary: await createDirectly(primary, "primary_only", ["p1"]) },
  };
  expect(uuids.sharedA.primary).not.toBe(uuids.sharedA.replica);

  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });

  // The shared ones are mapped under the primary's UUID. The primary-only one is adopted
  // too, created on the replica and its records copied there before chroma-lb serves.
  const { mappings } = await call<{ mappings: Mapping[] }>(`${lb.url}/collection/mappings`);
  const primaryOnlyOnReplica = await call<{ id: string }>(`${replica.url}${T()}/collections/primary_only`);
  expect(primaryOnlyOnReplica.id).not.toBe(uuids.primaryOnly.primary);
  expect(mappings.map(view).sort((a, b) => a.name.localeCompare(b.name))).toEqual([
    { name: "primary_only", id: uuids.primaryOnly.primary, primary: uuids.primaryOnly.primary, replica: primaryOnlyOnReplica.id, complete: true, missing_on: [] },
    { name: "shared_a", id: uuids.sharedA.primary, primary: uuids.sharedA.primary, replica: uuids.sharedA.replica, complete: true, missing_on: [] },
    { name: "shared_b", id: uuids.sharedB.primary, primary: uuids.sharedB.primary, replica: uuids.sharedB.replica, complete: true, missing_on: [] },
  ]);
  expect(await recordsOn(replica, primaryOnlyOnReplica.id)).toEqual(await recordsOn(primary, uuids.primaryOnly.primary));

  // Clients see the id they already knew: the primary's UUID, from every answer.
  const sharedA = await client.getCollection({ name: "shared_a" });
  expect(sharedA.id).toBe(uuids.sharedA.primary);
  expect((await client.getCollectionById(uuids.sharedA.primary)).name).toBe("shared_a");
  expect(Object.fromEntries((await client.listCollections()).map((c) => [c.name, c.id]))).toEqual({
    primary_only: uuids.primaryOnly.primary,
    shared_a: uuids.sharedA.primary,
    shared_b: uuids.sharedB.primary,
  });
  expect(await sharedA.get()).toMatchObject({ ids: seed, documents: seed.map((id) => `text of ${id}`) });

  // Writes through chroma-lb reach both copies of an adopted collection.
  await sharedA.add({ ids: ["n1", "n2"], embeddings: [vec(10), vec(11)], documents: ["new one", "new two"], metadatas: [{ i: 10 }, { i: 11 }] });
  await sharedA.update({ ids: ["s2"], metadatas: [{ updated: true }] });
  await sharedA.delete({ ids: ["s3"] });
  await waitFor(async () => (await call<{ pending_writes: number }>(`${lb.url}/wal/status`)).pending_writes === 0, {
    message: "both instances applied the writes",
  });
  const onPrimary = await recordsOn(primary, uuids.sharedA.primary);
  const onReplica = await recordsOn(replica, uuids.sharedA.replica);
  expect(onPrimary).toEqual({
    ids: ["s1", "s2", "n1", "n2"],
    embeddings: [vec(0), vec(1), vec(10), vec(11)],
    documents: ["text of s1", "text of s2", "new one", "new two"],
    metadatas: [{ i: 0, origin: "s1" }, { i: 1, origin: "s2", updated: true }, { i: 10 }, { i: 11 }],
    uris: null,
    include: everything.include,
  });
  expect(onReplica).toEqual(onPrimary);
  // The other adopted collection was left as it was.
  expect((await recordsOn(replica, uuids.sharedB.replica)).ids).toEqual(["b1"]);

  // And the filled copy takes writes like the others.
  const primaryOnly = await client.getCollection({ name: "primary_only" });
  expect(primaryOnly.id).toBe(uuids.primaryOnly.primary);
  await primaryOnly.upsert({ ids: ["p2"], embeddings: [vec(2)], documents: ["written through chroma-lb"] });
  await waitFor(async () => (await call<{ pending_writes: number }>(`${lb.url}/wal/status`)).pending_writes === 0, {
    message: "both instances applied the upsert",
  });
  const primaryOnlyOnPrimary = await recordsOn(primary, uuids.primaryOnly.primary);
  expect(primaryOnlyOnPrimary.documents).toEqual(["text of p1", "written through chroma-lb"]);
  expect(await recordsOn(replica, primaryOnlyOnReplica.id)).toEqual(primaryOnlyOnPrimary);
}, 60_000);

test("a collection found in a tenant chroma-lb has not seen yet is adopted on first use", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
  const where = T("acme", "books");
  for (const server of [primary, replica]) {
    await call(`${server.url}/api/v2/tenants`, post({ name: "acme" }));
    await call(`${server.url}/api/v2/tenants/acme/databases`, post({ name: "books" }));
  }
  const primaryUuid = await createDirectly(primary, "novels", ["n1"], where);
  const replicaUuid = await createDirectly(replica, "novels", ["n1"], where);

  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port, tenant: "acme", database: "books" });
  const novels = await client.getCollection({ name: "novels" });
  expect(novels.id).toBe(primaryUuid);
  await novels.add({ ids: ["n2"], embeddings: [vec(2)], documents: ["text of n2"] });
  await waitFor(async () => (await call<{ pending_writes: number }>(`${lb.url}/wal/status`)).pending_writes === 0, {
    message: "both instances applied the add",
  });
  expect((await recordsOn(primary, primaryUuid, where)).ids).toEqual(["n1", "n2"]);
  expect((await recordsOn(replica, replicaUuid, where)).ids).toEqual(["n1", "n2"]);
}, 60_000);

test("a collection only one instance holds is reported incomplete until the other is back and has a copy", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url });
  const setReplicaHealth = (body: unknown) => call(`${lb.url}/admin/instances/replica/health`, post(body));
  const mappingOf = async (name: string) =>
    (await call<{ mappings: Mapping[] }>(`${lb.url}/collection/mappings`)).mappings.map(view).find((m) => m.name === name);

  // While the replica is out, a collection appears on the primary (bypassing chroma-lb).
  await setReplicaHealth({ healthy: false });
  const uuid = await createDirectly(primary, "late_arrival", ["l1", "l2"]);
  await call(`${lb.url}/admin/adopt`, { method: "POST" });
  expect(await mappingOf("late_arrival")).toEqual({ name: "late_arrival", id: uuid, primary: uuid, replica: null, complete: false, missing_on: ["replica"] });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  expect((await client.getCollection({ name: "late_arrival" })).id).toBe(uuid);

  // The replica returns: adoption creates the collection there and copies the records.
  await setReplicaHealth({ healthy: true, clear: true });
  const filled = await waitFor(async () => {
    const m = await mappingOf("late_arrival");
    return m?.complete ? m : undefined;
  }, { message: "late_arrival filled on the replica" });
  expect(filled).toEqual({ name: "late_arrival", id: uuid, primary: uuid, replica: expect.stringMatching(/^[0-9a-f-]{36}$/), complete: true, missing_on: [] });
  expect(await recordsOn(replica, filled.replica!)).toEqual(await recordsOn(primary, uuid));
  expect((await recordsOn(replica, filled.replica!)).ids).toEqual(["l1", "l2"]);
}, 60_000);
