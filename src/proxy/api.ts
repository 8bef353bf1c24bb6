/**
 * The semantics of Chroma's v2 API through chroma-lb: which instance serves a call, how
 * writes go through the log, and how collection ids are rewritten. Routes (routes.ts)
 * only parse paths and hand over here.
 */
import { databasePath } from "../chroma/paths";
import type { Config } from "../config";
import type { Adoption } from "../collections/adoption";
import type { CollectionRecord, CollectionStore } from "../collections/store";
import type { Instance, InstanceRegistry } from "../instances/registry";
import type { Logger } from "../observability/log";
import { applyEntries, type ApplyOutcome } from "../replay/apply";
import { takeBatch } from "../replay/batch";
import { Replayer } from "../replay/replayer";
import { readCandidates, writeCandidates, type InstanceView } from "../routing/select";
import { KeyedMutex } from "../util/mutex";
import { META_PARTITION, type Entry, type NewEntry, type WriteAheadLog } from "../wal/log";
import { LbError, badRequest, conflict, errorResponse, forbidden, notFound, notImplemented, unavailable } from "../errors";
import { ACCEPTED_HEADER, INSTANCE_HEADER, MIN_POSITION_HEADER, POSITION_HEADER, forwardHeaders, responseHeaders } from "./headers";
import { validateRecordRead, validateRecordWrite } from "./validate";

export interface ApiDeps {
  config: Config;
  log: Logger;
  wal: WriteAheadLog;
  collections: CollectionStore;
  registry: InstanceRegistry;
  replayer: Replayer;
  adoption: Adoption;
  /** Shared with adoption's copies: one writer per collection at a time. */
  writeLocks: KeyedMutex;
}

export type RecordWriteOp = "add" | "upsert" | "update" | "delete";
export type RecordReadOp = "get" | "query" | "count";

interface QueuedWrite {
  entry: NewEntry;
  /** The client's headers, already stripped of hop-by-hop ones. */
  headers: Headers;
  resolve: (result: WriteResult) => void;
  reject: (error: unknown) => void;
}

