/**
 * The clients of a chaos run: each one sends adds, upserts, updates, deletes, gets and
 * queries through chroma-lb, one at a time, churning on a few ids of its own in every
 * collection (Qdrant coach style: the same ids over and over), while all clients share the
 * collections. Every operation is recorded with what was sent and its outcome (Jepsen):
 * - ok: a 2xx answer (a 202 "logged" while no instance answers is an acknowledgement too);
 * - failed: a 4xx answer, or a connection refused (the request never reached chroma-lb);
 * - indeterminate: a timeout, a connection lost after sending, or a 5xx answer.
 * With several nodes each operation goes to a node drawn at random (a load balancer in
 * front of them), and a client sends the highest position it was answered as
 * `X-Chroma-LB-Min-Position` on its reads, as a client must to read its writes through
 * another node.
 *
 * Every request opens a connection of its own (`keepalive: false`): on a pooled connection
 * that the server closes mid-request (a node SIGKILLed), Bun's fetch retries the request on a
 * new connection and reports that one's ECONNREFUSED, so a refusal would not prove that
 * nothing was sent (seed 701998937 with LOG_STORE=postgres: a drop logged and replayed,
 * reported refused). On a connection of its own, an in-flight request fails ECONNRESET.
 */
import type { MetadataValue, RecordWrite, WriteKind } from "./model";
import { readRecords } from "./records";
import { derive, type Rng } from "./rng";

export type OpKind = WriteKind | "get" | "query" | "create" | "drop";
export type Outcome = "ok" | "failed" | "indeterminate";

/** One operation as sent and as answered. */
export interface OpRecord {
  /** `c<client>#<seq>`: names the operation in messages. */
  ref: string;
  client: number;
  kind: OpKind;
  collection: string;
  ids: string[];
  /** For writes: what each id receives, in the order of `ids`. */
  writes?: RecordWrite[];
  /** Embeddings sent as base64 float32 (the official client's encoding) instead of float arrays. */
  base64?: boolean;
  /** Milliseconds since the run started. */
  startMs: number;
  endMs: number;
  outcome: Outcome;
  status?: number;
  error?: string;
  /** For an ok get: the state key each requested id was read in ("absent" when not returned). */
  observed?: string[];
  /** A get answered 404: the collection did not exist (churn collections). */
  collectionMissing?: boolean;
  /** `X-Chroma-LB-Instance` of the answer. */
  servedBy?: string;
  /** With several nodes: the index of the node it was sent to. */
  node?: number;
  /** `X-Chroma-LB-Position` of the answer (a write's log position), and the position a read asked for. */
  position?: number;
  minPosition?: number;
  /** The answer said it came from a diverged copy (`X-Chroma-LB-Diverged: true`): not held to read-your-writes. */
  divergedRead?: boolean;
}

export interface WorkloadOptions {
  seed: number;
  /** One chroma-lb node, or several sharing one Postgres (each operation to one drawn at random). */
  lbUrls: readonly string[];
  collections: readonly string[];
  clients: number;
  /**
   * Collections that one more client (the churner, numbered `clients`) creates, drops and
   * writes to, alone (Qdrant coach's create/delete drill). None: no churner.
   */
  churnCollections: readonly string[];
  /** Ids each client churns on in each collection. */
  idsPerClient: number;
  /** Client-side bound on one request; past it the outcome is indeterminate. */
  requestTimeoutMs: number;
  /** `performance.now()` at the run's start: the zero of every time recorded. */
  t0: number;
}

export interface Workload {
  readonly history: OpRecord[];
  /** Asks every client to stop after its current operation, and waits for them. */
  stop(): Promise<void>;
}

const T = "/api/v2/tenants/default_tenant/databases/default_database";
export const dimension = 4;
const metadataKeys = ["a", "b", "c", "d"] as const;
/** Pause after a refused connection (chroma-lb restarting) or a write refused before logging (its store cut), so clients do not spin. */
const refusedPauseMs = 100;

