/**
 * Finding and repairing what diverged: the consistency check names a write that bypassed
 * chroma-lb and the repair overwrites it; an instance that comes back with an empty disk
 * (replica or primary) is rebuilt while writes go on; a resync of 20,000 records under
 * concurrent writes ends with identical copies. Copies are compared as raw text.
 */
import { afterAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { killAll, startChromaServers, startLbInProcess, startLbProcess, waitFor, type ChromaServer } from "../support";
import { json, post } from "../support/http";
import { canonicalGet, postRaw } from "../support/raw";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const getAll = JSON.stringify({ include: ["documents", "metadatas", "embeddings"] });

const addBody = (ids: string[], tag: string) =>
  JSON.stringify({
    ids,
    embeddings: ids.map((_, i) => [i % 7, 0.5, -1, (i % 3) / 4]),
    documents: ids.map((id) => `${tag} ${id}`),
    metadatas: ids.map((id, i) => ({ tag, n: i, id })),
  });

async function mappingOf(lbUrl: string, name: string): Promise<Record<string, string>> {
  const { mappings } = await json(`${lbUrl}/collection/mappings`);
  return mappings.find((m: { collection_name: string }) => m.collection_name === name).instances;
}

async function copies(lbUrl: string, name: string, servers: Record<string, ChromaServer>): Promise<Record<string, string>> {
  const instances = await mappingOf(lbUrl, name);
  const out: Record<string, string> = {};
  for (const [label, server] of Object.entries(servers)) {
    const answer = await postRaw(`${server.url}${T}/collections/${instances[label]}/get`, getAll);
    out[label] = answer.status === 200 ? canonicalGet(answer.text) : `status ${answer.status}`;
  }
  return out;
}

async function drained(lbUrl: string, message: string, timeoutMs = 30_000) {
  await waitFor(async () => (await json(`${lbUrl}/wal/status`)).pending_writes === 0, { message, timeoutMs });
}

async function resyncsDone(lbUrl: string, instance: string, collections: string[]) {
  await waitFor(
    async () => {
      const { recent, active } = (await json(`${lbUrl}/status`)).resync;
      const done = new Set(
        recent.filter((r: { instance: string; state: string }) => r.instance === instance && r.state === "done").map((r: { collection_name: string }) => r.collection_name),
      );
      return active.length === 0 && collections.every((c) => done.has(c));
    },
    { message: `a resync of ${instance} finished`, timeoutMs: 60_000 },
  );
}

/** Writes through chroma-lb until stopped; every write must be acknowledged. */
function writer(lbUrl: string, collection: string, prefix: string) {
  let stopped = false;
  let written = 0;
  const failures: string[] = [];
  const done = (async () => {
    for (let round = 0; !stopped; round++) {
      const ids = [`${prefix}-${round}-a`, `${prefix}-${round}-b`];
      const res = await postRaw(`${lbUrl}${T}/collections/${collection}/add`, addBody(ids, prefix));
      if (res.status !== 201) failures.push(`${res.status} ${res.text.slice(0, 200)}`);
      else written += ids.length;
      if (round % 5 === 4) {
        const upd = await postRaw(`${lbUrl}${T}/collections/${collection}/update`, JSON.stringify({ ids: [`${prefix}-${round - 1}-a`], metadatas: [{ updated: round }] }));
        if (upd.status !== 200) failures.push(`update ${upd.status}`);
      }
      await Bun.sleep(5);
    }
  })();
  return {
    failures,
    get written() {
      return written;
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

test("a write that bypassed chroma-lb is found by the consistency check and repaired", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  expect((await post(`${lb.url}${T}/collections`, { name: "audited", configuration: {} })).status).toBe(200);
  const ids = Array.from({ length: 50 }, (_, i) => `a-${i}`);
  expect((await postRaw(`${lb.url}${T}/collections/audited/add`, addBody(ids, "ok"))).status).toBe(201);
  await drained(lb.url, "both copies hold the records");
  const clean = await json(`${lb.url}/admin/consistency`);
  expect({ checked: clean.collections_checked, differing: clean.collections_differing }).toEqual({ checked: 1, differing: 0 });

  // Straight to the replica: one extra record, and a value whose type changes (the int 7 becomes the float 7.0).
  const uuid = (await mappingOf(lb.url, "audited")).replica;
  expect((await postRaw(`${replica!.url}${T}/collections/${uuid}/add`, addBody(["stray"], "bypass"))).status).toBe(201);
  expect((await postRaw(`${replica!.url}${T}/collections/${uuid}/update`, `{"ids":["a-7"],"metadatas":[{"n":7.0}]}`)).status).toBe(200);

  const found = await json(`${lb.url}/admin/consistency?collection=audited`);
  const verdict = found.collections[0];
  expect({ consistent: verdict.consistent, sample: [...verdict.sample_ids].sort(), differences: verdict.differences }).toEqual({
    consistent: false,
    sample: ["a-7", "stray"],
    differences: ["primary holds 50 records, replica 51", "1 records are on some copies only", "1 records differ in document, metadata, embedding or uri"],
  });

  // AUTO_REPAIR (on by default) rebuilds the replica's copy from the primary.
  await resyncsDone(lb.url, "replica", ["audited"]);
  const after = await json(`${lb.url}/admin/consistency?collection=audited`);
  expect(after.collections[0].consistent).toBe(true);
  const final = await copies(lb.url, "audited", { primary: primary!, replica: replica! });
  expect(final.replica).toBe(final.primary!);
  expect(final.primary).not.toContain("stray");
});

for (const lost of ["replica", "primary"] as const) {
  test(`the ${lost} comes back with an empty disk while writes go on: its copies are rebuilt and both end identical`, async () => {
    await using servers = await startChromaServers(2);
    const [primary, replica] = servers;
    const byName = { primary: primary!, replica: replica! };
    await using lb = await startLbInProcess({
      CHROMA_PRIMARY_URL: primary!.url,
      CHROMA_REPLICA_URL: replica!.url,
      HEALTH_CHECK_INTERVAL: "1",
      HEALTH_CHECK_TIMEOUT: "0.3",
    });
    for (const name of ["kept_a", "kept_b"]) {
      expect((await postRaw(`${lb.url}${T}/collections`, `{"name":"${name}","configuration":{},"metadata":{"v":1.0}}`)).status).toBe(200);
    }
    expect((await postRaw(`${lb.url}${T}/collections/kept_a/add`, addBody(Array.from({ length: 300 }, (_, i) => `seed-${i}`), "seed"))).status).toBe(201);
    await drained(lb.url, "seeded on both");

    const writers = [writer(lb.url, "kept_a", "wa"), writer(lb.url, "kept_b", "wb")];
    await waitFor(() => writers.every((w) => w.written > 10), { message: "writes are flowing" });
    const victim = byName[lost];
    await victim.kill();
    rmSync(victim.dataDir, { recursive: true, force: true });
    await waitFor(async () => (await json(`${lb.url}/health`)).healthy_instances === "1/2", { message: `${lost} seen down` });
    await waitFor(() => writers.every((w) => w.written > 40), { message: "writes go on while it is down" });
    await victim.restart();
    await resyncsDone(lb.url, lost, ["kept_a", "kept_b"]);
    await waitFor(() => writers.every((w) => w.written > 80), { message: "writes go on after the repair" });
    for (const w of writers) await w.stop();
    expect(writers.flatMap((w) => w.failures)).toEqual([]);

    await drained(lb.url, "every write reached both copies");
    for (const name of ["kept_a", "kept_b"]) {
      const result = await copies(lb.url, name, byName);
      expect(result.replica).toBe(result.primary!);
    }
    const check = await json(`${lb.url}/admin/consistency`);
    expect({ checked: check.collections_checked, differing: check.collections_differing }).toEqual({ checked: 2, differing: 0 });
    expect((await json(`${lb.url}/wal/status`)).diverged).toEqual([]);
    // The collection's own metadata came back with its type.
    const meta = await (await fetch(`${victim.url}${T}/collections/kept_b`)).text();
    expect(meta).toContain('"v":1.0');
  }, 120_000);
}

test("a resync of 20,000 records under concurrent writes ends identical, with bounded memory", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  expect((await post(`${lb.url}${T}/collections`, { name: "bulk", configuration: {} })).status).toBe(200);
  for (let k = 0; k < 20; k++) {
    const ids = Array.from({ length: 1000 }, (_, i) => `bulk-${k * 1000 + i}`);
    expect((await postRaw(`${lb.url}${T}/collections/bulk/add`, addBody(ids, "bulk"))).status).toBe(201);
  }
  await drained(lb.url, "20,000 records on both copies", 60_000);

  const w = writer(lb.url, "bulk", "live");
  const started = Date.now();
  const res = await fetch(`${lb.url}/admin/instances/replica/resync`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ collection: "bulk" }),
  });
  const elapsedMs = Date.now() - started;
  const answer = (await res.json()) as { ok: boolean; collections: Array<{ records_copied: number; records_total: number; records_per_second: number; verified: boolean | null }> };
  await w.stop();
  expect(w.failures).toEqual([]);
  expect(answer.ok).toBe(true);
  expect(answer.collections[0]!.records_copied).toBeGreaterThanOrEqual(20_000);

  await drained(lb.url, "the writes made during the copy reached the replica");
  const result = await copies(lb.url, "bulk", { primary: primary!, replica: replica! });
  expect(result.replica).toBe(result.primary!);
  const wal = await json(`${lb.url}/wal/status`);
  console.log(
    `[resync] ${answer.collections[0]!.records_copied} records in ${(elapsedMs / 1000).toFixed(1)} s ` +
      `(${answer.collections[0]!.records_per_second} records/s) with ${w.written} records written meanwhile; chroma-lb peak RSS ${wal.memory.peak_rss_mb} MB`,
  );
  expect(wal.memory.peak_rss_mb).toBeLessThan(400);
}, 180_000);

