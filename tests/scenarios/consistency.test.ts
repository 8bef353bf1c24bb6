/**
 * Every write reaches every instance, in order: a seeded random workload of record and
 * collection changes across two databases goes through chroma-lb with the official client,
 * and once the log is drained both instances hold exactly the same data. The sequential
 * variant also equals the same workload applied to a lone Chroma server; the concurrent
 * variant checks every writer's own records against an exact model of what it was told.
 *
 * Seeds: each randomized test prints its seed; `SEED=<n> bun test tests/scenarios/consistency.test.ts`
 * replays the same operations (the concurrent variant replays the same choices, not the
 * same interleaving). `OPS_FILE=<path>` also writes the sequential variant's operations
 * there, one JSON line each.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { AdminClient, ChromaClient, type Collection, type Metadata } from "chromadb";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { dumpInstances, recordCount, type DumpedRecord } from "../support/compare";

afterAll(() => killAll());

const TENANT = "default_tenant";
const DATABASES = ["default_database", "db_two"] as const;
type DatabaseName = (typeof DATABASES)[number];
const DIM = 4;

// ---------------------------------------------------------------- seeded randomness

function seedFromEnv(label: string): number {
  const seed = process.env.SEED ? Number(process.env.SEED) : Math.floor(Math.random() * 2 ** 31);
  console.log(`[${label}] seed ${seed} (replay with SEED=${seed})`);
  return seed;
}

/** mulberry32: small, fast and good enough to pick operations. */
function prng(seed: number) {
  let a = seed | 0;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!,
    chance: (p: number) => next() < p,
    /** A vector whose values survive Chroma's float32 storage exactly (at most 4 significant digits). */
    vector: () => Array.from({ length: DIM }, () => (Math.floor(next() * 2001) - 1000) / 1000),
    weighted: <T extends string>(weights: Record<T, number>): T => {
      const entries = Object.entries(weights) as Array<[T, number]>;
      let r = next() * entries.reduce((s, [, w]) => s + w, 0);
      for (const [key, w] of entries) {
        r -= w;
        if (r < 0) return key;
      }
      return entries[entries.length - 1]![0];
    },
  };
}
type Rng = ReturnType<typeof prng>;

// ---------------------------------------------------------------- operations as data

type Op =
  | { kind: "add" | "upsert" | "update"; coll: string; ids: string[]; embeddings?: number[][]; documents?: string[]; metadatas?: Metadata[] }
  | { kind: "deleteIds"; coll: string; ids: string[] }
  | { kind: "deleteWhere"; coll: string; where: Record<string, unknown> }
  | { kind: "rename"; coll: string; newName: string }
  | { kind: "modifyMetadata"; coll: string; metadata: Metadata }
  | { kind: "dropCollection"; coll: string; db: DatabaseName; name: string }
  | { kind: "createCollection"; coll: string; db: DatabaseName; name: string; metadata?: Metadata };

/** One side the workload is applied to: chroma-lb, or the lone reference server. */
class Target {
  readonly clients: Record<DatabaseName, ChromaClient>;
  readonly handles = new Map<string, Collection>();

  constructor(readonly port: number) {
    this.clients = {
      default_database: new ChromaClient({ host: "127.0.0.1", port, database: "default_database" }),
      db_two: new ChromaClient({ host: "127.0.0.1", port, database: "db_two" }),
    };
  }

  async createDatabases() {
    const admin = new AdminClient({ host: "127.0.0.1", port: this.port, ssl: false });
    await admin.createDatabase({ name: "db_two", tenant: TENANT });
  }

  /** Applies one operation; answers "ok" or the client's error class (never throws). */
  async apply(op: Op): Promise<string> {
    try {
      await this.run(op);
      return "ok";
    } catch (error) {
      return `${(error as Error).name}: ${(error as Error).message}`;
    }
  }

  private handle(key: string): Collection {
    const handle = this.handles.get(key);
    if (!handle) throw new Error(`no handle for ${key}`);
    return handle;
  }

