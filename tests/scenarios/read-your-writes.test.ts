/**
 * Reads see acknowledged writes: with READ_REPLICA_RATIO=1 every read prefers the replica,
 * yet a get, query or count issued right after an acknowledged add, upsert, update or
 * delete sees it, whichever instance serves it (X-Chroma-LB-Instance names it). The same
 * holds while the replica returns from an outage with a backlog, and for the
 * X-Chroma-LB-Position / X-Chroma-LB-Min-Position contract.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";

afterAll(() => killAll());

const COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections";

interface Stored {
  embedding: number[];
  document: string;
  metadata: Record<string, string | number>;
}

/** A vector that survives float32 storage exactly and is unique to `n`. */
const vector = (n: number) => [n / 1000, ((n * 7) % 1000) / 1000, -((n * 13) % 1000) / 1000, 0.5];

async function lbRead(lbUrl: string, collectionId: string, op: "get" | "query" | "count", body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${lbUrl}${COLLECTIONS}/${collectionId}/${op}`, {
    method: op === "count" ? "GET" : "POST",
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  return { status: res.status, instance: res.headers.get("x-chroma-lb-instance"), json: json as any };
}

/** Everything the collection holds, through chroma-lb, as one comparable value. */
async function readAll(lbUrl: string, collectionId: string, headers: Record<string, string> = {}) {
  const read = await lbRead(lbUrl, collectionId, "get", { include: ["embeddings", "documents", "metadatas"] }, headers);
  expect(read.status).toBe(200);
  const records: Record<string, Stored> = {};
  read.json.ids.forEach((id: string, i: number) => {
    records[id] = { embedding: read.json.embeddings[i], document: read.json.documents[i], metadata: read.json.metadatas[i] };
  });
  return { instance: read.instance, records };
}

async function setReplicaHealth(lbUrl: string, body: unknown) {
  const res = await fetch(`${lbUrl}/admin/instances/replica/health`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  expect(res.status).toBe(200);
  await res.arrayBuffer();
}

async function pendingWrites(lbUrl: string): Promise<number> {
  const res = await fetch(`${lbUrl}/wal/status`);
  return ((await res.json()) as { pending_writes: number }).pending_writes;
}

async function setup() {
  const servers = await startChromaServers(2);
  const lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: servers[0]!.url,
    CHROMA_REPLICA_URL: servers[1]!.url,
    READ_REPLICA_RATIO: "1",
  });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const collection = await client.createCollection({ name: "fresh-reads", embeddingFunction: null });
  return {
    lb,
    collection,
    async [Symbol.asyncDispose]() {
      await lb.stop();
      await servers[Symbol.asyncDispose]();
    },
  };
}

describe("reads see acknowledged writes (READ_REPLICA_RATIO=1)", () => {
  test("a get, query or count right after an acknowledged add, upsert, update or delete sees it", async () => {
    await using env = await setup();
    const { lb, collection } = env;
    const model = new Map<string, Stored>();
    const servedBy: Record<string, number> = {};
    const served = (instance: string | null) => (servedBy[instance ?? "none"] = (servedBy[instance ?? "none"] ?? 0) + 1);
    let n = 0;

    for (let i = 0; i < 200; i++) {
      switch (i % 4) {
        case 0: {
          // add, then get it by id
          const id = `r${i}`;
          const stored = { embedding: vector(++n), document: `added ${i}`, metadata: { i, kind: "add" } };
          await collection.add({ ids: [id], embeddings: [stored.embedding], documents: [stored.document], metadatas: [stored.metadata] });
          model.set(id, stored);
          const read = await lbRead(lb.url, collection.id, "get", { ids: [id], include: ["embeddings", "documents", "metadatas"] });
          served(read.instance);
          expect({ status: read.status, ids: read.json.ids, embeddings: read.json.embeddings, documents: read.json.documents, metadatas: read.json.metadatas }).toEqual({
            status: 200,
            ids: [id],
            embeddings: [stored.embedding],
            documents: [stored.document],
            metadatas: [stored.metadata],
          });
          break;
        }
        case 1: {
          // upsert the record just added with a new vector, then query with that vector
          const id = `r${i - 1}`;
          const stored = { embedding: vector(++n), document: `upserted ${i}`, metadata: { i, kind: "upsert" } };
          await collection.upsert({ ids: [id], embeddings: [stored.embedding], documents: [stored.document], metadatas: [stored.metadata] });
          model.set(id, stored);
          const read = await lbRead(lb.url, collection.id, "query", { query_embeddings: [stored.embedding], n_results: 1, include: ["documents", "metadatas"] });
          served(read.instance);
          expect({ status: read.status, ids: read.json.ids, documents: read.json.documents, metadatas: read.json.metadatas }).toEqual({
            status: 200,
            ids: [[id]],
            documents: [[stored.document]],
            metadatas: [[stored.metadata]],
          });
          break;
        }
        case 2: {
          // update the metadata of an older record, then find it by that metadata
          const ids = [...model.keys()];
          const id = ids[Math.floor(i / 4) % ids.length]!;
          const previous = model.get(id)!;
          const metadata = { i, kind: "update" };
          await collection.update({ ids: [id], metadatas: [metadata] });
          model.set(id, { ...previous, metadata });
          const read = await lbRead(lb.url, collection.id, "get", { where: { i }, include: ["documents", "metadatas"] });
          served(read.instance);
          expect({ status: read.status, ids: read.json.ids, metadatas: read.json.metadatas }).toEqual({ status: 200, ids: [id], metadatas: [metadata] });
          break;
        }
        case 3: {
          // delete every other record of this round, then get and count
          if (i % 8 === 3) {
            const id = `r${i - 3}`;
            await collection.delete({ ids: [id] });
            model.delete(id);
            const read = await lbRead(lb.url, collection.id, "get", { ids: [id] });
            served(read.instance);
            expect({ status: read.status, ids: read.json.ids }).toEqual({ status: 200, ids: [] });
          }
          const count = await lbRead(lb.url, collection.id, "count");
          served(count.instance);
          expect({ status: count.status, count: count.json }).toEqual({ status: 200, count: model.size });
          break;
        }
      }
      if (i % 10 === 9) {
        // Once the replica has applied everything, READ_REPLICA_RATIO=1 sends the read there.
        await waitFor(async () => (await pendingWrites(lb.url)) === 0, { message: "replica caught up" });
        const all = await readAll(lb.url, collection.id);
        served(all.instance);
        expect(all.instance).toBe("replica");
        expect(all.records).toEqual(Object.fromEntries(model));
      }
    }
    console.log(`[read-your-writes] reads served by: ${JSON.stringify(servedBy)}`);
    expect(Object.keys(servedBy).sort()).toEqual(["primary", "replica"]);
  }, 60_000);

  test("reads never return stale data while the replica comes back from an outage with a backlog", async () => {
    await using env = await setup();
    const { lb, collection } = env;
    const model = new Map<string, Stored>();
    const upsert = async (id: string, n: number) => {
      const stored = { embedding: vector(n), document: `doc ${id} v${n}`, metadata: { n } };
      await collection.upsert({ ids: [id], embeddings: [stored.embedding], documents: [stored.document], metadatas: [stored.metadata] });
      model.set(id, stored);
    };
    for (let k = 0; k < 10; k++) await upsert(`k${k}`, k);
    await waitFor(async () => (await pendingWrites(lb.url)) === 0, { message: "replica caught up" });

    // The replica misses a backlog: every record changes many times, some are deleted.
    await setReplicaHealth(lb.url, { healthy: false });
    let n = 100;
    for (let round = 0; round < 12; round++) {
      for (let k = 0; k < 10; k++) await upsert(`k${k}`, n++);
      await collection.delete({ ids: [`k${round % 10}`] });
      model.delete(`k${round % 10}`);
    }
    expect(await pendingWrites(lb.url)).toBeGreaterThan(100);
    const before = await readAll(lb.url, collection.id);
    expect(before.instance).toBe("primary");
    expect(before.records).toEqual(Object.fromEntries(model));

    // End the outage and read without pause while the replica catches up, writing in between.
    await setReplicaHealth(lb.url, { healthy: true, clear: true });
    const servedBy: string[] = [];
    for (let i = 0; i < 60; i++) {
      const read = await readAll(lb.url, collection.id);
      servedBy.push(read.instance ?? "none");
      expect(read.records).toEqual(Object.fromEntries(model));
      if (i % 3 === 0) await upsert(`k${i % 10}`, n++);
    }
    // The replica owed 132 entries when the outage ended: the first read cannot be its.
    expect(servedBy[0]).toBe("primary");
    await waitFor(async () => (await pendingWrites(lb.url)) === 0, { message: "replica caught up" });
    const after = await readAll(lb.url, collection.id);
    expect(after.instance).toBe("replica");
    expect(after.records).toEqual(Object.fromEntries(model));
    console.log(`[read-your-writes] during catch-up, reads served by: primary ${servedBy.filter((s) => s === "primary").length}, replica ${servedBy.filter((s) => s === "replica").length}`);
  }, 60_000);
});

describe("X-Chroma-LB-Position and X-Chroma-LB-Min-Position", () => {
  async function rawWrite(lbUrl: string, collectionId: string, op: "add" | "upsert" | "delete", body: unknown) {
    const res = await fetch(`${lbUrl}${COLLECTIONS}/${collectionId}/${op}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, position: res.headers.get("x-chroma-lb-position"), instance: res.headers.get("x-chroma-lb-instance"), json: await res.json() };
  }

  test("every acknowledged write carries an increasing position; a refused write carries none", async () => {
    await using env = await setup();
    const { lb, collection } = env;
    const positions: number[] = [];
    for (let i = 0; i < 10; i++) {
      const write = await rawWrite(lb.url, collection.id, i % 2 ? "upsert" : "add", { ids: [`p${i}`], embeddings: [vector(i)], documents: [`p${i}`] });
      expect(write.status).toBe(i % 2 ? 200 : 201);
      expect(write.position).toMatch(/^\d+$/);
      positions.push(Number(write.position));
    }
    expect(positions).toEqual([...positions].sort((a, b) => a - b));
    expect(new Set(positions).size).toBe(positions.length);

    // Wrong dimension: Chroma refuses it, so it has no place in the log.
    const refused = await rawWrite(lb.url, collection.id, "add", { ids: ["bad"], embeddings: [[1, 2]] });
    expect(refused.status).toBe(400);
    expect(refused.json).toEqual({ error: expect.any(String), message: expect.any(String) });
    expect(refused.position).toBeNull();

    const next = await rawWrite(lb.url, collection.id, "delete", { ids: ["p0"] });
    expect(next.status).toBe(200);
    expect(Number(next.position)).toBeGreaterThan(positions.at(-1)!);
    const all = await readAll(lb.url, collection.id, { "x-chroma-lb-min-position": next.position! });
    expect(Object.keys(all.records).sort()).toEqual(["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"]);
  }, 30_000);

  test("a read with a minimum position sees every write up to it and may be served by a replica still behind on later ones", async () => {
    await using env = await setup();
    const { lb, collection } = env;
    const first = await rawWrite(lb.url, collection.id, "add", { ids: ["a"], embeddings: [vector(1)], documents: ["first"] });
    expect(first.status).toBe(201);
    await waitFor(async () => (await pendingWrites(lb.url)) === 0, { message: "replica applied the first write" });

    for (let round = 0; round < 20; round++) {
      // A later write the replica has most likely not applied yet when the read arrives.
      const later = await rawWrite(lb.url, collection.id, "upsert", { ids: [`b${round}`], embeddings: [vector(100 + round)], documents: [`later ${round}`] });
      expect(later.status).toBe(200);
      // Only the first write is required: the replica has it, and READ_REPLICA_RATIO=1 picks it.
      const relaxed = await lbRead(lb.url, collection.id, "get", { ids: ["a"], include: ["documents"] }, { "x-chroma-lb-min-position": first.position! });
      expect({ status: relaxed.status, instance: relaxed.instance, ids: relaxed.json.ids, documents: relaxed.json.documents }).toEqual({
        status: 200,
        instance: "replica",
        ids: ["a"],
        documents: ["first"],
      });
      // Requiring the later write: whoever serves it has applied it.
      const strict = await lbRead(lb.url, collection.id, "get", { ids: [`b${round}`], include: ["documents"] }, { "x-chroma-lb-min-position": later.position! });
      expect({ status: strict.status, ids: strict.json.ids, documents: strict.json.documents }).toEqual({ status: 200, ids: [`b${round}`], documents: [`later ${round}`] });
    }
  }, 30_000);

  test("a minimum position that is not a whole number is refused in Chroma's error shape", async () => {
    await using env = await setup();
    const { lb, collection } = env;
    // An empty or exponent form would otherwise read as 0 or 1000 and silently weaken the requirement.
    for (const value of ["abc", "-1", "1.5", "", "1e3", "0x10"]) {
      const read = await lbRead(lb.url, collection.id, "get", { ids: ["x"] }, { "x-chroma-lb-min-position": value });
      expect({ value, status: read.status, error: read.json.error }).toEqual({ value, status: 400, error: "InvalidArgumentError" });
      expect(read.json.message.toLowerCase()).toContain("x-chroma-lb-min-position");
    }
    const valid = await lbRead(lb.url, collection.id, "get", { ids: ["x"] }, { "x-chroma-lb-min-position": "0" });
    expect({ status: valid.status, ids: valid.json.ids }).toEqual({ status: 200, ids: [] });
  }, 30_000);
});
