/**
 * Two chroma-lb nodes on one Postgres (LOG_STORE=postgres, a private server), two real
 * Chroma servers: what one node is told holds on the other within 2 s.
 * - /status lists both nodes (id, address, heartbeat, leases) on each node, and /metrics
 *   carries each node's `node` label; with SQLite the one node lists itself alone.
 * - Maintenance and simulated outages moved through one node hold on the other; a simulated
 *   outage takes an instance out of routing on every node while /status still says what
 *   the probes see, and {"healthy": true} through either node ends it everywhere.
 * - A collection created through one node is served by the other; a mapping removed through
 *   one is gone on the other.
 * - A resync asked while another node runs the same one is refused with that node's name,
 *   and every node's /status shows the running operation.
 * - An instance that goes down is posted once for the cluster, and so is its return.
 * - A reset through one node clears the other node's mappings and log view too.
 * - While Postgres is down, /status still answers within a second or so (saying since when its cluster
 *   lists are old), and a switch is refused (503) rather than held on one node only.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import postgres from "postgres";
import { ClusterJobs } from "../../src/cluster/jobs";
import { alertReceiver } from "../support/alerts";
import { json, post } from "../support/http";
import { startPgServer, type PgServer } from "../support/pg-server";
import { startTcpProxy } from "../support/tcp-proxy";
import { killAll, startChromaServers, startLbInProcess, waitFor, type ChromaServers } from "../support";

const T = "/api/v2/tenants/default_tenant/databases/default_database";
/** What the issue promises: a change through one node holds on all within this. */
const clusterWideMsMax = 2_000;

let pg: PgServer;
let servers: ChromaServers;

beforeAll(async () => {
  [pg, servers] = await Promise.all([startPgServer(), startChromaServers(2)]);
}, 60_000);

afterAll(async () => {
  await servers?.[Symbol.asyncDispose]();
  await pg?.stop();
  await killAll();
});

/** Two nodes, `a` and `b`, on a database of their own. */
async function twoNodes(env: Record<string, string> = {}, chroma: ChromaServers = servers, server: PgServer = pg) {
  const databaseUrl = await server.freshDatabase("state");
  const common = {
    CHROMA_PRIMARY_URL: chroma[0]!.url,
    CHROMA_REPLICA_URL: chroma[1]!.url,
    LOG_STORE: "postgres",
    DATABASE_URL: databaseUrl,
    HEALTH_CHECK_INTERVAL: "1",
    HEALTH_CHECK_TIMEOUT: "0.3",
    ...env,
  };
  const a = await startLbInProcess({ ...common, NODE_ID: "a" });
  const b = await startLbInProcess({ ...common, NODE_ID: "b" });
  return {
    a,
    b,
    databaseUrl,
    async [Symbol.asyncDispose]() {
      await Promise.all([a[Symbol.asyncDispose](), b[Symbol.asyncDispose]()]);
    },
  };
}

interface InstanceStatus {
  name: string;
  healthy: boolean;
  state: string;
  maintenance: boolean;
  probe_healthy: boolean;
  simulated: { healthy: boolean; until: string | null } | null;
}
const instance = async (url: string, name: string) => (await json<{ instances: InstanceStatus[] }>(`${url}/status`)).instances.find((i) => i.name === name)!;

/** Waits for `condition` and says how long it took from `sinceMs`. */
async function within<T>(sinceMs: number, condition: () => Promise<T>, message: string): Promise<number> {
  await waitFor(condition, { timeoutMs: 10_000, message });
  return performance.now() - sinceMs;
}

test("each node's /status lists every live node with its heartbeat and leases; /metrics carries the node label", async () => {
  await using cluster = await twoNodes();
  const { a, b } = cluster;
  for (const node of [a, b]) {
    const status = await waitFor(async () => {
      const s = await json<{ node_id: string; nodes: Array<{ id: string; address: string; last_heartbeat_at: string; leases: number }> }>(`${node.url}/status`);
      return s.nodes.length === 2 ? s : null;
    });
    expect(status.nodes.map((n) => ({ id: n.id, address: n.address, leases: typeof n.leases }))).toEqual([
      { id: "a", address: a.url, leases: "number" },
      { id: "b", address: b.url, leases: "number" },
    ]);
    for (const n of status.nodes) expect(Date.now() - Date.parse(n.last_heartbeat_at)).toBeLessThan(10_000);
    expect(status.node_id).toBe(node === a ? "a" : "b");
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    const samples = metrics.split("\n").filter((line) => line.startsWith("chroma_lb_"));
    expect(samples.length).toBeGreaterThan(10);
    expect(samples.filter((line) => !line.includes(`node="${status.node_id}"`))).toEqual([]);
  }
  // A node that stops deletes its row: the others' lists (read each second) drop it at once.
  const stoppedAt = performance.now();
  await b.stop();
  const nodesOfA = async () => (await json<{ nodes: Array<{ id: string }> }>(`${a.url}/status`)).nodes.map((n) => n.id);
  expect(await within(stoppedAt, async () => JSON.stringify(await nodesOfA()) === JSON.stringify(["a"]), "a's list drops b")).toBeLessThan(clusterWideMsMax);
});

