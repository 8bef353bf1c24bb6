/**
 * Use case 3: the replica dies (SIGKILL). Reads go to the primary, every kind of write
 * (adds, updates, upserts, deletes by id and by filter, collection changes) succeeds, and the
 * restarted replica replays what it missed before it serves a read again. In the end both
 * instances hold exactly the same data, equal to a model of what clients were told.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient, type Metadata } from "chromadb";
import { killAll, startChromaServers, startLbProcess, waitFor, waitWhileProgressing } from "../support";
import { dumpInstances, type DumpedCollection, type DumpedRecord } from "../support/compare";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
// Every read prefers the replica whenever it may serve, so a read it should not serve would show.
const lbEnv = { HEALTH_CHECK_INTERVAL: "1", HEALTH_CHECK_TIMEOUT: "0.3", REQUEST_TIMEOUT: "5", READ_REPLICA_RATIO: "1" };

/** Values exactly representable as float32, so they survive Chroma's storage unchanged. */
const embeddingFor = (n: number) => [(n % 16) / 4, ((n * 7) % 13) / 8, (n % 5) / 2 - 1, 1];

/** What clients were told, record by record, with Chroma's semantics (metadata merged per key on update). */
class Model {
  readonly records = new Map<string, DumpedRecord>();
  add(ids: string[], embeddings: number[][], documents: string[], metadatas: Metadata[]) {
    ids.forEach((id, i) => {
      if (!this.records.has(id)) this.records.set(id, { id, embedding: embeddings[i]!, document: documents[i]!, metadata: { ...metadatas[i]! } });
    });
  }
  update(ids: string[], embeddings: number[][], documents: string[], metadatas: Metadata[]) {
    ids.forEach((id, i) => {
      const record = this.records.get(id);
      if (record) this.records.set(id, { id, embedding: embeddings[i]!, document: documents[i]!, metadata: { ...record.metadata, ...metadatas[i]! } });
    });
  }
  upsert(ids: string[], embeddings: number[][], documents: string[], metadatas: Metadata[]) {
    ids.forEach((id, i) => {
      const record = this.records.get(id);
      this.records.set(id, { id, embedding: embeddings[i]!, document: documents[i]!, metadata: { ...record?.metadata, ...metadatas[i]! } });
    });
  }
  delete(ids: string[]) {
    for (const id of ids) this.records.delete(id);
  }
  deleteWhere(key: string, value: unknown) {
    for (const [id, record] of this.records) if (record.metadata?.[key] === value) this.records.delete(id);
  }
  sorted(): DumpedRecord[] {
    return [...this.records.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
}

interface GetAnswer {
  ids: string[];
  embeddings: number[][];
  documents: string[];
  metadatas: Metadata[];
}

function asRecords(answer: GetAnswer): DumpedRecord[] {
  return answer.ids
    .map((id, i) => ({ id, embedding: answer.embeddings[i]!, document: answer.documents[i]!, metadata: answer.metadatas[i]! }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

async function json<T = any>(url: string): Promise<T> {
  return (await (await fetch(url)).json()) as T;
}

test("with the replica SIGKILLed, reads go to the primary and writes succeed; it serves again only once caught up", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbProcess({ ...lbEnv, CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const items = await client.createCollection({ name: "catalog_items", metadata: { owner: "cms" }, embeddingFunction: null });
  const model = new Model();

  const add = async (ns: number[], kind: string) => {
    const batch = {
      ids: ns.map((n) => `item-${String(n).padStart(4, "0")}`),
      embeddings: ns.map(embeddingFor),
      documents: ns.map((n) => `item ${n}`),
      metadatas: ns.map((n) => ({ n, kind })),
    };
    await items.add(batch);
    model.add(batch.ids, batch.embeddings, batch.documents, batch.metadatas);
    return batch.ids;
  };
  await add(Array.from({ length: 20 }, (_, i) => i), "seed");

  /** A read of the whole collection through chroma-lb: who served it, and what it answered. */
  const readAll = async () => {
    const sentMs = performance.now();
    const res = await fetch(`${lb.url}${T}/collections/${items.id}/get`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ include: ["embeddings", "documents", "metadatas"] }),
    });
    const body = (await res.json()) as GetAnswer;
    return { sentMs, answeredMs: performance.now(), status: res.status, instance: res.headers.get("x-chroma-lb-instance"), records: res.status === 200 ? asRecords(body) : body };
  };

  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "replica has the seed" });
  const before = await readAll();
  expect(before).toMatchObject({ status: 200, instance: "replica", records: model.sorted() });

  await replica!.kill("SIGKILL");

  // Reads: every one answered by the primary, with everything acknowledged.
  for (let i = 0; i < 5; i++) {
    const read = await readAll();
    expect({ status: read.status, instance: read.instance, records: read.records }).toEqual({ status: 200, instance: "primary", records: model.sorted() });
  }

  // Writes of every kind succeed. Adds alternate with updates so that replay cannot merge
  // them into a few requests: the replica has a backlog it needs a while to apply.
  for (let k = 0; k < 60; k++) {
    const [id] = await add([100 + k], k % 3 === 0 ? "temp" : "bulk");
    const update = { ids: [id!], embeddings: [embeddingFor(5000 + k)], documents: [`item ${100 + k}, revised`], metadatas: [{ rev: 1 }] };
    await items.update(update);
    model.update(update.ids, update.embeddings, update.documents, update.metadatas);
  }
  const upsert = { ids: ["item-0003", "item-9000"], embeddings: [embeddingFor(3003), embeddingFor(9000)], documents: ["upserted 3", "upserted new"], metadatas: [{ kind: "seed", up: true }, { kind: "new", up: true }] };
  await items.upsert(upsert);
  model.upsert(upsert.ids, upsert.embeddings, upsert.documents, upsert.metadatas);
  await items.delete({ ids: ["item-0001", "item-0002", "item-0101"] });
  model.delete(["item-0001", "item-0002", "item-0101"]);
  await items.delete({ where: { kind: "temp" } });
  model.deleteWhere("kind", "temp");
  await items.modify({ metadata: { owner: "cms", revision: 2 } });
  const made = await client.createCollection({ name: "made_while_replica_down", embeddingFunction: null });
  await made.add({ ids: ["m1", "m2"], embeddings: [embeddingFor(1), embeddingFor(2)], documents: ["one", "two"], metadatas: [{ n: 1 }, { n: 2 }] });

  const outage = await json(`${lb.url}/status`);
  expect(outage.write_target).toBe("primary");
  expect(outage.instances.map((i: { name: string; state: string }) => [i.name, i.state])).toEqual([["primary", "healthy"], ["replica", "down"]]);
  const owed = (await json(`${lb.url}/wal/status`)).instances[1].pending_entries;
  expect(owed).toBeGreaterThan(120);

  // Restart: reads and the replica's state are recorded side by side until it serves again.
  const reads: Array<Awaited<ReturnType<typeof readAll>>> = [];
  const snapshots: Array<{ sentMs: number; state: string; pending: number }> = [];
  let stop = false;
  const reader = async () => {
    while (!stop) reads.push(await readAll());
  };
  const poller = async () => {
    while (!stop) {
      // The count is read before the state, one after the other: nothing is written meanwhile,
      // so the count only falls, and a state of catching_up seen after it must see entries still
      // owed. Read side by side, the last entry could be applied between the two answers.
      const wal = await json(`${lb.url}/wal/status`);
      const sentMs = performance.now();
      const status = await json(`${lb.url}/status`);
      snapshots.push({ sentMs, state: status.instances[1].state, pending: wal.instances[1].pending_entries });
      await Bun.sleep(10);
    }
  };
  const loops = [reader(), poller()];
  try {
    await replica!.restart();
    // Replay's pace is the machine's: the wait lasts while the replica's state or count moves,
    // and fails once they stand still (a replay that stopped, or a replica that never serves).
    await waitWhileProgressing(
      () => reads.some((r) => r.instance === "replica" && r.sentMs > (snapshots.find((s) => s.state === "healthy")?.sentMs ?? Infinity)),
      () => [snapshots.at(-1)?.state, snapshots.at(-1)?.pending],
      { message: "the replica serving reads again" },
    );
  } finally {
    stop = true;
    await Promise.all(loops);
  }

  // Every read answered everything acknowledged, whoever served it.
  expect(reads.filter((r) => r.status !== 200 || !Bun.deepEquals(r.records, model.sorted()))).toEqual([]);
  // The replica went through catching_up, and served no read answered before it was last seen catching up.
  const catchingUp = snapshots.filter((s) => s.state === "catching_up");
  expect(catchingUp.length).toBeGreaterThan(0);
  expect(catchingUp.every((s) => s.pending > 0)).toBe(true);
  const lastCatchingUpMs = catchingUp.at(-1)!.sentMs;
  expect(reads.filter((r) => r.instance === "replica" && r.answeredMs < lastCatchingUpMs)).toEqual([]);
  console.log(
    `replica-down: replica owed ${owed} entries; ${reads.length} reads during its return ` +
      `(${reads.filter((r) => r.instance === "replica").length} by the replica); catching_up seen for ${Math.round(lastCatchingUpMs - catchingUp[0]!.sentMs)} ms`,
  );

  // Both instances hold exactly the same data, and it is what clients were told.
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "every entry applied everywhere" });
  const [onPrimary, onReplica] = await dumpInstances([primary!.url, replica!.url]);
  expect(onReplica).toEqual(onPrimary!);
  const expected: Record<string, DumpedCollection> = {
    catalog_items: { metadata: { owner: "cms", revision: 2 }, dimension: 4, records: model.sorted() },
    made_while_replica_down: {
      metadata: null,
      dimension: 4,
      records: [
        { id: "m1", embedding: embeddingFor(1), document: "one", metadata: { n: 1 } },
        { id: "m2", embedding: embeddingFor(2), document: "two", metadata: { n: 2 } },
      ],
    },
  };
  expect(onPrimary).toEqual({ "default_tenant/default_database": expected });
}, 180_000);
