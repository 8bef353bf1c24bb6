/**
 * A client started while every instance is down still writes. The official `chromadb` JS
 * client asks `GET /api/v2/pre-flight-checks` before its first add; chroma-lb answers it,
 * and version and identity, from the last answer an instance gave (`X-Chroma-LB-Cached:
 * true`), kept on disk so that a restart of chroma-lb during the outage keeps them. The
 * client's writes are logged (202) and reach both instances when they return.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbProcess, waitFor } from "../support";
import { dumpInstances } from "../support/compare";
import { json } from "../support/http";

afterAll(() => killAll());

const lbEnv = { HEALTH_CHECK_INTERVAL: "1", HEALTH_CHECK_TIMEOUT: "0.3", REQUEST_TIMEOUT: "5" };

/** Status, body and the headers that say where an answer came from. */
async function answer(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  return {
    status: res.status,
    body: await res.text(),
    cached: res.headers.get("x-chroma-lb-cached"),
    instance: res.headers.get("x-chroma-lb-instance"),
    contentType: res.headers.get("content-type"),
  };
}

test("with every instance down, a new official client gets pre-flight checks, version and identity as last answered, and its writes are logged and applied on return", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbProcess({ ...lbEnv, CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });

  // What a real instance answers, asked of it directly.
  const direct = {
    preflight: await answer(`${primary!.url}/api/v2/pre-flight-checks`),
    version: await answer(`${primary!.url}/api/v2/version`),
    identity: await answer(`${primary!.url}/api/v2/auth/identity`),
  };
  // Through chroma-lb while the instances answer: served by one, not cached. Pre-flight
  // checks are kept as each instance comes up; version and identity as clients ask them.
  for (const path of ["version", "auth/identity"]) {
    const live = await answer(`${lb.url}/api/v2/${path}`);
    expect({ status: live.status, cached: live.cached, instance: live.instance }).toEqual({ status: 200, cached: null, instance: expect.stringMatching(/^(primary|replica)$/) });
  }

  await Promise.all([primary!.kill("SIGKILL"), replica!.kill("SIGKILL")]);
  await waitFor(async () => (await json(`${lb.url}/health`)).healthy_instances === "0/2", { message: "both instances down" });
  // chroma-lb itself restarts during the outage: the kept answers are on disk.
  await lb.restart();
  expect((await json(`${lb.url}/health`)).healthy_instances).toBe("0/2");

  const cachedAs = (d: (typeof direct)["preflight"]) => ({ status: 200, body: d.body, cached: "true", instance: "none", contentType: d.contentType });
  expect(await answer(`${lb.url}/api/v2/pre-flight-checks`)).toEqual(cachedAs(direct.preflight));
  expect(await answer(`${lb.url}/api/v2/version`)).toEqual(cachedAs(direct.version));
  expect(await answer(`${lb.url}/api/v2/auth/identity`)).toEqual(cachedAs(direct.identity));
  // Identity is kept per credentials: a caller never asked before gets the 503.
  const stranger = await answer(`${lb.url}/api/v2/auth/identity`, { "x-chroma-token": "someone-else" });
  expect({ status: stranger.status, cached: stranger.cached }).toEqual({ status: 503, cached: null });
  // The heartbeat is never answered from memory: it says whether an instance answers now.
  expect((await fetch(`${lb.url}/api/v2/heartbeat`)).status).toBe(503);

  // A client started now: its create and its add are logged.
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  expect(await client.getMaxBatchSize()).toBe(JSON.parse(direct.preflight.body).max_batch_size);
  expect(await client.version()).toBe(JSON.parse(direct.version.body));
  const notes = await client.createCollection({ name: "notes_during_outage", embeddingFunction: null });
  await notes.add({ ids: ["n1", "n2"], embeddings: [[1, 0, 0.5], [0, 1, 0.25]], documents: ["first", "second"], metadatas: [{ k: 1 }, { k: 2 }] });
  await notes.upsert({ ids: ["n3"], embeddings: [[0.5, 0.5, 0]], documents: ["third"], metadatas: [{ k: 3 }] });
  expect((await json(`${lb.url}/wal/status`)).pending_writes).toBe(3);

  await Promise.all([primary!.restart(), replica!.restart()]);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { timeoutMs: 20_000, message: "the logged writes applied on both instances" });
  const [onPrimary, onReplica] = await dumpInstances([primary!.url, replica!.url]);
  expect(onReplica).toEqual(onPrimary!);
  expect(onPrimary).toEqual({
    "default_tenant/default_database": {
      notes_during_outage: {
        metadata: null,
        dimension: 3,
        records: [
          { id: "n1", embedding: [1, 0, 0.5], document: "first", metadata: { k: 1 } },
          { id: "n2", embedding: [0, 1, 0.25], document: "second", metadata: { k: 2 } },
          { id: "n3", embedding: [0.5, 0.5, 0], document: "third", metadata: { k: 3 } },
        ],
      },
    },
  });
  // With an instance back, answers come from it again.
  const live = await answer(`${lb.url}/api/v2/pre-flight-checks`);
  expect({ status: live.status, cached: live.cached }).toEqual({ status: 200, cached: null });
}, 90_000);