test("with SQLite, /status lists this node alone", async () => {
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: servers[0]!.url, CHROMA_REPLICA_URL: servers[1]!.url, LOG_STORE: "sqlite", NODE_ID: "solo" });
  const status = await json<{ nodes: unknown[] }>(`${lb.url}/status`);
  expect(status.nodes).toEqual([{ id: "solo", address: null, last_heartbeat_at: null, leases: 0 }]);
});

test("maintenance and simulated outages moved through one node hold on the other within 2 s; a simulation never changes what is reported", async () => {
  await using cluster = await twoNodes();
  const { a, b } = cluster;
  await waitFor(async () => (await instance(b.url, "replica")).healthy && (await instance(a.url, "replica")).healthy);

  // Maintenance on through a, seen by b; off through b, seen by a.
  let start = performance.now();
  expect((await post(`${a.url}/admin/instances/replica/maintenance`, { enabled: true })).status).toBe(200);
  expect(await within(start, async () => (await instance(b.url, "replica")).state === "maintenance", "b sees maintenance")).toBeLessThan(clusterWideMsMax);
  start = performance.now();
  expect((await post(`${b.url}/admin/instances/replica/maintenance`, { enabled: false })).status).toBe(200);
  expect(await within(start, async () => (await instance(a.url, "replica")).state === "healthy", "a sees maintenance end")).toBeLessThan(clusterWideMsMax);

  // A simulated outage through b takes the replica out on a; the probes' view is still reported.
  start = performance.now();
  expect((await post(`${b.url}/admin/instances/replica/health`, { healthy: false })).status).toBe(200);
  expect(await within(start, async () => (await instance(a.url, "replica")).state === "down", "a sees the simulation")).toBeLessThan(clusterWideMsMax);
  const onA = await instance(a.url, "replica");
  expect({ healthy: onA.healthy, probe_healthy: onA.probe_healthy, simulated: onA.simulated }).toEqual({ healthy: false, probe_healthy: true, simulated: { healthy: false, until: null } });
  expect((await json<{ healthy_instances: string }>(`${a.url}/health`)).healthy_instances).toBe("1/2");

  // {"healthy": true} through a ends it on b.
  start = performance.now();
  expect((await post(`${a.url}/admin/instances/replica/health`, { healthy: true })).status).toBe(200);
  expect(await within(start, async () => (await instance(b.url, "replica")).healthy, "b sees the simulation end")).toBeLessThan(clusterWideMsMax);
  expect((await instance(b.url, "replica")).simulated).toBeNull();

  // A timed simulation through a holds on b, then ends on both by itself.
  expect((await post(`${a.url}/admin/instances/replica/health`, { healthy: false, duration_seconds: 3 })).status).toBe(200);
  await waitFor(async () => (await instance(b.url, "replica")).state === "down", { timeoutMs: clusterWideMsMax, message: "b sees the timed simulation" });
  await waitFor(async () => (await instance(a.url, "replica")).healthy && (await instance(b.url, "replica")).healthy, { timeoutMs: 10_000, message: "the timed simulation ends on both" });
});

test("a collection created through one node is served by the other; a mapping removed through one is gone on the other within 2 s", async () => {
  await using cluster = await twoNodes();
  const { a, b } = cluster;
  const viaA = new ChromaClient({ host: "127.0.0.1", port: a.port });
  const viaB = new ChromaClient({ host: "127.0.0.1", port: b.port });
  const start = performance.now();
  const docs = await viaA.createCollection({ name: `docs_${crypto.randomUUID().slice(0, 8)}`, embeddingFunction: null });
  const mappedOnB = async () => (await json<{ mappings: Array<{ collection_name: string }> }>(`${b.url}/collection/mappings`)).mappings.some((m) => m.collection_name === docs.name);
  expect(await within(start, mappedOnB, "b knows the collection")).toBeLessThan(clusterWideMsMax);
  await docs.add({ ids: ["x"], embeddings: [[1, 2]], documents: ["x"] });
  const onB = await viaB.getCollection({ name: docs.name });
  expect(onB.id).toBe(docs.id);
  const read = await waitFor(async () => {
    const got = await onB.get({ ids: ["x"] });
    return got.ids.length ? got : null;
  });
  expect(read.documents).toEqual(["x"]);

  const removedAt = performance.now();
  expect((await fetch(`${b.url}/collection/mappings/${docs.name}`, { method: "DELETE" })).status).toBe(200);
  expect(await within(removedAt, async () => !(await mappedOnB.call(null)) && !(await json<{ mappings: Array<{ collection_name: string }> }>(`${a.url}/collection/mappings`)).mappings.some((m) => m.collection_name === docs.name), "a forgets the mapping")).toBeLessThan(clusterWideMsMax);
});

