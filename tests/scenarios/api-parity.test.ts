/**
 * The whole Chroma v2 API through chroma-lb answers as one lone Chroma server does.
 *
 * Two Chroma servers sit behind chroma-lb; a third runs alone. The same sequence of
 * operations runs through the official client against both, and every answer is recorded
 * in a transcript. The transcripts must be equal once collection ids are replaced by the
 * collection they name (ids are random UUIDs, different on every server by nature). The
 * one difference chroma-lb makes on purpose (409 instead of 500 for a rename onto an
 * existing name) is asserted on its own.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { AdminClient, ChromaClient, type Collection } from "chromadb";
import {
  killAll,
  startChromaServers,
  startLbInProcess,
  waitFor,
  type ChromaServer,
  type ChromaServers,
  type LbInProcess,
} from "../support";

afterAll(() => killAll());

const json = { "content-type": "application/json" };
const T = (tenant = "default_tenant", database = "default_database") =>
  `/api/v2/tenants/${tenant}/databases/${database}`;
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** A collection id no server knows, the same for both targets so error messages compare. */
const unknownId = "0b5e0a4c-1f4e-4d3a-9a51-6c2f1f0e2d77";

/** Where one run of the sequence goes: chroma-lb or the lone server. */
interface Target {
  label: "lb" | "lone";
  url: string;
  port: number;
  /** Collection id -> "tenant/database/name" at creation, to compare answers across targets. */
  ids: Map<string, string>;
}

type Transcript = Array<[step: string, value: unknown]>;

let servers: ChromaServers;
let primary: ChromaServer;
let replica: ChromaServer;
let lone: ChromaServer;
let lb: LbInProcess;
let viaLb: Target;
let viaLone: Target;

beforeAll(async () => {
  servers = await startChromaServers(3);
  [primary, replica, lone] = servers as unknown as [ChromaServer, ChromaServer, ChromaServer];
  lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url });
  viaLb = { label: "lb", url: lb.url, port: lb.port, ids: new Map() };
  viaLone = { label: "lone", url: lone.url, port: lone.port, ids: new Map() };
});

afterAll(async () => {
  await lb?.stop();
  await servers?.[Symbol.asyncDispose]();
});

function client(target: Target, tenant?: string, database?: string): ChromaClient {
  return new ChromaClient({ host: "127.0.0.1", port: target.port, tenant, database });
}

function admin(target: Target): AdminClient {
  return new AdminClient({ host: "127.0.0.1", port: target.port, ssl: false });
}

/** The parts of a client Collection a user reads. */
function summary(c: Collection) {
  return { id: c.id, name: c.name, tenant: c.tenant, database: c.database, metadata: c.metadata ?? null, configuration: c.configuration };
}

/** Plain data of a client result object (GetResult, QueryResult) without its methods. */
function plain(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value));
}

function remember(target: Target, c: { id: string; tenant: string; database: string; name: string }) {
  if (!target.ids.has(c.id)) target.ids.set(c.id, `${c.tenant}/${c.database}/${c.name}`);
}

/**
 * Replaces every collection id with the collection it was created as, so answers from two
 * servers compare. An unknown UUID stays as it is, which makes the comparison fail: an
 * answer carrying an id the client never saw at creation is a bug.
 */
function normalise(target: Target, value: unknown): unknown {
  if (typeof value === "string") {
    const label = target.ids.get(value);
    return label ? `<id of ${label}>` : value;
  }
  if (Array.isArray(value)) return value.map((v) => normalise(target, v));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalise(target, v)]));
  }
  return value;
}

async function step(transcript: Transcript, name: string, run: () => Promise<unknown>) {
  try {
    transcript.push([name, await run()]);
  } catch (error) {
    // The class is what a user branches on; messages of 400s embed the URL (and so the port).
    transcript.push([name, { threw: (error as Error).name }]);
  }
}

