/**
 * One bad entry never blocks anything. A merged write that holds an entry Chroma refuses is
 * split until that entry is refused alone, and its client gets Chroma's own error; an
 * instance that refuses what another applied has that collection marked diverged, reads of
 * it avoid that instance, and replay of everything else goes on.
 */
import { afterAll, expect, test } from "bun:test";
import { killAll, startChroma, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";
import { canonicalGet, postRaw } from "../support/raw";
import { alertReceiver } from "../support/alerts";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const getAll = JSON.stringify({ include: ["documents", "metadatas", "embeddings"] });

const addBody = (id: string, embedding: string, metadata = `{"n":1.0}`) =>
  `{"ids":[${JSON.stringify(id)}],"embeddings":[${embedding}],"documents":["doc ${id}"],"metadatas":[${metadata}]}`;

async function mappingOf(lbUrl: string, name: string): Promise<Record<string, string>> {
  const { mappings } = await json(`${lbUrl}/collection/mappings`);
  return mappings.find((m: { collection_name: string }) => m.collection_name === name).instances;
}

async function drained(lbUrl: string, message: string) {
  await waitFor(async () => (await json(`${lbUrl}/wal/status`)).pending_writes === 0, { message });
}

test("a merged write holding entries Chroma refuses: each bad one is refused alone with Chroma's answer, the rest applied on both instances", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lone = await startChroma();
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });

  const create = `{"name":"mixed","configuration":{}}`;
  const { text } = await postRaw(`${lb.url}${T}/collections`, create);
  const id = (JSON.parse(text) as { id: string }).id;
  const loneId = (JSON.parse((await postRaw(`${lone.url}${T}/collections`, create)).text) as { id: string }).id;
  // The collection's dimension is 3 from its first record on.
  const seedBody = addBody("seed", "[0.5, 1.0, -0.0]");
  expect((await postRaw(`${lb.url}${T}/collections/${id}/add`, seedBody)).status).toBe(201);
  expect((await postRaw(`${lone.url}${T}/collections/${loneId}/add`, seedBody)).status).toBe(201);

  // The replica is down, so every write piles up for replay too.
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: false })).status).toBe(200);
  const bad = new Map([
    // URL-safe base64, which Chroma refuses (a merge that decoded it once made it pass).
    ["urlsafe", addBody("urlsafe", `"mpmZPpqZ2b-amTlA"`)],
    // Metadata values may not be objects.
    ["nested", addBody("nested", "[1.0, 2.0, 3.0]", `{"n":{"deep":1}}`)],
    // The wrong dimension.
    ["wide", addBody("wide", "[1.0, 2.0, 3.0, 4.0]")],
  ]);
  const good = Array.from({ length: 12 }, (_, i) =>
    addBody(`ok-${i}`, i % 2 ? `"${Buffer.from(Float32Array.of(i, 0.5, -1).buffer).toString("base64")}"` : `[${i}.0, 0.25, -1.5]`),
  );
  const bodies = [...good.slice(0, 4), bad.get("urlsafe")!, ...good.slice(4, 8), bad.get("nested")!, ...good.slice(8), bad.get("wide")!];
  const answers = await Promise.all(bodies.map((body) => postRaw(`${lb.url}${T}/collections/${id}/add`, body)));

  // What the lone server answers each body alone is what chroma-lb answers it.
  const expected = [];
  for (const body of bodies) {
    const alone = await postRaw(`${lone.url}${T}/collections/${loneId}/add`, body);
    expected.push({ status: alone.status, error: alone.status === 201 ? undefined : (JSON.parse(alone.text) as { error: string }).error });
  }
  const got = answers.map((a) => ({ status: a.status, error: a.status === 201 ? undefined : (JSON.parse(a.text) as { error: string }).error }));
  expect(got).toEqual(expected);
  expect(got.filter((a) => a.status !== 201).length).toBe(3);

  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true })).status).toBe(200);
  await drained(lb.url, "the replica caught up");
  const instances = await mappingOf(lb.url, "mixed");
  const want = canonicalGet((await postRaw(`${lone.url}${T}/collections/${loneId}/get`, getAll)).text);
  expect(canonicalGet((await postRaw(`${primary!.url}${T}/collections/${instances.primary}/get`, getAll)).text)).toBe(want);
  expect(canonicalGet((await postRaw(`${replica!.url}${T}/collections/${instances.replica}/get`, getAll)).text)).toBe(want);
  const wal = await json(`${lb.url}/wal/status`);
  expect({ failed: wal.failed, diverged: wal.diverged }).toEqual({ failed: [], diverged: [] });
  // Refused entries keep no body in the log.
  expect(wal.rejected_entries).toBe(3);
});