export const idOf = (client: number, n: number) => `c${client}-r${n}`;
/** Ids the churner writes in each of its collections. */
export const churnIdsPerCollection = 6;
export const churnIdOf = (n: number) => `k-r${n}`;

/** Values exactly representable in float32 with a short decimal text (eighths in [-2, 2]). */
const embedding = (r: Rng) => Array.from({ length: dimension }, () => r.between(-16, 16) / 8);

function metadata(r: Rng): Record<string, MetadataValue> {
  const out: Record<string, MetadataValue> = {};
  for (const key of r.sample(metadataKeys, r.between(1, 3))) out[key] = r.chance(0.5) ? r.between(-1000, 1000) : `s${r.int(100)}`;
  return out;
}

const base64 = (values: number[]) => Buffer.from(new Float32Array(values).buffer).toString("base64");

type PlannedOp = Omit<OpRecord, "startMs" | "endMs" | "outcome"> & { method: "POST" | "DELETE"; path: string; body: unknown };

/**
 * What a client knows of its own records from its answers alone: present, absent, or
 * unknown (after an indeterminate write). Used only to steer the workload away from a
 * Chroma 1.0.5 bug (see {@link recordOp}); the checker never relies on it.
 */
type Knowledge = Map<string, "present" | "absent" | "unknown">;
const knowledgeKey = (collection: string, id: string) => `${collection}\u0000${id}`;

function learn(knowledge: Knowledge, op: OpRecord) {
  if (!op.writes || op.outcome === "failed") return;
  op.ids.forEach((id, i) => {
    const key = knowledgeKey(op.collection, id);
    const before = knowledge.get(key) ?? "absent";
    const kind = op.writes![i]!.kind;
    if (op.outcome === "ok") {
      if (kind === "add" || kind === "upsert") knowledge.set(key, "present");
      else if (kind === "delete") knowledge.set(key, "absent");
    } else if ((kind === "add" || kind === "upsert") && before !== "present") knowledge.set(key, "unknown");
    else if (kind === "delete" && before !== "absent") knowledge.set(key, "unknown");
  });
}

/** The next operation of one client: what it sends, and what each id receives. */
function nextOp(r: Rng, client: number, seq: number, opts: WorkloadOptions, knowledge: Knowledge): PlannedOp {
  const kind: OpKind = r.weighted({ add: 22, upsert: 22, update: 16, delete: 14, get: 14, query: 12 });
  const collection = r.pick(opts.collections);
  const ownIds = Array.from({ length: opts.idsPerClient }, (_, n) => idOf(client, n));
  return recordOp(r, kind, client, seq, collection, ownIds, (ids) => ids.every((id) => knowledge.get(knowledgeKey(collection, id)) === "present"));
}

/** The churner's next operation: record writes and gets on its own collections, and creating and dropping them. */
function nextChurnOp(r: Rng, client: number, seq: number, opts: WorkloadOptions): PlannedOp {
  const kind: OpKind = r.weighted({ add: 18, upsert: 18, update: 10, delete: 10, get: 16, create: 12, drop: 5 });
  const collection = r.pick(opts.churnCollections);
  const ref = `c${client}#${seq}`;
  if (kind === "create") {
    return { ref, client, kind, collection, ids: [], method: "POST", path: `${T}/collections`, body: { name: collection, configuration: {}, get_or_create: true } };
  }
  if (kind === "drop") return { ref, client, kind, collection, ids: [], method: "DELETE", path: `${T}/collections/${collection}`, body: null };
  const ids = Array.from({ length: churnIdsPerCollection }, (_, n) => churnIdOf(n));
  // Its collections are dropped and created again all the time: it never knows a record is there.
  return recordOp(r, kind, client, seq, collection, ids, () => false);
}