type WriteResult =
  | { kind: "applied"; seq: number; instance: Instance; outcome: Extract<ApplyOutcome, { kind: "applied" }> }
  | { kind: "answered"; seq: number; instance: Instance; status: number; headers: Headers | null; body: Uint8Array | null }
  | { kind: "accepted"; seq: number }
  | { kind: "unavailable"; reason: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const base = databasePath;

/** Chroma's own rule for collection names. */
const collectionNamePattern = /^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$/;

export function parseJsonBody(bytes: Uint8Array, contentType: string | null): Record<string, unknown> {
  if (!contentType || !contentType.toLowerCase().includes("application/json")) {
    throw new LbError(415, "InvalidArgumentError", "Expected request with `Content-Type: application/json`");
  }
  let json: unknown;
  try {
    json = JSON.parse(decoder.decode(bytes));
  } catch (error) {
    throw badRequest(`Failed to parse the request body as JSON: ${(error as Error).message}`);
  }
  if (!json || typeof json !== "object" || Array.isArray(json)) throw new LbError(422, "ChromaError", "Failed to deserialize the JSON body: expected an object");
  return json as Record<string, unknown>;
}

export class ChromaApi {
  /** Collection, tenant and database changes run one at a time (names must stay unique). */
  private readonly ddl = new KeyedMutex();

  constructor(private readonly deps: ApiDeps) {}

  private get config() {
    return this.deps.config;
  }

  /** Log entries appended and not yet answered: an instance owing no more than these is caught up. */
  private inFlightWrites = 0;
  /** Writes waiting for their partition, in arrival order (see logAndApply). */
  private readonly writeQueues = new Map<string, QueuedWrite[]>();

  views(): InstanceView[] {
    return this.deps.registry.all.map((i) => {
      const pendingEntries = this.deps.wal.pendingCount(i.name);
      this.deps.registry.updateCatchingUp(i, pendingEntries, this.inFlightWrites);
      return { name: i.name, priority: i.priority, serving: i.serving, pendingEntries, catchingUp: i.catchingUp };
    });
  }

  private deadline(): number {
    return Date.now() + this.config.requestTimeoutMs;
  }

  /**
   * A request that got no answer: when the instance itself no longer answers its heartbeat,
   * it is marked down and the caller may try another; when it does, the request itself made
   * the instance drop it (Chroma does that for some inputs), which never counts against it.
   */
  private async transportFailure(instance: Instance, failure: "unreachable" | "uncertain", reason: string): Promise<"instance" | "request"> {
    if (failure === "uncertain") {
      const probe = await instance.client.request({
        method: "GET",
        path: "/api/v2/heartbeat",
        timeoutMs: this.config.healthCheckTimeoutMs,
      });
      if (probe.ok && probe.status === 200) {
        this.deps.log.warn("instance dropped one request but answers its heartbeat", { instance: instance.name, reason });
        return "request";
      }
    }
    this.deps.registry.reportTransportFailure(instance, reason);
    return "instance";
  }

  private droppedByInstance(instance: Instance, reason: string): Response {
    return errorResponse(
      new LbError(502, "BadGateway", `Instance ${instance.name} dropped the connection for this request (${reason}); check the request's parameters`),
    );
  }

  private allDown(what: string): LbError {
    const names = this.deps.registry.all.map((i) => `${i.name}: ${i.maintenance ? "maintenance" : i.healthy ? "behind" : "down"}`);
    return unavailable(`No Chroma instance can serve ${what} (${names.join(", ")}). Retry shortly; GET /status shows each instance.`);
  }

  unsupported(message: string): Response {
    return errorResponse(notImplemented(message));
  }

  // ---------------------------------------------------------------- reads

  /** Heartbeat, version, pre-flight and other instance-level reads: any serving instance answers. */
  async passthrough(request: Request, path: string): Promise<Response> {
    const candidates = readCandidates(this.views(), () => true, this.config.readReplicaRatio);
    for (const candidate of candidates) {
      const instance = this.deps.registry.get(candidate.name)!;
      const result = await instance.client.stream({
        method: request.method,
        path,
        headers: forwardHeaders(request.headers),
        timeoutMs: this.config.requestTimeoutMs,
        signal: request.signal,
      });
      if (!result.ok) {
        if ((await this.transportFailure(instance, result.failure, result.reason)) === "request") return this.droppedByInstance(instance, result.reason);
        continue;
      }
      this.deps.registry.reportAnswered(instance, result.response.status);
      return this.streamed(result.response, instance);
    }
    return errorResponse(this.allDown("this request"));
  }

  private streamed(response: Response, instance: Instance): Response {
    return new Response(response.body, {
      status: response.status,
      headers: responseHeaders(response.headers, { [INSTANCE_HEADER]: instance.name }),
    });
  }

  /**
   * Reads about tenants, databases and collections (not records): served by an instance
   * that has applied every acknowledged collection, tenant and database change.
   */
  async catalogRead(
    request: Request,
    pathFor: (instance: Instance) => string,
    rewrite: "collection" | "collections" | null,
    body: Uint8Array | null = null,
  ): Promise<Response> {
    const candidates = readCandidates(this.views(), (name) => this.deps.wal.isCatalogCaughtUp(name), this.config.readReplicaRatio);
    for (const candidate of candidates) {
      const instance = this.deps.registry.get(candidate.name)!;
      if (!candidate.fresh) {
        const caughtUp = await this.deps.replayer.drainCatalog(instance, { deadlineMs: this.deadline(), urgent: true });
        if (!caughtUp.ok) continue;
      }
      const result = await instance.client.request({
        method: request.method,
        path: pathFor(instance),
        headers: forwardHeaders(request.headers),
        body,
        timeoutMs: this.config.requestTimeoutMs,
        signal: request.signal,
      });
      if (!result.ok) {
        if ((await this.transportFailure(instance, result.failure, result.reason)) === "request") return this.droppedByInstance(instance, result.reason);
        continue;
      }
      this.deps.registry.reportAnswered(instance, result.status);
      let out = result.body;
      if (rewrite && result.status === 200) out = this.rewriteCollections(out, rewrite);
      return new Response(out, { status: result.status, headers: responseHeaders(result.headers, { [INSTANCE_HEADER]: instance.name }) });
    }
    return errorResponse(this.allDown("this read"));
  }

  /** Replaces each instance UUID in collection objects with chroma-lb's collection id. */
  private rewriteCollections(body: Uint8Array, shape: "collection" | "collections"): Uint8Array {
    let json: unknown;
    try {
      json = JSON.parse(decoder.decode(body));
    } catch {
      return body;
    }
    const fix = (c: { id?: unknown }) => {
      if (c && typeof c.id === "string") c.id = this.deps.collections.logicalIdFor(c.id);
    };
    if (shape === "collection" && json && typeof json === "object") fix(json as { id?: unknown });
    if (shape === "collections" && Array.isArray(json)) json.forEach(fix);
    return encoder.encode(JSON.stringify(json));
  }

  /** Finds a collection by id, instance UUID or name; unknown names trigger one adoption pass. */
  async resolve(tenant: string, database: string, ref: string): Promise<CollectionRecord> {
    const found = this.deps.collections.resolve(tenant, database, ref);
    if (found) return found;
    await this.deps.adoption.adoptSoon(tenant);
    const adopted = this.deps.collections.resolve(tenant, database, ref);
    if (adopted) return adopted;
    throw notFound(`Collection [${ref}] does not exists.`);
  }

  /** Record reads (get, query, count): only from an instance that has applied what the caller needs. */
  async recordRead(request: Request, tenant: string, database: string, ref: string, op: RecordReadOp, body: Uint8Array | null): Promise<Response> {
    if (op !== "count") validateRecordRead(op, parseJsonBody(body ?? new Uint8Array(), request.headers.get("content-type")));
    const record = await this.resolve(tenant, database, ref);
    const minPosition = parseMinPosition(request.headers.get(MIN_POSITION_HEADER));
    const query = new URL(request.url).search;
    const candidates = readCandidates(
      this.views(),
      (name) => this.deps.wal.isCaughtUp(name, record.id, minPosition),
      this.config.readReplicaRatio,
    );
    for (const candidate of candidates) {
      const instance = this.deps.registry.get(candidate.name)!;
      if (!candidate.fresh) {
        const caughtUp = await this.deps.replayer.drain(instance, record.id, { uptoSeq: minPosition, deadlineMs: this.deadline(), urgent: true });
        if (!caughtUp.ok || !this.deps.wal.isCaughtUp(instance.name, record.id, minPosition)) continue;
      }
      const uuid = record.instanceUuids.get(instance.name);
      if (!uuid) continue;
      const result = await instance.client.stream({
        method: request.method,
        path: `${base(tenant, database)}/collections/${uuid}/${op}${query}`,
        headers: forwardHeaders(request.headers),
        body,
        timeoutMs: this.config.requestTimeoutMs,
        signal: request.signal,
      });
      if (!result.ok) {
        if ((await this.transportFailure(instance, result.failure, result.reason)) === "request") return this.droppedByInstance(instance, result.reason);
        continue;
      }
      this.deps.registry.reportAnswered(instance, result.response.status);
      return this.streamed(result.response, instance);
    }
    return errorResponse(this.allDown(`collection ${record.name}`));
  }

  async getCollection(request: Request, tenant: string, database: string, ref: string): Promise<Response> {
    const record = this.deps.collections.resolve(tenant, database, ref) ?? (await this.resolve(tenant, database, ref).catch(() => undefined));
    const name = record?.name ?? ref;
    return this.catalogRead(request, () => `${base(tenant, database)}/collections/${encodeURIComponent(name)}`, "collection");
  }

  /**
   * `GET .../collections`. Chroma sorts the list by its own UUIDs, which differ per instance,
   * so pages served by different instances would overlap or skip collections. chroma-lb asks
   * for the whole list, sorts it by the ids clients see (as Chroma sorts by its ids) and cuts
   * the page itself. A malformed limit or offset is passed on for Chroma to refuse.
   */
  async listCollections(request: Request, tenant: string, database: string): Promise<Response> {
    const params = new URL(request.url).searchParams;
    const page = (field: string) => (params.has(field) ? params.get(field)! : null);
    const [limit, offset] = [page("limit"), page("offset")];
    if ([limit, offset].some((v) => v !== null && !/^\d+$/.test(v))) {
      return this.catalogRead(request, () => `${base(tenant, database)}/collections${new URL(request.url).search}`, "collections");
    }
    const response = await this.catalogRead(request, () => `${base(tenant, database)}/collections`, "collections");
    if (response.status !== 200) return response;
    const list = (await response.json()) as Array<{ id: string }>;
    list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const start = offset === null ? 0 : Number(offset);
    const paged = list.slice(start, limit === null ? undefined : start + Number(limit));
    return new Response(JSON.stringify(paged), { status: 200, headers: response.headers });
  }

  /** `GET .../collections/by-id/{id}`: answered from the mappings (Chroma 1.0 has no such route). */
  async getCollectionById(request: Request, tenant: string, database: string, id: string): Promise<Response> {
    const record = await this.resolve(tenant, database, id);
    return this.catalogRead(request, () => `${base(tenant, database)}/collections/${encodeURIComponent(record.name)}`, "collection");
  }

  // ---------------------------------------------------------------- writes

  /**
   * Queues a write of one partition. Writes of one partition are applied one group at a
   * time, in arrival order, so every instance sees them in log order.
   */
  private logAndApply(request: Request, entry: NewEntry): Promise<WriteResult> {
    this.inFlightWrites += 1;
    return new Promise<WriteResult>((resolve, reject) => {
      const item: QueuedWrite = { entry, headers: forwardHeaders(request.headers), resolve, reject };
      const queue = this.writeQueues.get(entry.partition);
      if (queue) {
        queue.push(item);
        return;
      }
      const fresh = [item];
      this.writeQueues.set(entry.partition, fresh);
      void this.deps.writeLocks.run(entry.partition, () => this.drainWrites(entry.partition, fresh));
    }).finally(() => {
      this.inFlightWrites -= 1;
    });
  }

  private async drainWrites(partition: string, queue: QueuedWrite[]) {
    try {
      while (queue.length > 0) {
        const { group, body } = this.takeGroup(queue);
        try {
          const results = await this.appendAndApply(group, body);
          group.forEach((item, i) => item.resolve(results[i]!));
        } catch (error) {
          for (const item of group) item.reject(error);
        }
      }
    } finally {
      // Runs right after the queue was seen empty, with no await between: a later write starts a new queue.
      this.writeQueues.delete(partition);
    }
  }

  /**
   * Takes the next write, merged with the adds (or upserts) queued right behind it when the
   * merge gives the same result as applying them one by one (see replay/batch.ts). Several
   * clients ingesting into one collection then cost one request to the write target.
   */
  private takeGroup(queue: QueuedWrite[]): { group: QueuedWrite[]; body: Uint8Array | null } {
    const first = queue.shift()!;
    if ((first.entry.op !== "add" && first.entry.op !== "upsert") || queue.length === 0) return { group: [first], body: first.entry.body };
    const sameCaller = (item: QueuedWrite) =>
      ["authorization", "x-chroma-token"].every((h) => item.headers.get(h) === first.headers.get(h));
    const candidates = [first];
    for (const item of queue) {
      if (candidates.length >= this.config.walMaxBatchSize || !sameCaller(item)) break;
      candidates.push(item);
    }
    const batch = takeBatch(
      candidates.map((item) => ({ op: item.entry.op, body: item.entry.body, bodyBytes: item.entry.body?.byteLength ?? 0 })),
      {
        entriesMax: this.config.walMaxBatchSize,
        recordsMax: Math.min(...this.deps.registry.all.map((i) => i.maxBatchSize)),
        bytesMax: this.config.walMaxBatchBytes,
      },
    );
    const group = [first, ...queue.splice(0, batch.entries.length - 1)];
    return { group, body: batch.body };
  }

  /**
   * The write path: append the group to the log (durable, one commit), then apply it on the
   * first write target that can take it in order, failing over when a target never got the
   * request or gave no answer. Chroma's refusal (4xx/5xx) is answered as is and those entries
   * are not replayed; a refused merged group is split and its writes applied one by one.
   */
  private async appendAndApply(group: QueuedWrite[], body: Uint8Array | null): Promise<WriteResult[]> {
    const seqs = await Promise.all(group.map((item) => this.deps.wal.append(item.entry)));
    const entries: Entry[] = group.map((item, i) => ({
      ...item.entry,
      seq: seqs[i]!,
      createdAtMs: Date.now(),
      state: "new",
      appliedBy: null,
      bodyBytes: item.entry.body?.byteLength ?? 0,
    }));
    const merged = await this.applyLogged(entries, body, group[0]!.headers);
    if (merged !== "split") return merged;
    const results: WriteResult[] = [];
    for (let i = 0; i < entries.length; i++) {
      const single = await this.applyLogged([entries[i]!], entries[i]!.body, group[i]!.headers);
      results.push(...(single === "split" ? [] : single));
    }
    return results;
  }

  /** Applies logged entries (one, or a merged group with `body`); one result per entry, or "split". */
  private async applyLogged(entries: Entry[], body: Uint8Array | null, headers: Headers): Promise<WriteResult[] | "split"> {
    const first = entries[0]!;
    const seqs = entries.map((e) => e.seq);
    const tried = new Set<string>();
    for (let round = 0; round < this.deps.registry.all.length; round++) {
      const candidate = writeCandidates(this.views()).find((c) => !tried.has(c.name));
      if (!candidate) break;
      tried.add(candidate.name);
      const instance = this.deps.registry.get(candidate.name)!;
      const ready = await this.deps.replayer.prepareFor(instance, first, { deadlineMs: this.deadline(), urgent: true });
      if (!ready.ok) {
        this.deps.log.warn("write target could not catch up; trying the next", { instance: instance.name, reason: ready.reason });
        continue;
      }
      const outcome = await this.deps.replayer.locks.run(Replayer.lockKey(instance.name, first.partition), () =>
        applyEntries(instance, entries, body, this.deps.collections, { headers, timeoutMs: this.config.requestTimeoutMs, replay: false }),
      );
      if (outcome.kind === "transport") {
        this.deps.registry.reportFailedRequest(instance);
        const blame = await this.transportFailure(instance, outcome.failure, outcome.reason);
        if (blame === "instance") continue;
        if (entries.length > 1) return "split";
        // The instance is alive but dropped this write: it is most likely malformed for Chroma.
        if (this.deps.wal.appliedNowhere(first.seq)) this.deps.wal.reject(first.seq);
        const message = `Instance ${instance.name} dropped the connection for this write (${outcome.reason}); check the request's parameters`;
        return [{ kind: "answered", seq: first.seq, instance, status: 502, headers: null, body: encoder.encode(JSON.stringify({ error: "BadGateway", message })) }];
      }
      if (outcome.kind === "failed" && outcome.status === 0) {
        // chroma-lb cannot address the collection on this instance yet; another may take it.
        this.deps.log.warn("write target cannot take this write; trying the next", { instance: instance.name, reason: outcome.reason });
        continue;
      }
      this.deps.registry.reportAnswered(instance, outcome.kind === "failed" ? 500 : outcome.status);
      if (outcome.kind === "applied") {
        this.deps.wal.completeOnTarget(instance.name, first.partition, seqs);
        return entries.map((entry) => ({ kind: "applied", seq: entry.seq, instance, outcome }));
      }
      if (entries.length > 1) return "split";
      // Refused or failed on the write target: nothing was acknowledged, so no instance gets it.
      this.deps.wal.reject(first.seq);
      return [{ kind: "answered", seq: first.seq, instance, status: outcome.status, headers: outcome.headers, body: outcome.body }];
    }
    if (this.config.acceptWritesWhenAllDown) {
      for (const seq of seqs) this.deps.wal.markReady(seq, null);
      this.deps.log.warn("no instance could take a write; kept in the log", { positions: seqs, partition: first.partition });
      return entries.map((entry) => ({ kind: "accepted", seq: entry.seq }));
    }
    for (const seq of seqs) this.deps.wal.reject(seq);
    const reason = this.allDown("writes").message;
    return entries.map(() => ({ kind: "unavailable", reason }));
  }

  private writeResponse(result: WriteResult, acceptedBody: unknown = {}): Response {
    switch (result.kind) {
      case "applied":
        return new Response(result.outcome.body, {
          status: result.outcome.status,
          headers: responseHeaders(result.outcome.headers, { [POSITION_HEADER]: String(result.seq), [INSTANCE_HEADER]: result.instance.name }),
        });
      case "answered":
        return new Response(result.body, {
          status: result.status,
          headers: responseHeaders(result.headers, { "content-type": "application/json", [INSTANCE_HEADER]: result.instance.name }),
        });
      case "accepted":
        return new Response(JSON.stringify(acceptedBody), {
          status: 202,
          headers: { "content-type": "application/json", [POSITION_HEADER]: String(result.seq), [ACCEPTED_HEADER]: "logged" },
        });
      case "unavailable":
        return errorResponse(unavailable(result.reason));
    }
  }

  async recordWrite(request: Request, tenant: string, database: string, ref: string, op: RecordWriteOp, body: Uint8Array): Promise<Response> {
    validateRecordWrite(op, parseJsonBody(body, request.headers.get("content-type")));
    const record = await this.resolve(tenant, database, ref);
    const result = await this.logAndApply(request, {
      partition: record.id,
      kind: "records",
      op,
      tenant,
      database,
      collectionId: record.id,
      name: null,
      body,
    });
    return this.writeResponse(result);
  }

  async createCollection(request: Request, tenant: string, database: string, body: Uint8Array): Promise<Response> {
    const json = parseJsonBody(body, request.headers.get("content-type"));
    const name = json.name;
    if (typeof name !== "string") throw new LbError(422, "ChromaError", "Failed to deserialize the JSON body into the target type: missing field `name`");
    if (!collectionNamePattern.test(name)) {
      throw badRequest(
        `Expected a name containing 3-512 characters from [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: ${name}`,
      );
    }
    return this.ddl.run("ddl", async () => {
      const existing = this.deps.collections.byName(tenant, database, name);
      if (existing) {
        if (json.get_or_create === true) {
          // The existing collection is read with a GET: forwarding the client's POST would ask
          // the instance for a route it does not have (405).
          const read = new Request(request.url, { method: "GET", headers: request.headers, signal: request.signal });
          return this.getCollection(read, tenant, database, existing.id);
        }
        // Chroma's own answer to a duplicate create, error kind included, so clients that read it see no difference.
        throw new LbError(409, "ChromaError", `Collection [${name}] already exists`);
      }
      const id = crypto.randomUUID();
      const record = this.deps.collections.create(id, tenant, database, name);
      const result = await this.logAndApply(request, {
        partition: id,
        kind: "collection",
        op: "create_collection",
        tenant,
        database,
        collectionId: id,
        name,
        body,
      });
      if (result.kind === "applied") {
        return this.writeResponse({ ...result, outcome: { ...result.outcome, body: this.rewriteCollections(result.outcome.body, "collection") } });
      }
      if (result.kind === "accepted") {
        return this.writeResponse(result, {
          id,
          name,
          configuration_json: json.configuration ?? {},
          metadata: json.metadata ?? null,
          dimension: null,
          tenant,
          database,
          log_position: 0,
          version: 0,
        });
      }
      this.deps.collections.markDeleted(record.id);
      return this.writeResponse(result);
    });
  }

  async modifyCollection(request: Request, tenant: string, database: string, ref: string, body: Uint8Array): Promise<Response> {
    const json = parseJsonBody(body, request.headers.get("content-type"));
    return this.ddl.run("ddl", async () => {
      const record = await this.resolve(tenant, database, ref);
      const newName = typeof json.new_name === "string" ? json.new_name : null;
      if (newName !== null && newName !== record.name) {
        if (!collectionNamePattern.test(newName)) {
          throw badRequest(`Expected a name containing 3-512 characters from [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: ${newName}`);
        }
        if (this.config.protectedCollections.includes(record.name)) {
          throw forbidden(`Collection [${record.name}] is protected (PROTECTED_COLLECTIONS) and cannot be renamed`);
        }
        if (this.deps.collections.byName(tenant, database, newName)) throw conflict(`Collection [${newName}] already exists`);
      }
      const result = await this.logAndApply(request, {
        partition: record.id,
        kind: "collection",
        op: "modify_collection",
        tenant,
        database,
        collectionId: record.id,
        name: record.name,
        body,
      });
      if ((result.kind === "applied" || result.kind === "accepted") && newName !== null) this.deps.collections.rename(record.id, newName);
      return this.writeResponse(result);
    });
  }

  async deleteCollection(request: Request, tenant: string, database: string, ref: string): Promise<Response> {
    return this.ddl.run("ddl", async () => {
      const record = await this.resolve(tenant, database, ref);
      if (this.config.protectedCollections.includes(record.name)) {
        throw forbidden(`Collection [${record.name}] is protected (PROTECTED_COLLECTIONS) and cannot be deleted through chroma-lb`);
      }
      const result = await this.logAndApply(request, {
        partition: record.id,
        kind: "collection",
        op: "delete_collection",
        tenant,
        database,
        collectionId: record.id,
        name: record.name,
        body: null,
      });
      if (result.kind === "applied" || result.kind === "accepted") this.deps.collections.markDeleted(record.id);
      return this.writeResponse(result);
    });
  }

  /** Tenant and database changes: the `meta` partition, applied after everything before them. */
  async metaWrite(
    request: Request,
    op: "create_tenant" | "update_tenant" | "create_database" | "delete_database",
    tenant: string,
    database: string,
    body: Uint8Array | null,
  ): Promise<Response> {
    if (body) parseJsonBody(body, request.headers.get("content-type"));
    return this.ddl.run("ddl", async () => {
      const result = await this.logAndApply(request, {
        partition: META_PARTITION,
        kind: "meta",
        op,
        tenant,
        database,
        collectionId: null,
        name: null,
        body,
      });
      if (op === "delete_database" && (result.kind === "applied" || result.kind === "accepted")) {
        for (const record of this.deps.collections.list()) {
          if (record.tenant === tenant && record.database === database) this.deps.collections.markDeleted(record.id);
        }
      }
      return this.writeResponse(result);
    });
  }

  /**
   * Resets every instance, then chroma-lb's own log and mappings. Refused unless
   * ALLOW_RESET=true, and while any instance is not serving (it would come back with data).
   */
  async reset(request: Request): Promise<Response> {
    if (!this.config.allowReset) throw forbidden("Reset is disabled by config");
    return this.ddl.run("ddl", async () => {
      const notServing = this.deps.registry.all.filter((i) => !i.serving);
      if (notServing.length) {
        throw unavailable(`Reset needs every instance; not serving: ${notServing.map((i) => i.name).join(", ")}`);
      }
      let last: Response | null = null;
      for (const instance of this.deps.registry.all) {
        const result = await instance.client.request({
          method: "POST",
          path: "/api/v2/reset",
          headers: forwardHeaders(request.headers),
          timeoutMs: this.config.requestTimeoutMs,
        });
        if (!result.ok) throw unavailable(`Reset of instance ${instance.name} failed: ${result.reason}`);
        if (result.status >= 300) {
          return new Response(result.body, { status: result.status, headers: responseHeaders(result.headers, { [INSTANCE_HEADER]: instance.name }) });
        }
        last = new Response(result.body, { status: result.status, headers: responseHeaders(result.headers) });
      }
      this.deps.wal.clear();
      this.deps.collections.markAllDeleted();
      this.deps.log.warn("reset: every instance and chroma-lb's log and mappings were cleared");
      return last ?? new Response("true", { headers: { "content-type": "application/json" } });
    });
  }
}

function parseMinPosition(raw: string | null): number | undefined {
  if (raw === null) return undefined;
  // Digits only: Number() reads "" as 0 and "1e3" as 1000, which would silently require less.
  const value = /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value)) throw badRequest(`${MIN_POSITION_HEADER} must be a log position (a whole number), got ${raw}`);
  return value;
}