test("a resync that fails before it touches a copy that was in use leaves that copy in use", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, AUTO_REPAIR: "false" });
  const created = await post(`${lb.url}/api/v2/tenants/default_tenant/databases/default_database/collections`, { name: "kept_in_use" });
  const { id } = (await created.json()) as { id: string };
  const record = await waitFor(() => {
    const known = lb.services.collections.get(id);
    return known?.instanceUuids.size === 2 ? known : null;
  });
  const instance = lb.services.registry.get("replica")!;
  // What a cut from the log store does to a resync before its copy starts (the collection's lock cannot be had).
  lb.services.replayer.holdPartition = async () => {
    throw new Error("write CONNECTION_CLOSED 127.0.0.1:5432");
  };
  const outcome = await lb.services.resyncer.resync(instance, record);
  expect(outcome.state).toBe("failed");
  expect(lb.services.wal.isDiverged("replica", id)).toBe(false);
  expect(lb.services.wal.divergences()).toEqual([]);
});

test("a lost copy is rebuilt from the other copy even when that one is marked, rather than waiting for a whole copy that cannot come", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, AUTO_REPAIR: "false" });
  const base = "/api/v2/tenants/default_tenant/databases/default_database";
  const { id } = (await (await post(`${lb.url}${base}/collections`, { name: "last_resort" })).json()) as { id: string };
  expect((await post(`${lb.url}${base}/collections/${id}/add`, { ids: ["a", "b"], embeddings: [[1, 2], [3, 4]] })).status).toBe(201);
  const record = await waitFor(() => {
    const known = lb.services.collections.get(id);
    return known?.instanceUuids.size === 2 && lb.services.wal.lag("replica").entries === 0 ? known : null;
  });
  // The replica's copy is marked (a repair that could not finish), then the primary loses its copy.
  await lb.services.wal.markUnderRepair("replica", id, "a resync that could not finish");
  expect((await fetch(`${primary!.url}${base}/collections/last_resort`, { method: "DELETE" })).status).toBe(200);

  const outcome = await lb.services.resyncer.resync(lb.services.registry.get("primary")!, record);
  expect({ state: outcome.state, source: outcome.source, records: outcome.records_copied }).toEqual({ state: "done", source: "replica", records: 2 });
  const rebuilt = lb.services.collections.get(id)!.instanceUuids.get("primary")!;
  const got = (await (await post(`${primary!.url}${base}/collections/${rebuilt}/get`, {})).json()) as { ids: string[] };
  expect(got.ids.sort()).toEqual(["a", "b"]);
});

test("two resyncs of one collection in opposite directions, asked at once, take turns and both succeed", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, AUTO_REPAIR: "false" });
  const created = await post(`${lb.url}/api/v2/tenants/default_tenant/databases/default_database/collections`, { name: "both_ways" });
  const { id } = (await created.json()) as { id: string };
  expect((await post(`${lb.url}/api/v2/tenants/default_tenant/databases/default_database/collections/${id}/add`, { ids: ["a", "b"], embeddings: [[1, 2], [3, 4]] })).status).toBe(201);
  const record = await waitFor(() => {
    const known = lb.services.collections.get(id);
    return known?.instanceUuids.size === 2 && lb.services.wal.pendingCount("replica") === 0 ? known : null;
  });
  const { registry, resyncer } = lb.services;
  const both = Promise.all([resyncer.resync(registry.get("primary")!, record), resyncer.resync(registry.get("replica")!, record)]);
  const outcome = await Promise.race([both, Bun.sleep(20_000).then(() => "still waiting" as const)]);
  expect(outcome).not.toBe("still waiting");
  expect((outcome as Awaited<typeof both>).map((p) => p.state)).toEqual(["done", "done"]);
  expect(lb.services.wal.divergences()).toEqual([]);
});