test("a collection read through a node whose log view lags skips an instance that has not made its copy yet, rather than answering its 404", async () => {
  await using cluster = await twoNodes({ READ_REPLICA_RATIO: "1" });
  const { a, b } = cluster;
  // Nothing reaches the replica for now, and b's view of the log stays as it is: b takes the
  // replica for caught up, and sends reads there first.
  await a.services.replayer.pause();
  await b.services.replayer.pause();
  b.services.wal.refreshView = async () => {};
  const name = `unmade_${crypto.randomUUID().slice(0, 8)}`;
  const created = await post(`${a.url}${T}/collections`, { name, configuration: {} });
  expect(created.status).toBe(200);
  const { id } = (await created.json()) as { id: string };
  await waitFor(async () => (await b.services.cluster!.mappingsCurrent()) && b.services.collections.get(id)?.instanceUuids.has("primary"), { message: "b maps the primary's copy" });
  expect(b.services.collections.get(id)!.instanceUuids.has("replica")).toBe(false);
  for (const path of [name, `by-id/${id}`]) {
    const read = await fetch(`${b.url}${T}/collections/${path}`);
    expect({ path, status: read.status, instance: read.headers.get("x-chroma-lb-instance") }).toEqual({ path, status: 200, instance: "primary" });
  }
  a.services.replayer.resume();
  b.services.replayer.resume();
});

test("a record write through a node that has not yet learned of a drop made through another is answered 404, and nothing is logged", async () => {
  await using cluster = await twoNodes();
  const { a, b, databaseUrl } = cluster;
  const name = `dropped_${crypto.randomUUID().slice(0, 8)}`;
  const created = await post(`${a.url}${T}/collections`, { name, configuration: {} });
  expect(created.status).toBe(200);
  const { id } = (await created.json()) as { id: string };
  const mappedOnB = async () => (await json<{ mappings: Array<{ collection_name: string }> }>(`${b.url}/collection/mappings`)).mappings.some((m) => m.collection_name === name);
  await waitFor(mappedOnB, { timeoutMs: clusterWideMsMax, message: "b knows the collection" });
  // The window the chaos run found (seed 734099232, NODES=3): b has not learned of the drop
  // yet. Held open here by closing both ways b's memory learns of one: a reload of the
  // mappings, and b's own replay of the logged delete to an instance it holds the lease of.
  b.services.collections.refreshOnce = async () => false;
  b.services.collections.markDeleted = async () => {};
  expect((await fetch(`${a.url}${T}/collections/${name}`, { method: "DELETE" })).status).toBe(200);
  expect(await mappedOnB()).toBe(true);

  const upsert = await post(`${b.url}${T}/collections/${name}/upsert`, { ids: ["late"], embeddings: [[1, 2, 3]] });
  expect({ status: upsert.status, body: await upsert.json() }).toEqual({
    status: 404,
    body: { error: "NotFoundError", message: `Collection [${id}] does not exists.` },
  });
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<Array<{ op: string }>>`SELECT op FROM chroma_lb_wal_entries WHERE partition = ${id} ORDER BY seq`;
    expect(rows.map((r) => r.op)).toEqual(["create_collection", "delete_collection"]);
  } finally {
    await sql.end({ timeout: 2 });
  }
});

/**
 * Holds b in the window where it has not learned of changes made through a: its poll and
 * hints do not reload the mappings, and its replay of a logged drop does not mark it in
 * memory. What a request on b itself reads from Postgres is left as it is.
 */
function holdBehind(node: Awaited<ReturnType<typeof twoNodes>>["b"]) {
  node.services.cluster!.mappingsOnce = async () => false;
  node.services.collections.markDeleted = async () => {};
  // Adoption reads the mappings first (and does nothing when it cannot): held too.
  node.services.adoption.refreshMappings = async () => false;
}

test("a get-or-create through a node that has not yet learned of a drop made through another creates the collection again", async () => {
  await using cluster = await twoNodes();
  const { a, b } = cluster;
  const name = `again_${crypto.randomUUID().slice(0, 8)}`;
  const created = await post(`${a.url}${T}/collections`, { name, configuration: {} });
  expect(created.status).toBe(200);
  const { id: oldId } = (await created.json()) as { id: string };
  await waitFor(() => b.services.collections.byName("default_tenant", "default_database", name)?.id === oldId, { timeoutMs: clusterWideMsMax, message: "b knows the collection" });
  holdBehind(b);
  expect((await fetch(`${a.url}${T}/collections/${name}`, { method: "DELETE" })).status).toBe(200);
  expect(b.services.collections.byName("default_tenant", "default_database", name)?.id).toBe(oldId);

  // Answered from b's memory, this was a 200 with the dropped collection's id, and nothing was created.
  const again = await post(`${b.url}${T}/collections`, { name, configuration: {}, get_or_create: true });
  expect(again.status).toBe(200);
  const { id: newId } = (await again.json()) as { id: string };
  expect(newId).not.toBe(oldId);
  const onA = await waitFor(async () => {
    const got = await fetch(`${a.url}${T}/collections/${name}`);
    return got.status === 200 ? ((await got.json()) as { id: string }) : null;
  });
  expect(onA.id).toBe(newId);
  const add = await post(`${a.url}${T}/collections/${newId}/add`, { ids: ["x"], embeddings: [[1, 2]] });
  expect(add.status).toBe(201);
});