  private async run(op: Op) {
    switch (op.kind) {
      case "add":
        return this.handle(op.coll).add({ ids: op.ids, embeddings: op.embeddings, documents: op.documents, metadatas: op.metadatas });
      case "upsert":
        return this.handle(op.coll).upsert({ ids: op.ids, embeddings: op.embeddings, documents: op.documents, metadatas: op.metadatas });
      case "update":
        return this.handle(op.coll).update({ ids: op.ids, embeddings: op.embeddings, documents: op.documents, metadatas: op.metadatas });
      case "deleteIds":
        return void (await this.handle(op.coll).delete({ ids: op.ids }));
      case "deleteWhere":
        return void (await this.handle(op.coll).delete({ where: op.where as never }));
      case "rename":
        return this.handle(op.coll).modify({ name: op.newName });
      case "modifyMetadata":
        return this.handle(op.coll).modify({ metadata: op.metadata });
      case "dropCollection":
        return this.clients[op.db].deleteCollection({ name: op.name });
      case "createCollection": {
        const handle = await this.clients[op.db].createCollection({ name: op.name, metadata: op.metadata, embeddingFunction: null });
        this.handles.set(op.coll, handle);
        return;
      }
    }
  }
}

// ---------------------------------------------------------------- helpers

async function walStatus(lb: { url: string }) {
  const res = await fetch(`${lb.url}/wal/status`);
  return (await res.json()) as { pending_writes: number; instances: Array<{ name: string; pending_entries: number }> };
}

async function converged(lb: { url: string }, timeoutMs = 30_000) {
  await waitFor(async () => (await walStatus(lb)).pending_writes === 0, { timeoutMs, message: "every instance applied the whole log" });
}

async function setReplicaDown(lb: { url: string }, down: boolean) {
  const res = await fetch(`${lb.url}/admin/instances/replica/health`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(down ? { healthy: false } : { healthy: true, clear: true }),
  });
  expect(res.status).toBe(200);
  await res.arrayBuffer();
}

function lbEnv(primary: string, replica: string, extra: Record<string, string> = {}) {
  return { CHROMA_PRIMARY_URL: primary, CHROMA_REPLICA_URL: replica, ...extra };
}

// ---------------------------------------------------------------- the sequential workload

interface SeqModelCollection {
  key: string;
  db: DatabaseName;
  name: string;
  /** The records that exist, with the metadata Chroma holds for each (for deletes by where). */
  records: Map<string, Record<string, unknown>>;
}

/**
 * Generates operations one at a time from a model of what exists, so most of them are
 * meaningful (ids that exist or just did, names that are free). Adds of existing ids,
 * updates of missing ids and deletes of missing ids are kept on purpose: Chroma's answers
 * to them are part of what must be the same everywhere.
 */
class SequentialWorkload {
  private readonly live: SeqModelCollection[] = [];
  private readonly droppedNames: Array<{ db: DatabaseName; name: string }> = [];
  private collectionCounter = 0;
  private nameCounter = 0;
  private version = 0;

  constructor(private readonly rng: Rng) {}

  initial(): Op[] {
    const ops: Op[] = [];
    for (const db of DATABASES) for (let i = 0; i < 2; i++) ops.push(this.create(db));
    return ops;
  }

  private create(db: DatabaseName, reuse?: { db: DatabaseName; name: string }): Op {
    const key = `k${this.collectionCounter++}`;
    const name = reuse?.name ?? `coll-${this.nameCounter++}`;
    this.live.push({ key, db, name, records: new Map() });
    const metadata = this.rng.chance(0.5) ? { purpose: this.rng.pick(["docs", "notes", "logs"]), shard: this.rng.int(4) } : undefined;
    return { kind: "createCollection", coll: key, db, name, metadata };
  }

  private idsFor(c: SeqModelCollection, max: number): string[] {
    const n = 1 + this.rng.int(max);
    const out = new Set<string>();
    for (let i = 0; i < n; i++) {
      // A small id space per collection, so adds collide with existing ids and deletes hit.
      out.add(`${c.key}-id${this.rng.int(24)}`);
    }
    return [...out];
  }

  private metadata(nullable: boolean): Metadata {
    const m: Metadata = { group: this.rng.int(4), v: ++this.version };
    if (this.rng.chance(0.4)) m.tag = this.rng.pick(["red", "green", "blue"]);
    if (this.rng.chance(0.2)) m.flag = this.rng.chance(0.5);
    if (nullable && this.rng.chance(0.2)) m.tag = null;
    return m;
  }