/** A raw request: status and body, for what the client hides (status codes, error bodies). */
async function raw(target: Target, method: string, path: string, body?: unknown) {
  const res = await fetch(`${target.url}${path}`, {
    method,
    headers: body === undefined ? undefined : json,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Kept as text.
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

const vec = (i: number) => [i, i + 0.5, -i];

/** Database ids are each instance's own (chroma-lb maps collection ids only; clients address databases by name). */
function withoutDatabaseId(db: { id?: string; name: string; tenant: string }) {
  const { id, ...rest } = db;
  return { ...rest, id: typeof id === "string" && uuidPattern.test(id) ? "<database id>" : id };
}

/**
 * The sequence. Returns the transcript of answers; the rename onto an existing name is
 * returned apart, since there chroma-lb answers differently on purpose.
 */
async function runSequence(target: Target): Promise<{ transcript: Transcript; renameOntoExisting: unknown }> {
  const t: Transcript = [];
  const main = client(target);
  const adm = admin(target);

  // Instance-level reads.
  await step(t, "heartbeat", async () => typeof (await main.heartbeat()));
  await step(t, "version", () => main.version());
  await step(t, "pre-flight", () => main.getPreflightChecks());

  // Tenants and databases.
  await step(t, "create tenant", () => adm.createTenant({ name: "acme" }));
  await step(t, "get tenant", () => adm.getTenant({ name: "acme" }));
  await step(t, "create database default_tenant/books", () => adm.createDatabase({ name: "books", tenant: "default_tenant" }));
  await step(t, "create database acme/books", () => adm.createDatabase({ name: "books", tenant: "acme" }));
  await step(t, "create database acme/films", () => adm.createDatabase({ name: "films", tenant: "acme" }));
  await step(t, "list databases of acme", async () =>
    (await adm.listDatabases({ tenant: "acme" })).map(withoutDatabaseId).sort((a, b) => a.name.localeCompare(b.name)),
  );
  await step(t, "get database acme/films", async () => withoutDatabaseId(await adm.getDatabase({ name: "films", tenant: "acme" })));

  // Collections.
  const create = async (c: ChromaClient, name: string, metadata?: Record<string, string | number | boolean>) => {
    const created = await c.createCollection({ name, metadata, embeddingFunction: null });
    remember(target, created);
    return summary(created);
  };
  await step(t, "create alpha", () => create(main, "alpha", { topic: "letters", rank: 1 }));
  for (const name of ["beta", "gamma", "delta", "zeta", "eta"]) await step(t, `create ${name}`, () => create(main, name));
  await step(t, "getOrCreate existing alpha keeps its metadata", async () =>
    summary(await main.getOrCreateCollection({ name: "alpha", metadata: { topic: "other" }, embeddingFunction: null })),
  );
  await step(t, "getOrCreate new epsilon", async () => {
    const c = await main.getOrCreateCollection({ name: "epsilon", metadata: { made: "by getOrCreate" }, embeddingFunction: null });
    remember(target, c);
    return summary(c);
  });
  await step(t, "get alpha", async () => summary(await main.getCollection({ name: "alpha" })));
  await step(t, "create alpha in acme/books", () => create(client(target, "acme", "books"), "alpha", { shelf: 1 }));
  await step(t, "create alpha in default_tenant/books", () => create(client(target, "default_tenant", "books"), "alpha"));

  await step(t, "list collections", async () => {
    const list = await main.listCollections();
    const ids = list.map((c) => c.id);
    return {
      // Chroma lists collections sorted by the ids it answers; so must chroma-lb.
      sortedById: ids.every((id, i) => i === 0 || ids[i - 1]! < id),
      collections: list.map(summary).sort((a, b) => a.name.localeCompare(b.name)),
    };
  });
  await step(t, "pages of 3 partition the list, every time", async () => {
    const full = (await main.listCollections()).map((c) => c.name);
    const rounds: unknown[] = [];
    // Several rounds, so that through chroma-lb pages come from both instances.
    for (let round = 0; round < 4; round++) {
      const pages: string[][] = [];
      for (let offset = 0; offset < full.length + 3; offset += 3) {
        pages.push((await main.listCollections({ limit: 3, offset })).map((c) => c.name));
      }
      rounds.push({ sizes: pages.map((p) => p.length), sameAsFullList: pages.flat().join() === full.join() });
    }
    return rounds;
  });
  await step(t, "count collections", () => main.countCollections());
  await step(t, "list collections of acme/books", async () => (await client(target, "acme", "books").listCollections()).map(summary));
  await step(t, "count collections of acme/films", () => client(target, "acme", "films").countCollections());

  await step(t, "rename delta", async () => (await main.getCollection({ name: "delta" })).modify({ name: "delta_renamed" }));
  await step(t, "get renamed delta", async () => summary(await main.getCollection({ name: "delta_renamed" })));
  await step(t, "old name is gone", async () => summary(await main.getCollection({ name: "delta" })));
  await step(t, "replace beta's metadata", async () => (await main.getCollection({ name: "beta" })).modify({ metadata: { topic: "b", version: 2 } }));
  await step(t, "get beta", async () => summary(await main.getCollection({ name: "beta" })));
  await step(t, "delete gamma", () => main.deleteCollection({ name: "gamma" }));
  await step(t, "get deleted gamma", async () => summary(await main.getCollection({ name: "gamma" })));
  await step(t, "count after delete", () => main.countCollections());
  await step(t, "names after rename and delete", async () => (await main.listCollections()).map((c) => c.name).sort());

  // Records.
  const alpha = await main.getCollection({ name: "alpha" });
  await step(t, "add r1..r6", () =>
    alpha.add({
      ids: ["r1", "r2", "r3", "r4", "r5", "r6"],
      embeddings: [1, 2, 3, 4, 5, 6].map(vec),
      documents: ["one", "two", "three", "four", "five", "six"],
      metadatas: [1, 2, 3, 4, 5, 6].map((n) => ({ n, group: n % 2 ? "odd" : "even", kind: n <= 3 ? "low" : "high" })),
    }),
  );
  await step(t, "add an existing id is ignored", () => alpha.add({ ids: ["r1"], embeddings: [vec(9)], documents: ["not one"] }));
  await step(t, "upsert r2 and new r7", () =>
    alpha.upsert({
      ids: ["r2", "r7"],
      embeddings: [vec(2.5), vec(7)],
      documents: ["two again", "seven"],
      metadatas: [{ n: 2, group: "even", kind: "low", upserted: true }, { n: 7, group: "odd", kind: "high" }],
    }),
  );
  await step(t, "update r3 metadata (merged per key)", () => alpha.update({ ids: ["r3"], metadatas: [{ extra: "yes" }] }));
  await step(t, "update r1 document and embedding", () => alpha.update({ ids: ["r1"], embeddings: [vec(1.5)], documents: ["one changed"] }));
  await step(t, "update a missing id is a no-op", () => alpha.update({ ids: ["r99"], embeddings: [vec(99)], documents: ["nothing"] }));
  await step(t, "delete r4 by id", async () => plain(await alpha.delete({ ids: ["r4"] })));
  await step(t, "delete kind=high by where", async () => plain(await alpha.delete({ where: { kind: "high" } })));
  await step(t, "count", () => alpha.count());
  await step(t, "get (default include)", async () => plain(await alpha.get()));
  await step(t, "get with embeddings, documents, metadatas", async () =>
    plain(await alpha.get({ include: ["embeddings", "documents", "metadatas"] })),
  );
  await step(t, "get by ids", async () => plain(await alpha.get({ ids: ["r3", "r1", "r404"] })));
  await step(t, "get where group=odd", async () => plain(await alpha.get({ where: { group: "odd" } })));
  await step(t, "get where n >= 2 and group=even", async () =>
    plain(await alpha.get({ where: { $and: [{ n: { $gte: 2 } }, { group: "even" }] } })),
  );
  await step(t, "get limit 2 offset 1", async () => plain(await alpha.get({ limit: 2, offset: 1 })));
  await step(t, "query nResults 2", async () => plain(await alpha.query({ queryEmbeddings: [vec(2.9)], nResults: 2 })));
  await step(t, "query two embeddings with everything", async () =>
    plain(await alpha.query({ queryEmbeddings: [vec(1), vec(3)], nResults: 3, include: ["embeddings", "documents", "metadatas", "distances"] })),
  );
  await step(t, "query where group=even", async () =>
    plain(await alpha.query({ queryEmbeddings: [vec(1)], nResults: 5, where: { group: "even" } })),
  );

  // The whole object, log_position and version included: they were measured equal (Chroma 1.0
  // keeps both at 0 for a local server), so they are compared as they are.
  await step(t, "get alpha (wire, the whole collection object)", async () => {
    const { status, body } = await raw(target, "GET", `${T()}/collections/alpha`);
    return { status, body };
  });
  await step(t, "get alpha by id (wire)", async () => {
    // Chroma 1.0 has no by-id route (404, empty body); chroma-lb answers it from its mappings.
    const { status } = await raw(target, "GET", `${T()}/collections/by-id/${alpha.id}`);
    return target.label === "lb" && status === 200 ? 404 : status;
  });

  const acmeAlpha = await client(target, "acme", "books").getCollection({ name: "alpha" });
  await step(t, "add in acme/books/alpha", () => acmeAlpha.add({ ids: ["b1", "b2"], embeddings: [vec(1), vec(2)], documents: ["book one", "book two"] }));
  await step(t, "get acme/books/alpha", async () => plain(await acmeAlpha.get({ include: ["embeddings", "documents"] })));
  await step(t, "default_tenant/books/alpha stays empty", () => client(target, "default_tenant", "books").getCollection({ name: "alpha" }).then((c) => c.count()));

  // Errors: the same class for the client, the same status and body on the wire.
  await step(t, "duplicate create (client)", () => create(main, "alpha"));
  await step(t, "duplicate create (wire)", async () => {
    const { status, body } = await raw(target, "POST", `${T()}/collections`, { name: "alpha" });
    return { status, body };
  });
  await step(t, "get unknown collection (client)", async () => summary(await main.getCollection({ name: "no_such_collection" })));
  await step(t, "records of an unknown collection (wire)", async () => {
    const { status, body } = await raw(target, "POST", `${T()}/collections/${unknownId}/get`, {});
    return { status, body };
  });
  await step(t, "wrong embedding dimension (client)", () => alpha.add({ ids: ["bad"], embeddings: [[1, 2, 3, 4]] }));
  await step(t, "wrong embedding dimension (wire)", async () => {
    const { status, body } = await raw(target, "POST", `${T()}/collections/${alpha.id}/add`, { ids: ["bad"], embeddings: [[1, 2, 3, 4]] });
    return { status, body };
  });
  await step(t, "nothing of the refused writes was kept", async () => plain(await alpha.get({ ids: ["bad"] })));

  // Rename onto an existing name: chroma-lb answers 409, a lone Chroma 500 (a UNIQUE constraint).
  const beta = await main.getCollection({ name: "beta" });
  const renameOntoExisting = {
    client: await beta.modify({ name: "alpha" }).then(
      () => "renamed",
      (error: Error) => error.name,
    ),
    wire: (await raw(target, "PUT", `${T()}/collections/${beta.id}`, { new_name: "alpha" })).status,
  };
  await step(t, "a refused rename changes nothing", async () => (await main.listCollections()).map((c) => c.name).sort());

  return { transcript: t.map(([name, value]) => [name, normalise(target, value)]), renameOntoExisting };
}

describe("the Chroma v2 API through chroma-lb", () => {
  let lbRun: Awaited<ReturnType<typeof runSequence>>;
  let loneRun: Awaited<ReturnType<typeof runSequence>>;

  test("answers the client exactly as a lone Chroma server does, apart from collection ids", async () => {
    lbRun = await runSequence(viaLb);
    loneRun = await runSequence(viaLone);
    // Step by step first, so a failure names the step; then the whole transcript.
    for (let i = 0; i < loneRun.transcript.length; i++) {
      expect({ step: lbRun.transcript[i]?.[0], answer: lbRun.transcript[i]?.[1] }).toEqual({
        step: loneRun.transcript[i]![0],
        answer: loneRun.transcript[i]![1],
      });
    }
    expect(lbRun.transcript).toEqual(loneRun.transcript);
    // The sequence itself must have exercised what it claims: spot-check a few answers.
    const answers = new Map(loneRun.transcript);
    expect(answers.get("version")).toBe("1.0.0");
    expect(answers.get("duplicate create (client)")).toEqual({ threw: "ChromaUniqueError" });
    expect(answers.get("get unknown collection (client)")).toEqual({ threw: "ChromaNotFoundError" });
    expect(answers.get("wrong embedding dimension (client)")).toEqual({ threw: "ChromaClientError" });
    expect((answers.get("records of an unknown collection (wire)") as { status: number }).status).toBe(404);
    expect((answers.get("wrong embedding dimension (wire)") as { status: number }).status).toBe(400);
    expect((answers.get("list collections") as { sortedById: boolean }).sortedById).toBe(true);
    expect(answers.get("count")).toBe(3);
  }, 60_000);

  test("a rename onto an existing name is 409 through chroma-lb where a lone server answers 500", () => {
    expect(lbRun.renameOntoExisting).toEqual({ client: "ChromaUniqueError", wire: 409 });
    expect(loneRun.renameOntoExisting).toEqual({ client: "ChromaServerError", wire: 500 });
  });

  test("add answers 201 on the wire, with chroma-lb's log position", async () => {
    const c = await client(viaLb).createCollection({ name: "wire_add", embeddingFunction: null });
    const res = await raw(viaLb, "POST", `${T()}/collections/${c.id}/add`, { ids: ["w1"], embeddings: [vec(1)], documents: ["w"] });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({});
    expect(Number(res.headers.get("x-chroma-lb-position"))).toBeGreaterThan(0);
    const loneCollection = await client(viaLone).createCollection({ name: "wire_add", embeddingFunction: null });
    const loneRes = await raw(viaLone, "POST", `${T()}/collections/${loneCollection.id}/add`, { ids: ["w1"], embeddings: [vec(1)], documents: ["w"] });
    expect(loneRes.status).toBe(201);
  });

  test("a body whose content type is not JSON is answered as a lone Chroma answers it (415 ChromaError), and one without a content type is read as JSON", async () => {
    const answers: Record<string, unknown[]> = { lb: [], lone: [] };
    const contentTypes = [null, "", "text/plain", "text/json", "application/jsonx", "application/vnd.api+json", "APPLICATION/JSON; charset=utf-8"];
    for (const target of [viaLb, viaLone]) {
      const c = await client(target).getOrCreateCollection({ name: "wire_content_type", embeddingFunction: null });
      for (const [n, contentType] of contentTypes.entries()) {
        const send = async (path: string, body: unknown) => {
          const res = await fetch(`${target.url}${path}`, {
            method: "POST",
            headers: contentType === null ? {} : { "content-type": contentType },
            // Bytes, so that fetch adds no Content-Type of its own.
            body: new TextEncoder().encode(JSON.stringify(body)),
          });
          const text = await res.text();
          return { status: res.status, body: res.status === 200 && path.endsWith("/collections") ? (JSON.parse(text) as { name: string }).name : text };
        };
        answers[target.label]!.push({
          contentType,
          add: await send(`${T()}/collections/${c.id}/add`, { ids: [`ct${n}`], embeddings: [vec(n)] }),
          get: await send(`${T()}/collections/${c.id}/get`, { ids: [`ct${n}`] }),
          create: await send(`${T()}/collections`, { name: `wire_ct_${n}` }),
        });
      }
    }
    // The later tests count collections: this one leaves none behind.
    for (const target of [viaLb, viaLone]) {
      const names = ((await raw(target, "GET", `${T()}/collections`)).body as Array<{ name: string }>).map((c) => c.name);
      for (const name of names.filter((n) => n.startsWith("wire_c"))) await client(target).deleteCollection({ name });
    }
    expect(answers.lb).toEqual(answers.lone!);
    expect(answers.lone!.map((a) => (a as { add: { status: number } }).add.status)).toEqual([201, 415, 415, 415, 415, 201, 201]);
  });

  // Chroma 1.0.5 answers n_results 0 with 200 and empty lists; chroma-lb answers as it does.
  test("query with n_results 0 is answered as a lone Chroma answers it, and leaves both instances healthy", async () => {
    const answers = [];
    for (const target of [viaLb, viaLone]) {
      const c = await client(target).getOrCreateCollection({ name: "wire_add", embeddingFunction: null });
      const res = await raw(target, "POST", `${T()}/collections/${c.id}/query`, { query_embeddings: [vec(1)], n_results: 0 });
      answers.push({ status: res.status, body: res.body });
    }
    expect(answers[0]).toEqual(answers[1]!);
    expect(answers[0]!.status).toBe(200);
    const status = (await raw(viaLb, "GET", "/status")).body as { instances: Array<{ name: string; state: string; healthy: boolean; consecutive_failures: number }> };
    expect(status.instances.map(({ name, state, healthy, consecutive_failures }) => ({ name, state, healthy, consecutive_failures }))).toEqual([
      { name: "primary", state: "healthy", healthy: true, consecutive_failures: 0 },
      { name: "replica", state: "healthy", healthy: true, consecutive_failures: 0 },
    ]);
  });

  test("list collections passes limit and offset on, and pages are stable", async () => {
    for (const target of [viaLb, viaLone]) {
      const full = (await raw(target, "GET", `${T()}/collections`)).body as Array<{ name: string }>;
      expect(full.length).toBeGreaterThan(3);
      const page = await raw(target, "GET", `${T()}/collections?limit=1&offset=1`);
      expect(page.status).toBe(200);
      expect((page.body as Array<{ name: string }>).map((c) => c.name)).toEqual([full[1]!.name]);
      const rest = (await raw(target, "GET", `${T()}/collections?offset=2`)).body as Array<{ name: string }>;
      expect(rest.map((c) => c.name)).toEqual(full.slice(2).map((c) => c.name));
      // Chroma's own refusal of a malformed limit comes through unchanged.
      const bad = await raw(target, "GET", `${T()}/collections?limit=abc`);
      expect({ status: bad.status, error: (bad.body as { error: string }).error }).toEqual({ status: 400, error: "InvalidArgumentError" });
    }
  });

  test("record endpoints accept the collection's name and each instance's own UUID", async () => {
    const lbClient = client(viaLb);
    const c = await lbClient.createCollection({ name: "by_name", embeddingFunction: null });
    const byName = `${T()}/collections/by_name`;
    expect((await raw(viaLb, "POST", `${byName}/add`, { ids: ["n1", "n2"], embeddings: [vec(1), vec(2)], documents: ["a", "b"] })).status).toBe(201);
    const expected = {
      ids: [["n2", "n1"]],
      documents: [["b", "a"]],
      distances: [[expect.any(Number), expect.any(Number)]],
    };
    const query = { query_embeddings: [vec(2)], n_results: 2, include: ["documents", "distances"] };
    expect((await raw(viaLb, "POST", `${byName}/query`, query)).body).toMatchObject(expected);
    expect((await raw(viaLb, "POST", `${byName}/get`, { include: ["documents"] })).body).toMatchObject({ ids: ["n1", "n2"], documents: ["a", "b"] });
    expect((await raw(viaLb, "GET", `${byName}/count`)).body).toBe(2);

    const mappings = (await raw(viaLb, "GET", "/collection/mappings")).body as {
      mappings: Array<{ collection_name: string; collection_id: string; primary_collection_id: string; replica_collection_id: string }>;
    };
    const mapping = mappings.mappings.find((m) => m.collection_name === "by_name")!;
    expect(mapping.collection_id).toBe(c.id);
    for (const uuid of [mapping.primary_collection_id, mapping.replica_collection_id]) {
      expect(uuid).toMatch(uuidPattern);
      const answer = await raw(viaLb, "POST", `${T()}/collections/${uuid}/get`, { include: ["documents"] });
      expect({ status: answer.status, body: answer.body }).toEqual({
        status: 200,
        body: { ids: ["n1", "n2"], documents: ["a", "b"], embeddings: null, metadatas: null, uris: null, include: ["documents"] },
      });
    }

    const byId = await raw(viaLb, "GET", `${T()}/collections/by-id/${c.id}`);
    expect(byId.status).toBe(200);
    expect(byId.body).toMatchObject({ id: c.id, name: "by_name", tenant: "default_tenant", database: "default_database", dimension: 3 });
    expect((await lbClient.getCollectionById(c.id)).name).toBe("by_name");
    expect((await raw(viaLb, "GET", `${T()}/collections/by-id/${unknownId}`)).status).toBe(404);
  });

  test("after everything, both instances hold exactly the same collections and records", async () => {
    await waitFor(
      async () => ((await raw(viaLb, "GET", "/wal/status")).body as { pending_writes: number }).pending_writes === 0,
      { message: "every instance applied every write" },
    );
    const places = [
      ["default_tenant", "default_database"],
      ["default_tenant", "books"],
      ["acme", "books"],
      ["acme", "films"],
    ] as const;
    const contents = async (server: ChromaServer) => {
      const out: Record<string, unknown> = {};
      for (const [tenant, database] of places) {
        const list = (await (await fetch(`${server.url}${T(tenant, database)}/collections`)).json()) as Array<{ id: string; name: string; metadata: unknown; dimension: unknown }>;
        for (const c of list.sort((a, b) => a.name.localeCompare(b.name))) {
          const records = await (
            await fetch(`${server.url}${T(tenant, database)}/collections/${c.id}/get`, {
              method: "POST",
              headers: json,
              body: JSON.stringify({ include: ["embeddings", "documents", "metadatas"] }),
            })
          ).json();
          out[`${tenant}/${database}/${c.name}`] = { metadata: c.metadata, dimension: c.dimension, records };
        }
      }
      return out;
    };
    const onPrimary = await contents(primary);
    const onReplica = await contents(replica);
    expect(Object.keys(onPrimary)).toEqual([
      "default_tenant/default_database/alpha",
      "default_tenant/default_database/beta",
      "default_tenant/default_database/by_name",
      "default_tenant/default_database/delta_renamed",
      "default_tenant/default_database/epsilon",
      "default_tenant/default_database/eta",
      "default_tenant/default_database/wire_add",
      "default_tenant/default_database/zeta",
      "default_tenant/books/alpha",
      "acme/books/alpha",
    ]);
    expect(onReplica).toEqual(onPrimary);
    // And what they hold is what the lone server holds after the same calls.
    const onLone = await contents(lone);
    for (const key of Object.keys(onLone)) expect({ key, ...(onPrimary[key] as object) }).toEqual({ key, ...(onLone[key] as object) });
    expect(Object.keys(onPrimary).filter((k) => !(k in onLone))).toEqual(["default_tenant/default_database/by_name"]);
  });
});