// It failed about one run in ten before adoption judged what the instances hold against
// the cluster's mappings as they are now: b, not yet knowing of the drop, saw the dropped
// collection's copy gone from the replica, rebuilt it from the primary's copy (the remade
// collection) and linked that copy's UUID to the dropped collection, whose id the read
// by name then answered.
test("a read that sends a position through a node whose mappings are older reads them again first, and finds the collection made since", async () => {
  await using cluster = await twoNodes();
  const { a, b, databaseUrl } = cluster;
  const name = `remade_${crypto.randomUUID().slice(0, 8)}`;
  const created = await post(`${a.url}${T}/collections`, { name, configuration: {} });
  const { id: oldId } = (await created.json()) as { id: string };
  await waitFor(() => b.services.collections.byName("default_tenant", "default_database", name)?.id === oldId, { timeoutMs: clusterWideMsMax, message: "b knows the collection" });
  holdBehind(b);
  expect((await fetch(`${a.url}${T}/collections/${name}`, { method: "DELETE" })).status).toBe(200);
  const remade = await post(`${a.url}${T}/collections`, { name, configuration: {} });
  const { id: newId } = (await remade.json()) as { id: string };
  const add = await post(`${a.url}${T}/collections/${newId}/add`, { ids: ["x"], embeddings: [[1, 2]] });
  expect(add.status).toBe(201);
  const position = add.headers.get("x-chroma-lb-position")!;
  expect(Number(position)).toBeGreaterThan(0);
  // Both instances' copies are mapped (the replica's once replay created it there), so the
  // answer of either instance can be given the collection's id.
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await waitFor(async () => (await sql`select 1 from chroma_lb_collection_instances where collection_id = ${newId}`).length === 2, { message: "both copies mapped" });
  } finally {
    await sql.end({ timeout: 1 });
  }

  // By name (chroma-lb takes one where Chroma takes an id): b's memory still maps it to the dropped collection.
  expect(b.services.cluster!.mappingsAsOfPosition).toBeLessThan(Number(position));
  const records = await fetch(`${b.url}${T}/collections/${name}/get`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-chroma-lb-min-position": position },
    body: JSON.stringify({ ids: ["x"] }),
  });
  expect(records.status).toBe(200);
  expect(((await records.json()) as { ids: string[] }).ids).toEqual(["x"]);
  const read = await fetch(`${b.url}${T}/collections/${name}`, { headers: { "x-chroma-lb-min-position": position } });
  expect(read.status).toBe(200);
  expect(((await read.json()) as { id: string }).id).toBe(newId);
});

test("a node that has not yet learned of a drop made through another neither rebuilds the dropped collection's copy nor links the remade collection's copies to it", async () => {
  await using cluster = await twoNodes();
  const { a, b, databaseUrl } = cluster;
  const name = `relinked_${crypto.randomUUID().slice(0, 8)}`;
  const created = await post(`${a.url}${T}/collections`, { name, configuration: {} });
  const { id: oldId } = (await created.json()) as { id: string };
  await waitFor(() => b.services.collections.get(oldId)?.instanceUuids.size === 2, { timeoutMs: clusterWideMsMax, message: "b knows both copies" });
  holdBehind(b);
  expect((await fetch(`${a.url}${T}/collections/${name}`, { method: "DELETE" })).status).toBe(200);
  const remade = await post(`${a.url}${T}/collections`, { name, configuration: {} });
  const { id: newId } = (await remade.json()) as { id: string };
  expect((await post(`${a.url}${T}/collections/${newId}/add`, { ids: ["x"], embeddings: [[1, 2]] })).status).toBe(201);
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const uuids = async (id: string) =>
      new Map((await sql<Array<{ instance: string; instance_uuid: string }>>`select instance, instance_uuid from chroma_lb_collection_instances where collection_id = ${id}`).map((r) => [r.instance, r.instance_uuid]));
    // Both instances have applied the drop and the remake: the dropped collection's copies are gone from both.
    await waitFor(async () => (await uuids(newId)).size === 2, { message: "both copies of the remade collection mapped" });
    const before = await uuids(oldId);
    // Before adoption read the mappings first, b (its memory still holding the dropped
    // collection) took that collection's copies for lost, rebuilt one from the remade
    // collection (making the dropped one again) and linked the remade collection's UUIDs to it.
    b.services.adoption.refreshMappings = () => b.services.cluster!.mappingsCurrent();
    await b.services.adoption.adoptOnce();
    expect(await uuids(oldId)).toEqual(before);
    expect(b.services.resyncer.history.filter((p) => p.collection_id === oldId)).toEqual([]);
    for (const uuid of (await uuids(newId)).values()) expect(b.services.collections.byUuid(uuid)?.id).toBe(newId);
    expect(b.services.collections.get(oldId)?.status).toBe("deleted");
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("a read with a position, through a node cut from Postgres whose log view has not seen that position, is refused with 503, not answered from the view", async () => {
  const databaseUrl = await pg.freshDatabase("state");
  await using proxy = await startTcpProxy({ host: "127.0.0.1", port: pg.port });
  const proxied = new URL(databaseUrl);
  proxied.port = String(proxy.port);
  const common = { CHROMA_PRIMARY_URL: servers[0]!.url, CHROMA_REPLICA_URL: servers[1]!.url, LOG_STORE: "postgres", HEALTH_CHECK_INTERVAL: "1", HEALTH_CHECK_TIMEOUT: "0.3" };
  await using a = await startLbInProcess({ ...common, DATABASE_URL: databaseUrl, NODE_ID: "a" });
  await using b = await startLbInProcess({ ...common, DATABASE_URL: proxied.toString(), NODE_ID: "b" });
  const name = `unseen_${crypto.randomUUID().slice(0, 8)}`;
  const { id } = (await (await post(`${a.url}${T}/collections`, { name, configuration: {} })).json()) as { id: string };
  await waitFor(async () => (await fetch(`${b.url}${T}/collections/${id}/count`)).status === 200, { message: "b serves the collection" });
  // b's view of the log is not reloaded from here on; its mappings are current past the write.
  b.services.wal.refreshView = async () => {};
  const add = await post(`${a.url}${T}/collections/${id}/add`, { ids: ["x"], embeddings: [[1, 2]] });
  expect(add.status).toBe(201);
  const position = add.headers.get("x-chroma-lb-position")!;
  expect(await b.services.cluster!.mappingsCurrent()).toBe(true);
  expect(b.services.cluster!.mappingsAsOfPosition).toBeGreaterThanOrEqual(Number(position));
  expect(b.services.wal.view.headSeq()).toBeLessThan(Number(position));
  await proxy.close();
  // Answered from the view, this read was served by an instance the view took for caught up.
  const read = await fetch(`${b.url}${T}/collections/${id}/get`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-chroma-lb-min-position": position },
    body: JSON.stringify({ ids: ["x"] }),
  });
  expect(read.status).toBe(503);
  expect(read.headers.get("retry-after")).toBe("1");
  expect(((await read.json()) as { message: string }).message).toContain(`has not yet seen log position ${position}`);
  await proxy.reopen();
  const again = await waitFor(async () => {
    const res = await fetch(`${b.url}${T}/collections/${id}/get`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-chroma-lb-min-position": position },
      body: JSON.stringify({ ids: ["x"] }),
    });
    return res.status === 200 ? ((await res.json()) as { ids: string[] }) : null;
  }, { timeoutMs: 20_000, message: "b answers once Postgres is back" });
  expect(again.ids).toEqual(["x"]);
});

