/**
 * Use case 6: both instances die (SIGKILL). Reads answer 503 in Chroma's error shape; writes
 * are kept in the log and answered 202 (`X-Chroma-LB-Accepted: logged`), which the official
 * client takes as success. When the instances return, everything accepted reaches both, in
 * order. With ACCEPT_WRITES_WHEN_ALL_DOWN=false writes answer 503 and nothing is applied later.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient, type Metadata } from "chromadb";
import { killAll, startChromaServers, startLbProcess, waitFor } from "../support";
import { dumpInstances, type DumpedRecord } from "../support/compare";
import { post } from "../support/http";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const lbEnv = { HEALTH_CHECK_INTERVAL: "1", HEALTH_CHECK_TIMEOUT: "0.3", REQUEST_TIMEOUT: "5" };

/** Values exactly representable as float32, so they survive Chroma's storage unchanged. */
const embeddingFor = (n: number) => [(n % 16) / 4, ((n * 7) % 13) / 8, (n % 5) / 2 - 1, 1];

const record = (id: string, n: number, document: string, metadata: Metadata): DumpedRecord => ({ id, embedding: embeddingFor(n), document, metadata });

async function json<T = any>(url: string): Promise<T> {
  return (await (await fetch(url)).json()) as T;
}

const noInstanceCanServe = /^No Chroma instance can serve/;

test("with both instances SIGKILLed, reads answer 503, writes are logged (202) and reach both instances in order on return", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbProcess({ ...lbEnv, CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const orders = await client.createCollection({ name: "orders", embeddingFunction: null });
  const seed = [1, 2, 3, 4, 5].map((n) => record(`o-${n}`, n, `order ${n}`, { n, state: "open" }));
  await orders.add({ ids: seed.map((r) => r.id), embeddings: seed.map((r) => r.embedding!), documents: seed.map((r) => r.document!), metadatas: seed.map((r) => r.metadata as Metadata) });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "seed on both instances" });

  await Promise.all([primary!.kill("SIGKILL"), replica!.kill("SIGKILL")]);

  // Reads: 503 in Chroma's error shape, for records and for the catalog; the client throws.
  const get = await post(`${lb.url}${T}/collections/${orders.id}/get`, {});
  expect({ status: get.status, body: await get.json() }).toEqual({
    status: 503,
    body: { error: "ServiceUnavailable", message: expect.stringMatching(noInstanceCanServe) },
  });
  const list = await fetch(`${lb.url}${T}/collections`);
  expect({ status: list.status, body: await list.json() }).toEqual({
    status: 503,
    body: { error: "ServiceUnavailable", message: expect.stringMatching(noInstanceCanServe) },
  });
  await expect(orders.query({ queryEmbeddings: [embeddingFor(1)], nResults: 1 })).rejects.toThrow(/No Chroma instance can serve/);
  const health = await fetch(`${lb.url}/health`);
  expect({ status: health.status, body: await health.json() }).toMatchObject({ status: 503, body: { status: "unhealthy", healthy_instances: "0/2" } });

  // Writes: raw, 202 with the accepted header and a position.
  const positions: number[] = [];
  const accepted = async (res: Response) => {
    expect({ status: res.status, accepted: res.headers.get("x-chroma-lb-accepted"), body: await res.json() }).toEqual({ status: 202, accepted: "logged", body: {} });
    positions.push(Number(res.headers.get("x-chroma-lb-position")));
  };
  await accepted(await post(`${lb.url}${T}/collections/${orders.id}/add`, { ids: ["o-10", "o-11"], embeddings: [embeddingFor(10), embeddingFor(11)], documents: ["order 10", "order 11"], metadatas: [{ n: 10, state: "open" }, { n: 11, state: "open" }] }));
  await accepted(await post(`${lb.url}${T}/collections/${orders.id}/update`, { ids: ["o-10"], embeddings: [embeddingFor(1010)], documents: ["order 10, paid"], metadatas: [{ state: "paid" }] }));
  await accepted(await post(`${lb.url}${T}/collections/${orders.id}/delete`, { ids: ["o-11", "o-2"] }));
  expect(positions).toEqual([...positions].sort((a, b) => a - b));
  expect(new Set(positions).size).toBe(3);

  // The same kinds of writes through the client resolve: a 202 is a success to it.
  await orders.add({ ids: ["o-11"], embeddings: [embeddingFor(111)], documents: ["order 11, again"], metadatas: [{ n: 11, state: "reopened" }] });
  await orders.upsert({ ids: ["o-1", "o-12"], embeddings: [embeddingFor(101), embeddingFor(12)], documents: ["order 1, upserted", "order 12"], metadatas: [{ state: "upserted" }, { n: 12, state: "open" }] });
  await orders.delete({ where: { state: "paid" } });
  await orders.update({ ids: ["o-3"], embeddings: [embeddingFor(303)], documents: ["order 3, shipped"], metadatas: [{ state: "shipped" }] });
  // A collection created during the outage answers as it will be created, and takes writes at once.
  const later = await client.createCollection({ name: "created_during_outage", metadata: { made: "offline" }, embeddingFunction: null });
  expect({ name: later.name, metadata: later.metadata }).toEqual({ name: "created_during_outage", metadata: { made: "offline" } });
  await later.add({ ids: ["x"], embeddings: [embeddingFor(7)], documents: ["made offline"], metadatas: [{ n: 7 }] });

  const pendingWhileDown = (await json(`${lb.url}/wal/status`)).pending_writes;
  expect(pendingWhileDown).toBe(9);

  await Promise.all([primary!.restart(), replica!.restart()]);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { timeoutMs: 20_000, message: "every accepted write applied on both instances" });

  // o-10: added, updated to paid, then deleted by the paid filter. o-11: added, deleted, added again.
  // o-2: deleted. o-1: upserted over (metadata merged). o-3: updated. o-12: new from the upsert.
  const expectedOrders = [
    record("o-1", 101, "order 1, upserted", { n: 1, state: "upserted" }),
    record("o-11", 111, "order 11, again", { n: 11, state: "reopened" }),
    record("o-12", 12, "order 12", { n: 12, state: "open" }),
    record("o-3", 303, "order 3, shipped", { n: 3, state: "shipped" }),
    record("o-4", 4, "order 4", { n: 4, state: "open" }),
    record("o-5", 5, "order 5", { n: 5, state: "open" }),
  ];
  const [onPrimary, onReplica] = await dumpInstances([primary!.url, replica!.url]);
  expect(onReplica).toEqual(onPrimary!);
  expect(onPrimary).toEqual({
    "default_tenant/default_database": {
      orders: { metadata: null, dimension: 4, records: expectedOrders },
      created_during_outage: { metadata: { made: "offline" }, dimension: 4, records: [record("x", 7, "made offline", { n: 7 })] },
    },
  });

  // And through chroma-lb, by the id the outage answer gave.
  const read = await later.get({ include: ["documents"] });
  expect({ ids: read.ids, documents: read.documents }).toEqual({ ids: ["x"], documents: ["made offline"] });
}, 60_000);

