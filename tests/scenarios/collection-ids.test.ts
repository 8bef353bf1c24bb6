/**
 * One collection id that never changes: a collection created through chroma-lb keeps the
 * id of its create answer in every answer, while each instance knows it under its own
 * UUID, and it keeps it while the primary is dead and after it comes back.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, startLbProcess, waitFor, type ChromaServer } from "../support";

afterAll(() => killAll());

const json = { "content-type": "application/json" };
const T = "/api/v2/tenants/default_tenant/databases/default_database";
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Mapping {
  collection_name: string;
  collection_id: string;
  primary_collection_id: string | null;
  replica_collection_id: string | null;
  complete: boolean;
}

const vec = (i: number) => [i, i / 2, -i];
const records = (from: number, to: number) => {
  const ns = Array.from({ length: to - from + 1 }, (_, i) => from + i);
  return {
    ids: ns.map((n) => `r${n}`),
    embeddings: ns.map(vec),
    documents: ns.map((n) => `document ${n}`),
    metadatas: ns.map((n) => ({ n, half: n <= 10 ? "first" : "second" })),
  };
};

async function getJson<T>(url: string, init?: RequestInit): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await fetch(url, init);
  return { status: res.status, body: (await res.json()) as T, headers: res.headers };
}

const post = (body: unknown): RequestInit => ({ method: "POST", headers: json, body: JSON.stringify(body) });
const everything = { include: ["embeddings", "documents", "metadatas"] };

/** Records of a collection read from one instance directly, by name. */
async function onInstance(server: ChromaServer, name: string) {
  const { body: c } = await getJson<{ id: string }>(`${server.url}${T}/collections/${name}`);
  const { body } = await getJson<unknown>(`${server.url}${T}/collections/${c.id}/get`, post(everything));
  return { uuid: c.id, records: body };
}

test("a collection keeps one id across answers, instances, a primary crash and its return", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers as unknown as [ChromaServer, ChromaServer];
  await using lb = await startLbProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const pendingWrites = async () => (await getJson<{ pending_writes: number }>(`${lb.url}/wal/status`)).body.pending_writes;
  const mapping = async (name: string) =>
    (await getJson<{ mappings: Mapping[] }>(`${lb.url}/collection/mappings`)).body.mappings.find((m) => m.collection_name === name);

  // The id of the create answer is the id of every later answer.
  const created = await client.createCollection({ name: "stable", metadata: { owner: "ids" }, embeddingFunction: null });
  const id = created.id;
  expect(id).toMatch(uuidPattern);
  expect((await client.getCollection({ name: "stable" })).id).toBe(id);
  expect((await client.getOrCreateCollection({ name: "stable", embeddingFunction: null })).id).toBe(id);
  expect((await client.listCollections()).map((c) => ({ name: c.name, id: c.id }))).toEqual([{ name: "stable", id }]);
  expect((await client.getCollectionById(id)).name).toBe("stable");
  const before = records(1, 20);
  await created.add(before);

  // Each instance holds it under its own UUID; the mapping ties them to the one id.
  await waitFor(async () => (await pendingWrites()) === 0, { message: "replica caught up with the create and the add" });
  const onPrimary = await onInstance(primary, "stable");
  const onReplica = await onInstance(replica, "stable");
  expect(new Set([id, onPrimary.uuid, onReplica.uuid]).size).toBe(3);
  expect(await mapping("stable")).toMatchObject({
    collection_id: id,
    primary_collection_id: onPrimary.uuid,
    replica_collection_id: onReplica.uuid,
    complete: true,
  });
  expect(onReplica.records).toEqual(onPrimary.records);

  // The primary dies.
  await primary.kill("SIGKILL");
  expect((await client.getCollection({ name: "stable" })).id).toBe(id);
  expect((await client.listCollections()).map((c) => c.id)).toEqual([id]);

  const expectedBefore = {
    ids: before.ids,
    embeddings: before.embeddings,
    documents: before.documents,
    metadatas: before.metadatas,
    uris: null,
    include: everything.include,
  };
  const get = await getJson<unknown>(`${lb.url}${T}/collections/${id}/get`, post(everything));
  expect({ status: get.status, served: get.headers.get("x-chroma-lb-instance"), body: get.body }).toEqual({
    status: 200,
    served: "replica",
    body: expectedBefore,
  });
  const query = await getJson<{ ids: string[][]; documents: string[][] }>(
    `${lb.url}${T}/collections/${id}/query`,
    post({ query_embeddings: [vec(7)], n_results: 3, include: ["documents"] }),
  );
  expect({ status: query.status, served: query.headers.get("x-chroma-lb-instance"), ids: query.body.ids, documents: query.body.documents }).toEqual({
    status: 200,
    served: "replica",
    ids: [["r7", "r6", "r8"]],
    documents: [["document 7", "document 6", "document 8"]],
  });
  const count = await getJson<number>(`${lb.url}${T}/collections/${id}/count`);
  expect({ status: count.status, served: count.headers.get("x-chroma-lb-instance"), body: count.body }).toEqual({ status: 200, served: "replica", body: 20 });

  // Writes during the outage succeed, a new collection included.
  const stable = await client.getCollection({ name: "stable" });
  expect(stable.id).toBe(id);
  await stable.add(records(21, 30));
  await stable.upsert({ ids: ["r2"], embeddings: [vec(2.5)], documents: ["document 2, upserted"], metadatas: [{ n: 2, half: "first", upserted: true }] });
  await stable.delete({ ids: ["r3"] });
  await stable.delete({ where: { n: { $gte: 29 } } });
  const outage = await client.createCollection({ name: "made_during_outage", embeddingFunction: null });
  await outage.add({ ids: ["o1"], embeddings: [vec(1)], documents: ["during the outage"] });
  expect(await stable.count()).toBe(20 - 1 + 10 - 2);
  expect((await mapping("made_during_outage"))).toMatchObject({ collection_id: outage.id, primary_collection_id: null, complete: false });

  // The primary returns and catches up; the ids stay.
  await primary.restart();
  await waitFor(
    async () => {
      const status = (await getJson<{ instances: Array<{ name: string; healthy: boolean; pending_entries: number }> }>(`${lb.url}/wal/status`)).body;
      return status.instances.every((i) => i.healthy && i.pending_entries === 0);
    },
    { timeoutMs: 30_000, message: "primary healthy again with nothing pending" },
  );
  for (const name of ["stable", "made_during_outage"]) {
    const [p, r] = [await onInstance(primary, name), await onInstance(replica, name)];
    expect({ name, records: p.records }).toEqual({ name, records: r.records });
    expect(await mapping(name)).toMatchObject({ primary_collection_id: p.uuid, replica_collection_id: r.uuid, complete: true });
  }
  const stableOnPrimary = (await onInstance(primary, "stable")).records as { ids: string[]; documents: string[] };
  expect(stableOnPrimary.ids).toEqual([...before.ids.filter((i) => i !== "r3"), ...records(21, 28).ids]);
  expect(stableOnPrimary.documents[1]).toBe("document 2, upserted");
  expect((await onInstance(primary, "stable")).uuid).toBe(onPrimary.uuid);
  expect((await client.getCollection({ name: "stable" })).id).toBe(id);
  expect((await client.getCollection({ name: "made_during_outage" })).id).toBe(outage.id);
  expect((await client.listCollections()).map((c) => c.id).sort()).toEqual([id, outage.id].sort());
}, 60_000);