for (const replicaMark of ["doubt", "repair"]) {
  test(`no whole copy, the primary's in doubt and the replica's marked ${replicaMark === "doubt" ? "in doubt too" : "for repair"}: the copies are repaired in one direction, from the primary's`, async () => {
    await using cluster = await twoNodes();
    const { a, databaseUrl } = cluster;
    const name = `doubted_${crypto.randomUUID().slice(0, 8)}`;
    const { id } = (await (await post(`${a.url}${T}/collections`, { name, configuration: {} })).json()) as { id: string };
    expect((await post(`${a.url}${T}/collections/${id}/add`, { ids: ["x"], embeddings: [[1, 2]], documents: ["through chroma-lb"] })).status).toBe(201);
    await waitFor(async () => (await json<{ pending_writes: number }>(`${a.url}/wal/status`)).pending_writes === 0, { message: "both copies hold x" });
    const uuidOn = async (server: { url: string }) => (await json<{ id: string }>(`${server.url}${T}/collections/${name}`)).id;
    // The replica's copy gets another value behind chroma-lb's back; then no copy is whole.
    const replicaUuid = await uuidOn(servers[1]!);
    expect((await post(`${servers[1]!.url}${T}/collections/${replicaUuid}/upsert`, { ids: ["x"], embeddings: [[1, 2]], documents: ["replica only"] })).status).toBe(200);
    const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
    try {
      for (const [instance, op] of [["primary", "doubt"], ["replica", replicaMark]] as Array<[string, string]>) {
        await sql`insert into chroma_lb_wal_diverged (instance, partition, seq, op, error, refused_entries, at_ms)
                  values (${instance}, ${id}, 0, ${op}, 'test', 0, ${Date.now()})`;
      }
      // Before, neither was repaired (no whole source); with two copies in doubt, each was rebuilt from the other.
      await waitFor(async () => (await sql`select 1 from chroma_lb_wal_diverged where partition = ${id}`).length === 0, { timeoutMs: 45_000, message: "both marks cleared by repairs" });
    } finally {
      await sql.end({ timeout: 1 });
    }
    for (const server of servers) {
      const got = (await (await post(`${server.url}${T}/collections/${await uuidOn(server)}/get`, { ids: ["x"], include: ["documents"] })).json()) as { documents: string[] };
      expect(got.documents).toEqual(["through chroma-lb"]);
    }
  });
}