  next(): Op {
    const kind = this.rng.weighted({
      add: 28,
      upsert: 16,
      update: 14,
      deleteIds: 10,
      deleteWhere: 4,
      rename: 5,
      modifyMetadata: 3,
      dropCollection: 2,
      createCollection: 3,
    });
    if (kind === "createCollection" || this.live.length === 0) {
      const reuse = this.droppedNames.length && this.rng.chance(0.5) ? this.droppedNames.splice(this.rng.int(this.droppedNames.length), 1)[0] : undefined;
      return this.create(reuse?.db ?? this.rng.pick(DATABASES), reuse);
    }
    const c = this.rng.pick(this.live);
    switch (kind) {
      case "add":
      case "upsert":
      case "update": {
        const ids = this.idsFor(c, 8);
        const op: Op = { kind, coll: c.key, ids };
        // Chroma 1.0 itself keeps the embedding of an update of a missing id and shows it after
        // a later add of that id (not always: it depends on its own indexing); so an update
        // that names a missing id changes metadata only, and stays a plain no-op for that id.
        const metadataOnly = kind === "update" && ids.some((id) => !c.records.has(id));
        const withAll = kind !== "update" || (!metadataOnly && this.rng.chance(0.3));
        if (withAll || (!metadataOnly && this.rng.chance(0.5))) op.documents = ids.map(() => `doc ${this.rng.int(1000)} ${kind}`);
        if (withAll || metadataOnly || this.rng.chance(0.5)) op.metadatas = ids.map(() => this.metadata(kind !== "add"));
        // Adds and upserts always carry embeddings (the first add sets the dimension), and so
        // does any write with documents: without them the client would try to embed the text.
        if (!metadataOnly && (kind !== "update" || op.documents || !op.metadatas || this.rng.chance(0.5))) op.embeddings = ids.map(() => this.rng.vector());
        ids.forEach((id, i) => {
          const existing = c.records.get(id);
          const metadata = op.metadatas?.[i] ?? {};
          if (kind === "add" && existing) return;
          if (kind === "update" && !existing) return;
          // Metadata merges per key; a null value removes the key.
          const merged: Record<string, unknown> = { ...(existing ?? {}), ...metadata };
          for (const [key, value] of Object.entries(merged)) if (value === null) delete merged[key];
          c.records.set(id, merged);
        });
        return op;
      }
      case "deleteIds": {
        const ids = this.idsFor(c, 5);
        for (const id of ids) c.records.delete(id);
        return { kind, coll: c.key, ids };
      }
      case "deleteWhere": {
        const group = this.rng.int(4);
        const byGroup = this.rng.chance(0.5);
        for (const [id, m] of c.records) {
          if (byGroup ? m.group === group : (m.group as number) >= 2 && m.tag === "red") c.records.delete(id);
        }
        return { kind, coll: c.key, where: byGroup ? { group } : { $and: [{ group: { $gte: 2 } }, { tag: "red" }] } };
      }
      case "rename": {
        const newName = `coll-${this.nameCounter++}`;
        c.name = newName;
        return { kind, coll: c.key, newName };
      }
      case "modifyMetadata":
        return { kind, coll: c.key, metadata: { purpose: this.rng.pick(["docs", "archive"]), revision: ++this.version } };
      case "dropCollection": {
        this.live.splice(this.live.indexOf(c), 1);
        this.droppedNames.push({ db: c.db, name: c.name });
        return { kind, coll: c.key, db: c.db, name: c.name };
      }
    }
  }
}

// ---------------------------------------------------------------- the concurrent workload

interface SharedCollection {
  key: string;
  db: DatabaseName;
  name: string;
  owner: number;
  dropped: boolean;
}

interface ModelRecord {
  embedding: number[];
  document: string;
  metadata: { writer: number; group: number; v: number };
}

/**
 * One writer of the concurrent variant. It writes records with ids of its own into any
 * live collection, and renames, drops and creates only collections it owns; so the
 * records it wrote are known exactly from its own acknowledged operations.
 */
