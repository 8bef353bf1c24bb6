/**
 * Every byte as the client wrote it: random metadata, documents and embeddings written
 * concurrently through chroma-lb (so the write path and replay merge them) and one by one to
 * a lone Chroma server end up as the same text on every instance and on the lone server,
 * before and after an outage and its replay. Values are compared as raw answer text, never
 * parsed: `1.0` and `1` are different types to Chroma, and integers past 2^53 must keep
 * every digit.
 */
import { afterAll, expect, test } from "bun:test";
import { killAll, startChroma, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";
import { canonicalGet, postRaw } from "../support/raw";
import { seededRandom } from "../support/random";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const getAll = JSON.stringify({ include: ["documents", "metadatas", "embeddings"] });

// Raw JSON literals, written as text so nothing in the test converts them either.
const numberLiterals = [
  "1.0", "1", "-0.0", "0", "9007199254740993", "-9007199254740993", "123456789012345678", "1e-7",
  "2.5E+3", "0.1", "3.0000000000000004", "-42", "1.5e300", "0.000001", "100.50",
];
const stringLiterals = [
  '"caf\\u00e9"', '"tab\\tq\\"uote\\\\"', '"emoji 🚀 ✓ 漢字"', '"line\\nbreak"', '"\\u2028sep\\/slash"', '"plain"', '""', '"\\ud83d\\ude00 pair"',
];
const boolLiterals = ["true", "false"];
/** Embedding components: exact in float32 or not, with and without a fraction. */
const floatLiterals = ["0.5", "1.0", "-0.0", "1e-3", "0.25", "-2", "3.0", "0.1", "7", "-1.5E-2"];
const float32Values = [0.5, 1, -0, 0.25, -2, 3, 0.1, 7, -0.015, 1e-3];

interface Generator {
  next: () => number;
  pick: <T>(items: T[]) => T;
}

function generator(seed: number): Generator {
  const next = seededRandom(seed);
  return { next, pick: (items) => items[Math.floor(next() * items.length)]! };
}

function metadataText(g: Generator): string {
  const keys = ["f", "n", "s", "b", "big", "neg", "tiny", "caf\\u00e9"].filter(() => g.next() < 0.6);
  const value = (): string => {
    const kind = g.next();
    return kind < 0.55 ? g.pick(numberLiterals) : kind < 0.9 ? g.pick(stringLiterals) : g.pick(boolLiterals);
  };
  return `{${(keys.length ? keys : ["f"]).map((k) => ` "${k}" : ${value()}`).join(",")}}`;
}

function embeddingText(g: Generator, base64: boolean): string {
  if (base64) {
    const values = Float32Array.from({ length: 4 }, () => g.pick(float32Values));
    return `"${Buffer.from(values.buffer).toString("base64")}"`;
  }
  return `[${Array.from({ length: 4 }, () => g.pick(floatLiterals)).join(", ")}]`;
}

/** One add or upsert body of 1-3 records, as raw text; every field present so that bodies merge. */
function writeBody(g: Generator, ids: string[]): string {
  const base64 = g.next() < 0.5;
  const embeddings = ids.map(() => embeddingText(g, base64));
  const documents = ids.map(() => g.pick(stringLiterals));
  const metadatas = ids.map(() => metadataText(g));
  return `{"ids":[${ids.map((id) => JSON.stringify(id)).join(",")}],\n "embeddings":[${embeddings.join(",")}],"documents":[${documents.join(",")}], "metadatas":[${metadatas.join(",")}]}`;
}

/** Splits `ids` into groups of 1-3, one write each. */
function groups(g: Generator, ids: string[]): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < ids.length; ) {
    const n = 1 + Math.floor(g.next() * 3);
    out.push(ids.slice(i, i + n));
    i += n;
  }
  return out;
}