test("a mapping whose create was never logged is removed by any node; one whose create is logged but not yet applied stays", async () => {
  await using cluster = await twoNodes();
  const { a, b, databaseUrl } = cluster;
  const mapped = async (url: string, name: string) => (await json<{ mappings: Array<{ collection_name: string }> }>(`${url}/collection/mappings`)).mappings.some((m) => m.collection_name === name);
  // Logged, not applied: both instances out of routing, the create is answered 202.
  for (const name of ["primary", "replica"]) expect((await post(`${a.url}/admin/instances/${name}/health`, { healthy: false })).status).toBe(200);
  await waitFor(async () => (await json<{ healthy_instances: string }>(`${b.url}/health`)).healthy_instances === "0/2", { timeoutMs: clusterWideMsMax, message: "b routes to no instance" });
  const waiting = `waiting_${crypto.randomUUID().slice(0, 8)}`;
  expect((await post(`${b.url}${T}/collections`, { name: waiting, configuration: {} })).status).toBe(202);
  // Never logged: what a create cut off from Postgres before its append leaves behind.
  const never = `never_${crypto.randomUUID().slice(0, 8)}`;
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    await sql`insert into chroma_lb_collections (id, tenant, database, name, status, created_at_ms, updated_at_ms)
              values (${crypto.randomUUID()}, 'default_tenant', 'default_database', ${never}, 'active', 0, ${Date.now()})`;
    // Both are old enough to be judged.
    await sql`update chroma_lb_collections set created_at_ms = 0 where name = ${waiting}`;
    const statusOf = async (name: string) => (await sql<Array<{ status: string }>>`select status from chroma_lb_collections where name = ${name}`)[0]?.status;
    // A node sweeps every 10 s.
    await waitFor(async () => (await statusOf(never)) === "deleted", { timeoutMs: 30_000, message: "the never-created mapping is marked deleted" });
    expect(await statusOf(waiting)).toBe("active");
    await waitFor(async () => !(await mapped(a.url, never)) && !(await mapped(b.url, never)), { timeoutMs: clusterWideMsMax, message: "both nodes forget it" });
    expect(await mapped(a.url, waiting)).toBe(true);
    expect(await mapped(b.url, waiting)).toBe(true);
  } finally {
    await sql.end({ timeout: 1 });
  }
  for (const name of ["primary", "replica"]) expect((await post(`${a.url}/admin/instances/${name}/health`, { healthy: true })).status).toBe(200);
  // The name is free again, and the waiting create is applied once the instances serve.
  expect((await post(`${a.url}${T}/collections`, { name: never, configuration: {} })).status).toBe(200);
  await waitFor(async () => (await fetch(`${b.url}${T}/collections/${waiting}`)).status === 200, { message: "the logged create is applied" });
});