class Writer {
  /** collection key -> id -> what this writer's acknowledged operations left there. */
  readonly model = new Map<string, Map<string, ModelRecord>>();
  readonly failures: Array<{ op: Op; error: string }> = [];
  acknowledged = 0;
  private counter = 0;
  private version = 0;

  constructor(
    readonly index: number,
    private readonly rng: Rng,
    private readonly target: Target,
    private readonly shared: SharedCollection[],
  ) {}

  private own(): SharedCollection[] {
    return this.shared.filter((c) => c.owner === this.index && !c.dropped);
  }

  private idsFor(c: SharedCollection, max: number): string[] {
    const out = new Set<string>();
    const n = 1 + this.rng.int(max);
    for (let i = 0; i < n; i++) out.add(`w${this.index}-${c.key}-${this.rng.int(20)}`);
    return [...out];
  }

  private record(): ModelRecord {
    return {
      embedding: this.rng.vector(),
      document: `w${this.index} doc ${this.rng.int(10_000)}`,
      metadata: { writer: this.index, group: this.rng.int(3), v: ++this.version },
    };
  }

  private nextOp(): Op {
    const kind = this.rng.weighted({ add: 34, upsert: 18, update: 14, deleteIds: 10, deleteWhere: 6, rename: 6, dropCollection: 4, createCollection: 8 });
    const own = this.own();
    if (kind === "createCollection" || (own.length === 0 && ["rename", "dropCollection"].includes(kind))) {
      const key = `w${this.index}c${this.counter++}`;
      return { kind: "createCollection", coll: key, db: this.rng.pick(DATABASES), name: `w${this.index}-coll-${this.counter++}` };
    }
    if (kind === "rename") return { kind, coll: this.rng.pick(own).key, newName: `w${this.index}-coll-${this.counter++}` };
    if (kind === "dropCollection") {
      const c = this.rng.pick(own);
      return { kind, coll: c.key, db: c.db, name: c.name };
    }
    const live = this.shared.filter((c) => !c.dropped);
    if (live.length === 0) return { kind: "createCollection", coll: `w${this.index}c${this.counter++}`, db: "default_database", name: `w${this.index}-coll-${this.counter++}` };
    const c = this.rng.pick(live);
    if (kind === "deleteIds") return { kind, coll: c.key, ids: this.idsFor(c, 4) };
    if (kind === "deleteWhere") return { kind, coll: c.key, where: { $and: [{ writer: this.index }, { group: this.rng.int(3) }] } };
    // Updates name only ids this writer knows exist. Chroma 1.0 itself keeps the embedding of
    // an update of a missing id and shows it after a later add of that id (seen with no
    // chroma-lb in between, under concurrent writes); the sequential variant covers such
    // updates against a lone server instead of against this model.
    const existing = [...(this.model.get(c.key)?.keys() ?? [])];
    const ids = kind === "update" && existing.length ? [...new Set(Array.from({ length: 1 + this.rng.int(6) }, () => this.rng.pick(existing)))] : this.idsFor(c, 6);
    const records = ids.map(() => this.record());
    const op: Op = { kind: kind === "update" && !existing.length ? "add" : kind, coll: c.key, ids };
    // Updates carry some fields; adds and upserts all of them, so the model stays exact.
    const fields = op.kind === "update" ? this.rng.pick([["embeddings"], ["metadatas"], ["embeddings", "documents"], ["embeddings", "documents", "metadatas"]]) : ["embeddings", "documents", "metadatas"];
    if (fields.includes("embeddings")) op.embeddings = records.map((r) => r.embedding);
    if (fields.includes("documents")) op.documents = records.map((r) => r.document);
    if (fields.includes("metadatas")) op.metadatas = records.map((r) => r.metadata);
    return op;
  }

