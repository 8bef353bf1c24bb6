/**
 * The primary loses its disk while the replica does not hold the collection yet (it is out
 * and owes it). Regressions found by the chaos run (seed 734099232):
 * - a write logged while no instance could take it (202) is not dropped because the wiped
 *   primary refuses it first: it waits for the replica, which applies it;
 * - the wiped copy is marked for repair at once, serves no read and takes no write, and is
 *   rebuilt once the replica can be copied from;
 * - a delete of the collection meanwhile is not answered with the wiped primary's 404: it is
 *   logged and reaches the replica, and nothing else is lost.
 */
import { afterAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";
import { canonicalGet, postRaw } from "../support/raw";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";

async function setUp() {
  const servers = await startChromaServers(2);
  const [primary, replica] = servers;
  const lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    HEALTH_CHECK_INTERVAL: "1",
    HEALTH_CHECK_TIMEOUT: "0.3",
    REQUEST_TIMEOUT: "5",
  });
  const health = async () => (await json(`${lb.url}/health`)).healthy_instances as string;
  // The replica is out: the collection and `a` reach the primary only.
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: false })).status).toBe(200);
  expect((await post(`${lb.url}${T}/collections`, { name: "lost", configuration: {} })).status).toBe(200);
  expect((await post(`${lb.url}${T}/collections/lost/add`, { ids: ["a"], embeddings: [[1, 2, 3]], documents: ["a"] })).status).toBe(201);
  // The primary loses its disk; while no instance answers, `b` is logged.
  await primary!.kill();
  rmSync(primary!.dataDir, { recursive: true, force: true });
  await waitFor(async () => (await health()) === "0/2", { message: "no instance answers" });
  const b = await post(`${lb.url}${T}/collections/lost/add`, { ids: ["b"], embeddings: [[4, 5, 6]], documents: ["b"] });
  expect({ status: b.status, accepted: b.headers.get("x-chroma-lb-accepted") }).toEqual({ status: 202, accepted: "logged" });
  // The primary comes back empty: the lost copy is found and marked.
  await primary!.restart();
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).diverged.some((d: { instance: string; op: string }) => d.instance === "primary"), {
    message: "the primary's lost copy is marked",
  });
  return { servers, primary: primary!, replica: replica!, lb };
}

async function settled(lbUrl: string) {
  await waitFor(
    async () => {
      const wal = await json(`${lbUrl}/wal/status`);
      const status = await json(`${lbUrl}/status`);
      return wal.pending_writes === 0 && wal.diverged.length === 0 && status.resync.active.length === 0;
    },
    { message: "the log drained and every copy is whole", timeoutMs: 60_000 },
  );
}

test("a write logged while the primary lost its disk reaches both instances; the lost copy is rebuilt", async () => {
  const { servers, primary, replica, lb } = await setUp();
  await using _servers = servers;
  await using _lb = lb;
  // The wiped copy serves no read: with the replica out there is none to serve.
  const read = await postRaw(`${lb.url}${T}/collections/lost/get`, "{}");
  expect(read.status).toBe(503);

  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true })).status).toBe(200);
  await settled(lb.url);
  const wal = await json(`${lb.url}/wal/status`);
  expect(wal.rejected_entries).toBe(0);
  const { mappings } = await json(`${lb.url}/collection/mappings`);
  const uuids = mappings.find((m: { collection_name: string }) => m.collection_name === "lost").instances;
  const copies = [];
  for (const [name, server] of [["primary", primary], ["replica", replica]] as const) {
    const answer = await postRaw(`${server.url}${T}/collections/${uuids[name]}/get`, JSON.stringify({ include: ["documents"] }));
    copies.push(canonicalGet(answer.text));
  }
  expect(copies[0]).toBe(copies[1]!);
  expect(copies[0]).toBe(`{"ids":["a","b"],"documents":["a","b"]}`);
});

test("a delete of the collection while only the wiped primary answers is logged, not answered with its 404", async () => {
  const { servers, primary, replica, lb } = await setUp();
  await using _servers = servers;
  await using _lb = lb;
  const del = await fetch(`${lb.url}${T}/collections/lost`, { method: "DELETE" });
  expect({ status: del.status, accepted: del.headers.get("x-chroma-lb-accepted") }).toEqual({ status: 202, accepted: "logged" });

  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true })).status).toBe(200);
  await settled(lb.url);
  for (const server of [primary, replica]) expect((await fetch(`${server.url}${T}/collections/lost`)).status).toBe(404);
  expect((await fetch(`${lb.url}${T}/collections/lost`)).status).toBe(404);
  expect((await json(`${lb.url}/wal/status`)).rejected_entries).toBe(0);
});

test("copies lost before chroma-lb noticed, on the only instance serving: a read answers 503 and a write is logged, never the instance's 404; both reach the copies once rebuilt", async () => {
  const servers = await startChromaServers(2);
  await using _servers = servers;
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    HEALTH_CHECK_INTERVAL: "1",
    HEALTH_CHECK_TIMEOUT: "0.3",
    REQUEST_TIMEOUT: "5",
  });
  // One collection is read first, the other written first: each finds the lost copy itself.
  for (const name of ["read_first", "write_first"]) {
    expect((await post(`${lb.url}${T}/collections`, { name, configuration: {} })).status).toBe(200);
    expect((await post(`${lb.url}${T}/collections/${name}/add`, { ids: ["a"], embeddings: [[1, 2, 3]], documents: ["a"] })).status).toBe(201);
  }
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "both instances hold a" });
  // Adoption is what notices a lost copy; held here, the copies are lost unnoticed.
  lb.services.adoption.onLost = null;
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: false })).status).toBe(200);
  await primary!.kill();
  rmSync(primary!.dataDir, { recursive: true, force: true });
  await primary!.restart();
  await waitFor(async () => (await json(`${lb.url}/health`)).healthy_instances === "1/2", { message: "the primary answers again" });
  const marked = async () => (await json(`${lb.url}/wal/status`)).diverged.map((d: { collection_name: string; instance: string; op: string }) => `${d.collection_name}/${d.instance}/${d.op}`).sort();

  // Each was answered with the primary's 404 before, as if the collection had been dropped.
  const write = await post(`${lb.url}${T}/collections/write_first/add`, { ids: ["b"], embeddings: [[4, 5, 6]], documents: ["b"] });
  expect({ status: write.status, accepted: write.headers.get("x-chroma-lb-accepted") }).toEqual({ status: 202, accepted: "logged" });
  expect(await marked()).toEqual(["write_first/primary/repair"]);
  const read = await postRaw(`${lb.url}${T}/collections/read_first/get`, "{}");
  expect(read.status).toBe(503);
  expect(await marked()).toEqual(["read_first/primary/repair", "write_first/primary/repair"]);

  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true })).status).toBe(200);
  await settled(lb.url);
  const { mappings } = await json(`${lb.url}/collection/mappings`);
  for (const name of ["read_first", "write_first"]) {
    const uuids = mappings.find((m: { collection_name: string }) => m.collection_name === name).instances;
    const copies = [];
    for (const [instance, server] of [["primary", primary!], ["replica", replica!]] as const) {
      copies.push(canonicalGet((await postRaw(`${server.url}${T}/collections/${uuids[instance]}/get`, JSON.stringify({ include: ["documents"] }))).text));
    }
    expect(copies[0]).toBe(copies[1]!);
    expect(copies[0]).toContain(name === "write_first" ? '"b"' : '"a"');
  }
});