test("with ACCEPT_WRITES_WHEN_ALL_DOWN=false, writes while both instances are down answer 503 and are never applied", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbProcess({
    ...lbEnv,
    ACCEPT_WRITES_WHEN_ALL_DOWN: "false",
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
  });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const orders = await client.createCollection({ name: "orders", embeddingFunction: null });
  await orders.add({ ids: ["o-1"], embeddings: [embeddingFor(1)], documents: ["order 1"], metadatas: [{ n: 1 }] });
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "seed on both instances" });
  const rejectedBefore = (await json(`${lb.url}/wal/status`)).rejected_entries;

  await Promise.all([primary!.kill("SIGKILL"), replica!.kill("SIGKILL")]);

  const add = await post(`${lb.url}${T}/collections/${orders.id}/add`, { ids: ["o-2"], embeddings: [embeddingFor(2)], documents: ["order 2"] });
  expect({ status: add.status, accepted: add.headers.get("x-chroma-lb-accepted"), body: await add.json() }).toEqual({
    status: 503,
    accepted: null,
    body: { error: "ServiceUnavailable", message: expect.stringMatching(noInstanceCanServe) },
  });
  await expect(orders.delete({ ids: ["o-1"] })).rejects.toThrow(/No Chroma instance can serve/);
  await expect(client.createCollection({ name: "never_created", embeddingFunction: null })).rejects.toThrow(/No Chroma instance can serve/);

  await Promise.all([primary!.restart(), replica!.restart()]);
  await waitFor(async () => (await json(`${lb.url}/health`)).healthy_instances === "2/2", { timeoutMs: 15_000, message: "both instances back" });
  // The claim is that nothing happens, which no condition can await: let two replay
  // intervals (WAL_SYNC_INTERVAL, 1 s) pass before looking.
  await Bun.sleep(2_000);

  const wal = await json(`${lb.url}/wal/status`);
  expect({ pending: wal.pending_writes, rejected: wal.rejected_entries - rejectedBefore }).toEqual({ pending: 0, rejected: 3 });
  const [onPrimary, onReplica] = await dumpInstances([primary!.url, replica!.url]);
  expect(onReplica).toEqual(onPrimary!);
  expect(onPrimary).toEqual({
    "default_tenant/default_database": { orders: { metadata: null, dimension: 4, records: [record("o-1", 1, "order 1", { n: 1 })] } },
  });
}, 60_000);