  /** What an acknowledged operation did to this writer's records. */
  private applyToModel(op: Op) {
    const records = (key: string) => {
      let m = this.model.get(key);
      if (!m) this.model.set(key, (m = new Map()));
      return m;
    };
    switch (op.kind) {
      case "add":
      case "upsert":
      case "update": {
        const m = records(op.coll);
        op.ids.forEach((id, i) => {
          const existing = m.get(id);
          if (op.kind === "add" && existing) return; // Chroma ignores an add of an existing id.
          if (op.kind === "update" && !existing) return; // An update of a missing id is a no-op.
          const base = existing ?? { embedding: [], document: "", metadata: { writer: this.index, group: 0, v: 0 } };
          m.set(id, {
            embedding: op.embeddings?.[i] ?? base.embedding,
            document: op.documents?.[i] ?? base.document,
            metadata: (op.metadatas?.[i] as ModelRecord["metadata"] | undefined) ?? base.metadata,
          });
        });
        return;
      }
      case "deleteIds":
        for (const id of op.ids) records(op.coll).delete(id);
        return;
      case "deleteWhere": {
        const group = ((op.where.$and as Array<Record<string, number>>)[1]!).group;
        const m = records(op.coll);
        for (const [id, r] of m) if (r.metadata.group === group) m.delete(id);
        return;
      }
      case "rename":
        this.shared.find((c) => c.key === op.coll)!.name = op.newName;
        return;
      case "dropCollection":
        this.shared.find((c) => c.key === op.coll)!.dropped = true;
        return;
      case "createCollection":
        this.shared.push({ key: op.coll, db: op.db, name: op.name, owner: this.index, dropped: false });
        return;
      case "modifyMetadata":
        return;
    }
  }

  async run(operations: number) {
    for (let i = 0; i < operations; i++) {
      const op = this.nextOp();
      const outcome = await this.target.apply(op);
      if (outcome === "ok") {
        this.acknowledged += 1;
        this.applyToModel(op);
      } else {
        this.failures.push({ op, error: outcome });
      }
    }
  }
}

// ---------------------------------------------------------------- tests