test("a resync runs once in the cluster: asked on another node meanwhile it is refused with the running node's name, every node shows it, and a dead node's run does not block the next", async () => {
  await using cluster = await twoNodes();
  const { a, b, databaseUrl } = cluster;
  await waitFor(async () => (await instance(b.url, "replica")).healthy);
  // Node a's own claim, held open by the test: the resync "runs" on a until released.
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  try {
    const jobsOfA = new ClusterJobs(sql, { nodeId: "a", statementTimeoutMs: 2_000, staleMs: 30_000 });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const running = jobsOfA.run("resync", "replica/*", () => ({ records_copied: 7 }), () => held);
    // The claim is in once b's /status shows it; the progress is written by a's report.
    await waitFor(async () => (await json<{ cluster_operations: Array<{ kind: string; node_id: string }> }>(`${b.url}/status`)).cluster_operations.some((o) => o.kind === "resync" && o.node_id === "a"));
    await jobsOfA.reportOnce();

    const refused = await post(`${b.url}/admin/instances/replica/resync`, {});
    expect(refused.status).toBe(409);
    const body = (await refused.json()) as { error: string; message: string };
    expect(body.error).toBe("UniqueConstraintError");
    expect(body.message).toContain("already runs on node a");
    type Operations = { cluster_operations: Array<{ kind: string; scope: string; node_id: string; state: string; progress: unknown }> };
    // (The nodes' own repair passes are listed too.)
    const resyncsOf = async (url: string) =>
      (await json<Operations>(`${url}/status`)).cluster_operations.filter((o) => o.kind === "resync").map(({ kind, scope, node_id, state, progress }) => ({ kind, scope, node_id, state, progress }));
    const expected = [{ kind: "resync", scope: "replica/*", node_id: "a", state: "running", progress: { records_copied: 7 } }];
    for (const node of [a, b]) {
      await waitFor(async () => JSON.stringify(await resyncsOf(node.url)) === JSON.stringify(expected), { timeoutMs: clusterWideMsMax, message: "the progress is shown" });
      expect(await resyncsOf(node.url)).toEqual(expected);
    }
    release();
    expect(await running).toEqual({ ran: true, result: undefined });
    // Once it ended, the same resync asked through b runs there.
    const ran = await post(`${b.url}/admin/instances/replica/resync`, {});
    expect(ran.status).toBe(200);
    const resyncRuns = async (url: string) => (await resyncsOf(url)).map((o) => `${o.node_id} ${o.state}`).join();
    await waitFor(async () => (await resyncRuns(a.url)) === "b done", { timeoutMs: clusterWideMsMax, message: "a shows b's run done" });

    // A run whose node died (no progress written for 3 lease times) does not block the next.
    await sql`update chroma_lb_jobs set node_id = 'gone', state = 'running', heartbeat_at = now() - interval '1 minute' where kind = 'resync' and scope = 'replica/*'`;
    expect((await post(`${a.url}/admin/instances/replica/resync`, {})).status).toBe(200);
    await waitFor(async () => (await resyncRuns(b.url)) === "a done", { timeoutMs: clusterWideMsMax, message: "b shows a's run done" });
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("one copy is resynced by one node at a time, whoever asks: a node's own repair of a copy another node repairs waits for it", async () => {
  await using cluster = await twoNodes();
  const { a, b, databaseUrl } = cluster;
  await waitFor(async () => (await instance(b.url, "replica")).healthy);
  const created = await post(`${a.url}${T}/collections`, { name: `copy_${crypto.randomUUID().slice(0, 8)}`, configuration: {} });
  expect(created.status).toBe(200);
  const { id } = (await created.json()) as { id: string };
  // A resync needs a source: b knows the primary's copy and the primary serves.
  const record = await waitFor(
    async () => {
      const known = b.services.collections.get(id);
      return known?.instanceUuids.has("primary") && b.services.registry.get("primary")!.serving ? known : null;
    },
    { message: "b knows the primary's copy" },
  );
  const replica = b.services.registry.get("replica")!;
  // Node a's repair of that copy, held open by the test (the way adoption on two nodes
  // sees the same lost copy and each schedules its own repair).
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {} });
  try {
    const jobsOfA = new ClusterJobs(sql, { nodeId: "a", statementTimeoutMs: 2_000, staleMs: 30_000 });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let claimed!: () => void;
    const claimedByA = new Promise<void>((resolve) => (claimed = resolve));
    const running = jobsOfA.run("resync-copy", `replica/${id}`, () => null, () => (claimed(), held));
    await claimedByA;

    const meanwhile = await b.services.resyncer.resync(replica, record);
    expect({ state: meanwhile.state, running_on: meanwhile.running_on }).toEqual({ state: "elsewhere", running_on: "a" });
    expect(b.services.resyncer.history.some((p) => p.collection_id === id)).toBe(false);

    release();
    await running;
    const after = await b.services.resyncer.resync(replica, record);
    expect({ state: after.state, error: after.error }).toEqual({ state: "done", error: null });
    const [row] = await sql<Array<{ node_id: string; state: string }>>`select node_id, state from chroma_lb_jobs where kind = 'resync-copy' and scope = ${`replica/${id}`}`;
    expect(row).toEqual({ node_id: "b", state: "done" });
  } finally {
    await sql.end({ timeout: 1 });
  }
});

test("a resync takes its copy's position holding the collection's writes on every node", async () => {
  await using cluster = await twoNodes();
  const { a, b, databaseUrl } = cluster;
  const created = await post(`${a.url}${T}/collections`, { name: `held_${crypto.randomUUID().slice(0, 8)}`, configuration: {} });
  const { id } = (await created.json()) as { id: string };
  expect((await post(`${a.url}${T}/collections/${id}/add`, { ids: ["x"], embeddings: [[1, 2]] })).status).toBe(201);
  const record = await waitFor(
    async () => {
      const known = a.services.collections.get(id);
      return known && known.instanceUuids.size === 2 && a.services.registry.all.every((i) => i.serving) ? known : null;
    },
    { message: "a knows both copies" },
  );
  // b holds the collection's writes, as a write through b does from before its append until its outcome is recorded.
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let holding!: () => void;
  const holdingNow = new Promise<void>((resolve) => (holding = resolve));
  const bHolds = b.services.writes.holdWrites(id, () => (holding(), held));
  await holdingNow;

  const resync = a.services.resyncer.resync(a.services.registry.get("replica")!, record);
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    // a waits for b's lock (an advisory lock not granted) before it takes the copy's position.
    await waitFor(async () => (await sql`select 1 from pg_locks where locktype = 'advisory' and not granted`).length > 0, { message: "a waits for the collection's lock" });
    const progress = a.services.resyncer.history.find((p) => p.collection_id === id);
    expect(progress?.position ?? null).toBeNull();
    release();
    await bHolds;
    const done = await resync;
    expect({ state: done.state, records: done.records_copied }).toEqual({ state: "done", records: 1 });
  } finally {
    release();
    await sql.end({ timeout: 1 });
  }
});