test("a copy whose UUID chroma-lb never recorded is found by name on its instance, and replay goes on", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const created = await getJson<{ id: string }>(`${lb.url}${T}/collections`, post({ name: "unrecorded" }));
  expect(created.status).toBe(200);
  const record = await waitFor(() => {
    const known = lb.services.collections.get(created.body.id);
    return known?.instanceUuids.has("replica") ? known : null;
  });
  const replicaUuid = record.instanceUuids.get("replica")!;
  // What a node cut off or killed between applying a replayed create and recording its answer leaves.
  record.instanceUuids.delete("replica");
  // Adoption would link it again at its next pass (every minute, or when an instance comes
  // back); here replay alone must find it.
  const noPass = { adopted: [], linked: 0, incomplete: [], filled: [], scannedInstances: [] };
  lb.services.adoption.adoptOnce = async () => noPass;
  lb.services.adoption.adoptSoon = async () => {};

  const add = await getJson<unknown>(`${lb.url}${T}/collections/${created.body.id}/add`, post(records(1, 3)));
  expect(add.status).toBe(201);
  const onReplica = await waitFor(async () => {
    const got = await getJson<{ ids: string[] }>(`${replica!.url}${T}/collections/${replicaUuid}/get`, post({}));
    return got.body.ids.length === 3 ? got.body.ids.sort() : null;
  });
  expect(onReplica).toEqual(["r1", "r2", "r3"]);
  expect(record.instanceUuids.get("replica")).toBe(replicaUuid);
});

test("a replayed drop never deletes a newer collection that took the name on that instance", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const old = await getJson<{ id: string }>(`${lb.url}${T}/collections`, post({ name: "taken" }));
  await waitFor(() => lb.services.collections.get(old.body.id)?.instanceUuids.size === 2);
  const oldOnReplica = lb.services.collections.get(old.body.id)!.instanceUuids.get("replica")!;
  expect((await getJson<unknown>(`${lb.url}/admin/instances/replica/health`, post({ healthy: false }))).status).toBe(200);
  expect((await fetch(`${lb.url}${T}/collections/taken`, { method: "DELETE" })).status).toBe(200);
  // Meanwhile the replica lost the old copy and holds a newer one under the name (what a
  // fill or a resync makes there before the drop is replayed).
  expect((await fetch(`${replica!.url}${T}/collections/taken`, { method: "DELETE" })).status).toBe(200);
  const newer = await getJson<{ id: string }>(`${replica!.url}${T}/collections`, post({ name: "taken" }));
  expect(newer.body.id).not.toBe(oldOnReplica);
  const again = await getJson<{ id: string }>(`${lb.url}${T}/collections`, post({ name: "taken" }));
  expect(again.status).toBe(200);

  expect((await getJson<unknown>(`${lb.url}/admin/instances/replica/health`, post({ healthy: true }))).status).toBe(200);
  // The old drop is replayed first, then the new create (409 there: linked to what is there).
  const linked = await waitFor(() => lb.services.collections.get(again.body.id)?.instanceUuids.get("replica") ?? null);
  expect(linked).toBe(newer.body.id);
  expect((await getJson<{ id: string }>(`${replica!.url}${T}/collections/taken`)).body.id).toBe(newer.body.id);
});