describe("every write reaches every instance, in order", () => {
  test("a sequential random workload leaves both instances equal to a lone Chroma server given the same operations", async () => {
    const seed = seedFromEnv("sequential");
    const rng = prng(seed);
    await using servers = await startChromaServers(3);
    const [primary, replica, lone] = servers;
    await using lb = await startLbInProcess(lbEnv(primary!.url, replica!.url));
    const viaLb = new Target(lb.port);
    const reference = new Target(lone!.port);
    await viaLb.createDatabases();
    await reference.createDatabases();

    const workload = new SequentialWorkload(rng);
    const ops: Op[] = [...workload.initial()];
    const total = 260;
    while (ops.length < total) ops.push(workload.next());

    if (process.env.OPS_FILE) await Bun.write(process.env.OPS_FILE, ops.map((o) => JSON.stringify(o)).join("\n"));
    const outcomes: Array<{ step: number; kind: string; lb: string; lone: string }> = [];
    for (const [step, op] of ops.entries()) {
      // The middle third runs with the replica out, so it catches up on a backlog in merged batches.
      if (step === Math.floor(total / 3)) await setReplicaDown(lb, true);
      if (step === Math.floor((2 * total) / 3)) await setReplicaDown(lb, false);
      const [a, b] = [await viaLb.apply(op), await reference.apply(op)];
      if (a !== "ok" || b !== "ok") outcomes.push({ step, kind: op.kind, lb: a, lone: b });
    }
    // Every generated operation is valid: Chroma and chroma-lb accept all of them.
    expect(outcomes).toEqual([]);

    await converged(lb);
    const [onPrimary, onReplica, onLone] = await dumpInstances([primary!.url, replica!.url, lone!.url], { tenants: [TENANT] });
    console.log(`[sequential] ${ops.length} operations, ${recordCount(onLone!)} records left`);
    expect(recordCount(onLone!)).toBeGreaterThan(0);
    expect(Object.keys(onLone!).sort()).toEqual(DATABASES.map((d) => `${TENANT}/${d}`).sort());
    expect(onPrimary).toEqual(onLone!);
    expect(onReplica).toEqual(onLone!);
  }, 90_000);

  test("concurrent writers leave both instances equal, holding every acknowledged record that was not deleted after", async () => {
    const seed = seedFromEnv("concurrent");
    await using servers = await startChromaServers(2);
    const [primary, replica] = servers;
    await using lb = await startLbInProcess(lbEnv(primary!.url, replica!.url));
    const shared: SharedCollection[] = [];
    const writerCount = 4;
    const operationsPerWriter = 120;
    // One client set for all writers: a collection one writer creates is usable by every other.
    const target = new Target(lb.port);
    await target.createDatabases();
    const writers = Array.from({ length: writerCount }, (_, w) => new Writer(w, prng(seed + w), target, shared));
    // Each writer starts with one collection of its own in each database.
    for (const writer of writers) {
      for (const db of DATABASES) {
        const op: Op = { kind: "createCollection", coll: `w${writer.index}-init-${db}`, db, name: `w${writer.index}-${db}-start` };
        expect(await target.apply(op)).toBe("ok");
        shared.push({ key: op.coll, db, name: op.name, owner: writer.index, dropped: false });
      }
    }

    await Promise.all(writers.map((w) => w.run(operationsPerWriter)));

    // The only failures allowed: writes racing their collection's drop (404, never acknowledged).
    const unexpected = writers.flatMap((w) =>
      w.failures.filter((f) => !(f.error.startsWith("ChromaNotFoundError") && shared.find((c) => c.key === f.op.coll)?.dropped)),
    );
    expect(unexpected).toEqual([]);
    expect(writers.reduce((n, w) => n + w.acknowledged, 0)).toBeGreaterThan(writerCount * operationsPerWriter * 0.9);

    await converged(lb);
    const [onPrimary, onReplica] = await dumpInstances([primary!.url, replica!.url], { tenants: [TENANT] });
    expect(onReplica).toEqual(onPrimary!);

    // The exact expectation: live collections by name, each with the union of its writers' records.
    const expected: Record<string, Record<string, DumpedRecord[]>> = {};
    for (const db of DATABASES) expected[`${TENANT}/${db}`] = {};
    for (const c of shared.filter((s) => !s.dropped)) {
      const records: DumpedRecord[] = [];
      for (const w of writers) {
        for (const [id, r] of w.model.get(c.key) ?? []) records.push({ id, embedding: r.embedding, document: r.document, metadata: r.metadata });
      }
      expected[`${TENANT}/${c.db}`]![c.name] = records.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    }
    const actual: Record<string, Record<string, DumpedRecord[]>> = {};
    for (const [db, collections] of Object.entries(onPrimary!)) {
      actual[db] = Object.fromEntries(Object.entries(collections).map(([name, c]) => [name, c.records]));
    }
    expect(actual).toEqual(expected);
    expect(recordCount(onPrimary!)).toBeGreaterThan(50);
  }, 90_000);
});