test("values keep their text through merged writes and merged replay, on every instance and as on a lone server", async () => {
  const seed = Number(process.env.SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`[lossless] seed ${seed} (replay with SEED=${seed})`);
  const g = generator(seed);

  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lone = await startChroma();
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    HEALTH_CHECK_INTERVAL: "1",
  });

  // The collection's own metadata keeps its text too.
  const create = `{"name":"lossless","configuration":{},"metadata":{"f":1.0,"big":9007199254740993}}`;
  const created = await postRaw(`${lb.url}${T}/collections`, create);
  expect(created.status).toBe(200);
  expect(created.text).toContain(`"f":1.0`);
  expect(created.text).toContain(`"big":9007199254740993`);
  const loneCreated = await postRaw(`${lone.url}${T}/collections`, create);
  const loneId = (JSON.parse(loneCreated.text) as { id: string }).id;
  const lbId = (JSON.parse(created.text) as { id: string }).id;
  const fetched = await (await fetch(`${lb.url}${T}/collections/lossless`)).text();
  expect(fetched).toContain(`"f":1.0`);
  expect(fetched).toContain(`"big":9007199254740993`);

  /** Sends the writes concurrently through chroma-lb and one by one to the lone server. */
  const write = async (op: "add" | "upsert", bodies: string[]) => {
    const answers = await Promise.all(bodies.map((body) => postRaw(`${lb.url}${T}/collections/${lbId}/${op}`, body)));
    expect(answers.map((a) => a.status)).toEqual(bodies.map(() => (op === "add" ? 201 : 200)));
    for (const body of bodies) expect((await postRaw(`${lone.url}${T}/collections/${loneId}/${op}`, body)).status).toBe(op === "add" ? 201 : 200);
  };

  const compare = async (label: string) => {
    await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: `${label}: log drained` });
    const mapping = (await json(`${lb.url}/collection/mappings`)).mappings.find((m: { collection_name: string }) => m.collection_name === "lossless");
    const expected = canonicalGet((await postRaw(`${lone.url}${T}/collections/${loneId}/get`, getAll)).text);
    for (const [name, server] of [["primary", primary!], ["replica", replica!]] as const) {
      const answer = await postRaw(`${server.url}${T}/collections/${mapping.instances[name]}/get`, getAll);
      expect(answer.status).toBe(200);
      expect({ instance: name, get: canonicalGet(answer.text) }).toEqual({ instance: name, get: expected });
    }
    return expected;
  };

  // Phase 1: concurrent adds, merged on the write path.
  const firstIds = Array.from({ length: 60 }, (_, i) => `doc-${i}`);
  const requestsBefore = (await json(`${lb.url}/admin/instances`)).instances[0].total_requests;
  const firstBodies = groups(g, firstIds).map((ids) => writeBody(g, ids));
  await write("add", firstBodies);
  const requestsAfter = (await json(`${lb.url}/admin/instances`)).instances[0].total_requests;
  // Fewer requests than writes: the write path merged some of them.
  expect(requestsAfter - requestsBefore).toBeLessThan(firstBodies.length);
  const first = await compare("after merged writes");
  // The values the issue was found with survive the merge.
  expect(first).toContain("9007199254740993");
  expect(first).toContain("1.0");
  console.log(`[lossless] phase 1: ${firstBodies.length} adds reached the primary in ${requestsAfter - requestsBefore} requests`);

  // Phase 2: the replica is down; adds of new ids and upserts of earlier ones pile up in
  // the log and reach the replica merged, in replay batches.
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: false })).status).toBe(200);
  const upserted = firstIds.filter(() => g.next() < 0.5);
  const newIds = Array.from({ length: 60 }, (_, i) => `late-${i}`);
  await write("upsert", groups(g, upserted).map((ids) => writeBody(g, ids)));
  await write("add", groups(g, newIds).map((ids) => writeBody(g, ids)));
  expect((await json(`${lb.url}/wal/status`)).instances.find((i: { name: string }) => i.name === "replica").pending_entries).toBeGreaterThan(0);
  expect((await post(`${lb.url}/admin/instances/replica/health`, { healthy: true, clear: true })).status).toBe(200);
  const second = await compare("after replay");
  expect(second).not.toBe(first);

  const walStatus = await json(`${lb.url}/wal/status`);
  expect({ failed: walStatus.failed, diverged: walStatus.diverged, rejected: walStatus.rejected_entries }).toEqual({ failed: [], diverged: [], rejected: 0 });
});