test("an instance down, and its return, are posted once for the cluster, not once per node", async () => {
  using receiver = alertReceiver();
  await using cluster = await twoNodes({ ALERT_WEBHOOK_URL: receiver.url, ALERT_MIN_INTERVAL: "0", ALERT_CHECK_INTERVAL: "1" });
  const { a, b } = cluster;
  await waitFor(async () => (await instance(a.url, "replica")).healthy && (await instance(b.url, "replica")).healthy);
  const otherNodeCount = async (event: string) => {
    let total = 0;
    for (const node of [a, b]) {
      const text = await (await fetch(`${node.url}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(`chroma_lb_alerts_total{`) && l.includes(`event="${event}"`) && l.includes(`outcome="posted_by_other_node"`));
      total += line ? Number(line.split(" ").at(-1)) : 0;
    }
    return total;
  };
  const replica = servers[1]!;
  await replica.kill();
  try {
    // Both nodes see it down (each records it); one posts it, the other is told it was posted.
    await waitFor(async () => receiver.rows().includes("instance_down firing replica") && (await otherNodeCount("instance_down")) >= 1, { message: "one node posts instance_down, the other defers" });
  } finally {
    await replica.restart();
  }
  await waitFor(async () => receiver.rows().includes("instance_down resolved replica") && (await otherNodeCount("instance_down")) >= 2, { message: "one node posts the return, the other defers" });
  expect(receiver.rows().filter((r) => r.startsWith("instance_down"))).toEqual(["instance_down firing replica", "instance_down resolved replica"]);
});

test("a reset through one node clears the other's mappings and log within 2 s; the name is usable again through either", async () => {
  await using chroma = await startChromaServers(2, { allowReset: true });
  await using cluster = await twoNodes({ ALLOW_RESET: "true" }, chroma);
  const { a, b } = cluster;
  await waitFor(async () => (await json<{ healthy_instances: string }>(`${b.url}/health`)).healthy_instances === "2/2");
  const viaA = new ChromaClient({ host: "127.0.0.1", port: a.port });
  const docs = await viaA.createCollection({ name: "reset_docs", embeddingFunction: null });
  await docs.add({ ids: ["a", "b"], embeddings: [[1, 2], [3, 4]], documents: ["a", "b"] });
  const mappingsOf = async (url: string) => (await json<{ count: number }>(`${url}/collection/mappings`)).count;
  const logOf = async (url: string) => {
    const wal = await json<{ total_entries: number; pending_writes: number }>(`${url}/wal/status`);
    return { total: wal.total_entries, pending: wal.pending_writes };
  };
  await waitFor(async () => (await mappingsOf(b.url)) === 1 && (await logOf(b.url)).total > 0, { message: "b knows the collection and its entries" });

  const resetAt = performance.now();
  const res = await fetch(`${a.url}/api/v2/reset`, { method: "POST" });
  expect(res.status).toBe(200);
  const cleared = await within(resetAt, async () => (await mappingsOf(b.url)) === 0 && JSON.stringify(await logOf(b.url)) === JSON.stringify({ total: 0, pending: 0 }), "b's view is cleared");
  expect(cleared).toBeLessThan(clusterWideMsMax);
  expect(await logOf(a.url)).toEqual({ total: 0, pending: 0 });

  // The name is free again on both nodes: made through b, written and read through a.
  const viaB = new ChromaClient({ host: "127.0.0.1", port: b.port });
  const again = await viaB.createCollection({ name: "reset_docs", embeddingFunction: null });
  expect(again.id).not.toBe(docs.id);
  await waitFor(async () => (await mappingsOf(a.url)) === 1);
  const onA = await waitFor(() => viaA.getCollection({ name: "reset_docs" }).catch(() => null));
  expect(onA.id).toBe(again.id);
  await onA.add({ ids: ["c"], embeddings: [[5, 6]], documents: ["c"] });
  const read = await waitFor(async () => {
    const got = await again.get({ ids: ["c"] });
    return got.ids.length ? got : null;
  });
  expect(read.documents).toEqual(["c"]);
});

// The Postgres driver's unhandled rejection that once failed this test (a connection's
// array-types query failing as the server dies) is patched: tests/unit/postgres-driver.test.ts.
test("while Postgres is down /status answers within its bound with the last lists and the error, and a switch is refused, not held on one node", async () => {
  const own = await startPgServer();
  try {
    await using cluster = await twoNodes({}, servers, own);
    const { a, b } = cluster;
    await waitFor(async () => (await json<{ nodes: unknown[] }>(`${a.url}/status`)).nodes.length === 2);
    await own.kill();
    const status = await waitFor(async () => {
      const s = await json<{ nodes: Array<{ id: string }>; cluster_error?: string; cluster_as_of: string }>(`${a.url}/status`);
      return s.cluster_error ? s : null;
    }, { message: "a reports that Postgres does not answer" });
    expect(status.nodes.map((n) => n.id)).toEqual(["a", "b"]);
    expect(Date.parse(status.cluster_as_of)).toBeLessThan(Date.now());
    const started = performance.now();
    await json(`${a.url}/status`);
    // Bounded by the wait for the log's counts (a second), never by Postgres's connect timeouts.
    expect(performance.now() - started).toBeLessThan(1_500);

    // Readiness holds: the instances still answer, only the log's counts are unknown.
    const health = await fetch(`${a.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ healthy_instances: "2/2", pending_writes: null });
    expect((await fetch(`${a.url}/metrics`)).status).toBe(200);

    const refused = await post(`${a.url}/admin/instances/replica/maintenance`, { enabled: true });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: string }).error).toBe("ServiceUnavailableError");
    expect((await instance(a.url, "replica")).maintenance).toBe(false);

    await own.restart();
    await waitFor(async () => !(await json<{ cluster_error?: string }>(`${a.url}/status`)).cluster_error, { timeoutMs: 20_000, message: "a reads Postgres again" });
    expect((await post(`${a.url}/admin/instances/replica/maintenance`, { enabled: true })).status).toBe(200);
    await waitFor(async () => (await instance(b.url, "replica")).maintenance, { timeoutMs: clusterWideMsMax, message: "b applies the switch" });
  } finally {
    await own.stop();
  }
});