test("an instance that refuses what another applied: the collection is marked diverged, reads avoid it, all else replays", async () => {
  using receiver = alertReceiver();
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    // Every read prefers the replica whenever it may serve, so a read it should not serve would show.
    READ_REPLICA_RATIO: "1",
    ALERT_WEBHOOK_URL: receiver.url,
    // The mark itself is what this test looks at; repair has its own tests.
    AUTO_REPAIR: "false",
  });

  for (const name of ["drift", "steady"]) expect((await postRaw(`${lb.url}${T}/collections`, `{"name":"${name}","configuration":{}}`)).status).toBe(200);
  await drained(lb.url, "both collections on both instances");
  const drift = await mappingOf(lb.url, "drift");
  const steady = await mappingOf(lb.url, "steady");
  // A write that bypassed chroma-lb gives the replica's copy another dimension.
  expect((await postRaw(`${replica!.url}${T}/collections/${drift.replica}/add`, addBody("bypass", "[1.0, 2.0]"))).status).toBe(201);

  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: false })).status).toBe(200);
  const driftAdds = Array.from({ length: 6 }, (_, i) => addBody(`d-${i}`, `[${i}.5, 1.0, 2.0]`));
  const steadyAdds = Array.from({ length: 6 }, (_, i) => addBody(`s-${i}`, `[${i}.5, 1.0]`));
  const answers = await Promise.all([
    ...driftAdds.map((b) => postRaw(`${lb.url}${T}/collections/drift/add`, b)),
    ...steadyAdds.map((b) => postRaw(`${lb.url}${T}/collections/steady/add`, b)),
  ]);
  expect(answers.map((a) => a.status)).toEqual(answers.map(() => 201));
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true })).status).toBe(200);

  // Nothing stays owed: the refused entries are recorded as a divergence, not retried forever.
  await drained(lb.url, "replay went past the refused entries");
  const wal = await json(`${lb.url}/wal/status`);
  expect(wal.failed).toEqual([]);
  expect(wal.diverged.map((d: Record<string, unknown>) => ({ instance: d.instance, collection: d.collection_name, op: d.op, refused: d.refused_entries }))).toEqual([
    { instance: "replica", collection: "drift", op: "add", refused: 6 },
  ]);
  expect(wal.diverged[0].error).toContain("400");
  const status = await json(`${lb.url}/status`);
  const replicaStatus = status.instances.find((i: { name: string }) => i.name === "replica");
  expect({ state: replicaStatus.state, diverged: replicaStatus.diverged_collections.map((d: { collection_name: string }) => d.collection_name) }).toEqual({
    state: "healthy",
    diverged: ["drift"],
  });
  const metrics = await (await fetch(`${lb.url}/metrics`)).text();
  expect(metrics).toContain('chroma_lb_diverged_collections{instance="replica"} 1');
  expect(metrics).toContain('chroma_lb_diverged_collections{instance="primary"} 0');
  await waitFor(() => receiver.alerts.some((a) => a.event === "collection_diverged"), { message: "the divergence alert arrived" });
  expect(receiver.alerts.filter((a) => a.event === "collection_diverged").map((a) => ({ instance: a.instance, collection: a.collection }))).toEqual([
    { instance: "replica", collection: "drift" },
  ]);

  // Reads of the diverged collection avoid the replica; the other collection's reads still go there.
  for (let i = 0; i < 5; i++) {
    const read = await postRaw(`${lb.url}${T}/collections/drift/get`, getAll);
    expect({ status: read.status, instance: read.headers.get("x-chroma-lb-instance") }).toEqual({ status: 200, instance: "primary" });
    const other = await postRaw(`${lb.url}${T}/collections/steady/get`, getAll);
    expect({ status: other.status, instance: other.headers.get("x-chroma-lb-instance") }).toEqual({ status: 200, instance: "replica" });
  }
  expect(canonicalGet((await postRaw(`${replica!.url}${T}/collections/${steady.replica}/get`, getAll)).text)).toBe(
    canonicalGet((await postRaw(`${primary!.url}${T}/collections/${steady.primary}/get`, getAll)).text),
  );

  // Later writes of the diverged collection still go through and never pile up.
  expect((await postRaw(`${lb.url}${T}/collections/drift/add`, addBody("after", "[9.0, 9.0, 9.0]"))).status).toBe(201);
  await drained(lb.url, "the later write was replayed (and refused) without blocking");
  expect((await json(`${lb.url}/wal/status`)).diverged[0].refused_entries).toBe(7);
});

test("deleting a database that holds a protected collection is refused and changes nothing", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const db2 = "/api/v2/tenants/default_tenant/databases/db2";
  const db3 = "/api/v2/tenants/default_tenant/databases/db3";
  expect((await post(`${lb.url}/api/v2/tenants/default_tenant/databases`, { name: "db2" })).status).toBe(200);
  expect((await post(`${lb.url}/api/v2/tenants/default_tenant/databases`, { name: "db3" })).status).toBe(200);
  expect((await post(`${lb.url}${db2}/collections`, { name: "global", configuration: {} })).status).toBe(200);
  expect((await post(`${lb.url}${db3}/collections`, { name: "scratch", configuration: {} })).status).toBe(200);
  await drained(lb.url, "both databases on both instances");

  const refused = await fetch(`${lb.url}${db2}`, { method: "DELETE" });
  expect(refused.status).toBe(403);
  expect(((await refused.json()) as { error: string; message: string }).message).toContain("global");
  const allowed = await fetch(`${lb.url}${db3}`, { method: "DELETE" });
  expect(allowed.status).toBe(200);
  await drained(lb.url, "the allowed delete reached both instances");

  for (const server of [primary!, replica!]) {
    const names = ((await json(`${server.url}${db2}/collections`)) as Array<{ name: string }>).map((c) => c.name);
    expect({ server: server.url, names }).toEqual({ server: server.url, names: ["global"] });
    expect((await fetch(`${server.url}${db3}`)).status).toBe(404);
  }
});