describe("replay keeps the order of writes to the same ids", () => {
  /** Runs `writes` with the replica out (so it replays them as one backlog), then checks it. */
  async function replayedBacklog(writes: (c: Collection, client: ChromaClient) => Promise<void>) {
    await using servers = await startChromaServers(2);
    const [primary, replica] = servers;
    await using lb = await startLbInProcess(lbEnv(primary!.url, replica!.url));
    const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
    const collection = await client.createCollection({ name: "ordered", embeddingFunction: null });
    await converged(lb);
    await setReplicaDown(lb, true);
    await writes(collection, client);
    expect((await walStatus(lb)).pending_writes).toBeGreaterThan(0);
    await setReplicaDown(lb, false);
    await converged(lb);
    const [onPrimary, onReplica] = await dumpInstances([primary!.url, replica!.url]);
    return { onPrimary: onPrimary!, onReplica: onReplica! };
  }

  const v = (x: number) => [x, x / 2, -x, 0.125];

  test("an add followed by a delete of the same ids never brings the records back on the replica", async () => {
    const { onPrimary, onReplica } = await replayedBacklog(async (c) => {
      for (let round = 0; round < 25; round++) {
        const ids = [`gone-${round}-a`, `gone-${round}-b`];
        await c.add({ ids, embeddings: [v(0.1), v(0.2)], documents: ["a", "b"], metadatas: [{ round }, { round }] });
        if (round % 3 === 2) await c.delete({ where: { round } });
        else await c.delete({ ids });
      }
      // Deleted, then added again with other contents: the second add is what remains.
      await c.add({ ids: ["back"], embeddings: [v(0.5)], documents: ["first"] });
      await c.delete({ ids: ["back"] });
      await c.add({ ids: ["back"], embeddings: [v(0.75)], documents: ["second"] });
      await c.add({ ids: ["kept"], embeddings: [v(0.25)], documents: ["kept"] });
    });
    const expected = [
      { id: "back", embedding: v(0.75), document: "second", metadata: null },
      { id: "kept", embedding: v(0.25), document: "kept", metadata: null },
    ];
    expect(onPrimary["default_tenant/default_database"]!.ordered!.records).toEqual(expected);
    expect(onReplica).toEqual(onPrimary);
  }, 30_000);

  test("a collection renamed while the replica is out is not copied back under its old name when the replica returns", async () => {
    const { onPrimary, onReplica } = await replayedBacklog(async (c, client) => {
      const other = await client.createCollection({ name: "other", embeddingFunction: null });
      await other.add({ ids: ["o"], embeddings: [v(0.4)], documents: ["o0"] });
      await c.add({ ids: ["x"], embeddings: [v(0.1)], documents: ["x0"] });
      // Updates are replayed one request each: the replica is still behind on the renames
      // for a while after it returns, while chroma-lb looks for collections it does not know.
      for (let i = 1; i <= 60; i++) await c.update({ ids: ["x"], metadatas: [{ i }] });
      await c.modify({ name: "renamed" });
      await c.add({ ids: ["y"], embeddings: [v(0.2)], documents: ["y0"] });
      await other.modify({ name: "other-renamed" });
      // A new collection takes the old name of the first: its records must stay its own.
      const successor = await client.createCollection({ name: "ordered", embeddingFunction: null });
      await successor.add({ ids: ["z"], embeddings: [v(0.3)], documents: ["z0"] });
    });
    expect(onPrimary["default_tenant/default_database"]).toEqual({
      ordered: { metadata: null, dimension: 4, records: [{ id: "z", embedding: v(0.3), document: "z0", metadata: null }] },
      "other-renamed": { metadata: null, dimension: 4, records: [{ id: "o", embedding: v(0.4), document: "o0", metadata: null }] },
      renamed: {
        metadata: null,
        dimension: 4,
        records: [
          { id: "x", embedding: v(0.1), document: "x0", metadata: { i: 60 } },
          { id: "y", embedding: v(0.2), document: "y0", metadata: null },
        ],
      },
    });
    expect(onReplica).toEqual(onPrimary);
  }, 30_000);

  test("an update after an upsert of the same id is applied after it on the replica", async () => {
    const { onPrimary, onReplica } = await replayedBacklog(async (c) => {
      await c.upsert({ ids: ["a"], embeddings: [v(0.1)], documents: ["a1"], metadatas: [{ step: 1 }] });
      await c.upsert({ ids: ["b"], embeddings: [v(0.2)], documents: ["b1"], metadatas: [{ step: 1 }] });
      await c.update({ ids: ["a"], embeddings: [v(0.15)], documents: ["a2"], metadatas: [{ step: 2 }] });
      await c.upsert({ ids: ["c"], embeddings: [v(0.3)], documents: ["c1"] });
      await c.update({ ids: ["b"], embeddings: [v(0.4)] });
      await c.upsert({ ids: ["a"], metadatas: [{ extra: true }], embeddings: [v(0.5)] });
      await c.update({ ids: ["c"], metadatas: [{ step: 3 }] });
      await c.upsert({ ids: ["c"], documents: ["c3"], embeddings: [v(0.6)] });
      await c.update({ ids: ["b"], metadatas: [{ step: 4, note: "last" }] });
    });
    const expected = [
      { id: "a", embedding: v(0.5), document: "a2", metadata: { step: 2, extra: true } },
      { id: "b", embedding: v(0.4), document: "b1", metadata: { step: 4, note: "last" } },
      { id: "c", embedding: v(0.6), document: "c3", metadata: { step: 3 } },
    ];
    expect(onPrimary["default_tenant/default_database"]!.ordered!.records).toEqual(expected);
    expect(onReplica).toEqual(onPrimary);
  }, 30_000);
});