/**
 * A record operation on `ownIds`. An update carries an embedding only for ids the client
 * knows are present: Chroma 1.0.5 keeps the embedding of an update of a missing id and
 * gives it to a later add of that id (one server, no chroma-lb: in a new collection,
 * update {ids:[a], embeddings:[X]}, add {ids:[a], embeddings:[Y]}, get, delete of
 * another id, then get a answers X), which no model of Chroma's documented semantics
 * allows. The choices drawn from the generator are the same either way.
 */
function recordOp(r: Rng, kind: OpKind, client: number, seq: number, collection: string, ownIds: string[], mayUpdateEmbedding: (ids: string[]) => boolean): PlannedOp {
  const ids = r.sample(ownIds, r.between(1, 3));
  const ref = `c${client}#${seq}`;
  const path = `${T}/collections/${collection}/${kind}`;
  if (kind === "get") return { ref, client, kind, collection, ids, method: "POST", path, body: { ids, include: ["documents", "metadatas", "embeddings"] } };
  if (kind === "query") {
    return {
      ref,
      client,
      kind,
      collection,
      ids: [],
      method: "POST",
      path,
      body: { query_embeddings: [embedding(r)], n_results: r.between(1, 6), include: ["documents", "metadatas", "distances"] },
    };
  }
  if (kind === "delete") return { ref, client, kind, collection, ids, writes: ids.map(() => ({ kind: "delete" as const })), method: "POST", path, body: { ids } };

  // add and upsert send every field; update a non-empty subset, the same for every id.
  const drawn: ReadonlyArray<"document" | "embedding" | "metadata"> =
    kind === "update" ? r.sample(["document", "embedding", "metadata"] as const, r.between(1, 3)) : ["document", "embedding", "metadata"];
  const embeddings = drawn.includes("embedding") ? ids.map(() => embedding(r)) : [];
  const metadatas = drawn.includes("metadata") ? ids.map(() => metadata(r)) : [];
  const useBase64 = drawn.includes("embedding") && r.chance(0.3);
  let fields = drawn;
  if (kind === "update" && drawn.includes("embedding") && !mayUpdateEmbedding(ids)) {
    fields = drawn.filter((f) => f !== "embedding");
    if (fields.length === 0) fields = ["document"];
  }
  const writes: RecordWrite[] = ids.map((id, i) => ({
    kind: kind as WriteKind,
    ...(fields.includes("document") ? { document: `c${client} #${seq} ${kind} ${id}` } : {}),
    ...(fields.includes("embedding") ? { embedding: embeddings[i]! } : {}),
    ...(fields.includes("metadata") ? { metadata: metadatas[i]! } : {}),
  }));
  const base64Sent = useBase64 && fields.includes("embedding");
  const body: Record<string, unknown> = { ids };
  if (fields.includes("document")) body.documents = writes.map((w) => w.document);
  if (fields.includes("embedding")) body.embeddings = writes.map((w) => (base64Sent ? base64(w.embedding!) : w.embedding));
  if (fields.includes("metadata")) body.metadatas = writes.map((w) => w.metadata);
  return { ref, client, kind, collection, ids, writes, base64: base64Sent, method: "POST", path, body };
}

/** How every request of the workload is sent: on a connection of its own (see the header). */
export const requestInit = { keepalive: false } as const;

/** A fetch that threw: refused (never sent) fails; anything else may have taken effect. */
export function classifyError(error: unknown): { outcome: Outcome; error: string } {
  const e = error as { name?: string; code?: string; message?: string };
  // Refused: the request never reached chroma-lb, so it cannot have taken effect.
  if (e.code === "ECONNREFUSED" || e.code === "ConnectionRefused") return { outcome: "failed", error: "connection refused" };
  if (e.name === "TimeoutError") return { outcome: "indeterminate", error: "client timeout" };
  return { outcome: "indeterminate", error: `${e.code ?? e.name ?? "error"}: ${(e.message ?? String(error)).slice(0, 120)}` };
}

const outcomeOfStatus = (status: number): Outcome => (status >= 200 && status < 300 ? "ok" : status >= 400 && status < 500 ? "failed" : "indeterminate");

/**
 * The 503s chroma-lb answers before anything is logged (its log store cannot be reached, or
 * an earlier write of the collection is not recorded yet): the write cannot have taken
 * effect, so it failed. Any other 5xx may have.
 */
const refusedBeforeLogging = (status: number, text: string) =>
  status === 503 && (text.includes("nothing was kept") || text.includes("is not recorded in chroma-lb's log yet"));

/** Starts `opts.clients` clients; each runs until {@link Workload.stop}. */
export function startWorkload(opts: WorkloadOptions): Workload {
  const history: OpRecord[] = [];
  let stopping = false;
  const now = () => Math.round(performance.now() - opts.t0);

  const runClient = async (client: number, next: typeof nextOp) => {
    const r = derive(opts.seed, `client-${client}`);
    // Its own stream, so the operations drawn stay those of a one-node run.
    const nodes = derive(opts.seed, `client-${client}-nodes`);
    const several = opts.lbUrls.length > 1;
    const knowledge: Knowledge = new Map();
    let position = 0;
    for (let seq = 0; !stopping; seq++) {
      const { body, method, path, ...op } = next(r, client, seq, opts, knowledge);
      const node = several ? nodes.int(opts.lbUrls.length) : 0;
      const headers: Record<string, string> = body === null ? {} : { "content-type": "application/json" };
      if (several && (op.kind === "get" || op.kind === "query") && position > 0) headers["x-chroma-lb-min-position"] = String(position);
      const startMs = now();
      let record: OpRecord;
      try {
        const res = await fetch(`${opts.lbUrls[node]}${path}`, {
          method,
          headers,
          body: body === null ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(opts.requestTimeoutMs),
          ...requestInit,
        });
        const text = await res.text();
        const outcome = refusedBeforeLogging(res.status, text) ? "failed" : outcomeOfStatus(res.status);
        record = { ...op, startMs, endMs: now(), outcome, status: res.status, servedBy: res.headers.get("x-chroma-lb-instance") ?? undefined };
        const answered = Number(res.headers.get("x-chroma-lb-position"));
        if (res.headers.has("x-chroma-lb-position") && Number.isSafeInteger(answered)) record.position = answered;
        if (headers["x-chroma-lb-min-position"]) record.minPosition = Number(headers["x-chroma-lb-min-position"]);
        if (outcome === "ok" && Number.isSafeInteger(answered) && answered > position) position = answered;
        if (outcome !== "ok") record.error = text.slice(0, 200);
        if (res.headers.get("x-chroma-lb-diverged") === "true") record.divergedRead = true;
        if (op.kind === "get" && outcome === "ok") {
          try {
            const { records } = readRecords(text);
            record.observed = op.ids.map((id) => records.get(id) ?? "absent");
          } catch (error) {
            // The checker reports an ok get without observations.
            record.error = `unreadable get answer (${(error as Error).message}): ${text.slice(0, 200)}`;
          }
        }
        if (op.kind === "get" && res.status === 404 && text.includes("NotFoundError")) record.collectionMissing = true;
      } catch (error) {
        record = { ...op, startMs, endMs: now(), ...classifyError(error) };
      }
      if (several) record.node = node;
      history.push(record);
      learn(knowledge, record);
      if (record.error === "connection refused" || (record.status === 503 && record.outcome === "failed")) await Bun.sleep(refusedPauseMs);
    }
  };

  const running = Promise.all([
    ...Array.from({ length: opts.clients }, (_, k) => runClient(k, nextOp)),
    ...(opts.churnCollections.length ? [runClient(opts.clients, nextChurnOp)] : []),
  ]);
  return {
    history,
    async stop() {
      stopping = true;
      await running;
    },
  };
}
