/**
 * The semantics of Chroma's v2 API through chroma-lb: which instance serves a read, how
 * collection ids are rewritten, and the checks made before a write is handed to the write
 * path (writes/pipeline.ts). Routes (routes.ts) only parse paths and hand over here.
 */
import { databasePath } from "../chroma/paths";
import { anonymous, scopeCovers, type Principal } from "../auth/tokens";
import { Protection } from "../collections/protection";
import type { CollectionRecord } from "../collections/store";
import { blameTransportFailure, instanceViews, noInstanceFor } from "../instances/views";
import type { Instance } from "../instances/registry";
import { readCandidates, type InstanceView } from "../routing/select";
import type { Services } from "../services";
import { KeyedMutex } from "../util/mutex";
import { META_PARTITION, type NewEntry } from "../wal/log";
import type { WriteResult } from "../writes/pipeline";
import { StorageFullError } from "../wal/storage";
import { LbError, OutcomeUnknownError, badRequest, conflict, errorResponse, forbidden, notFound, notImplemented, unavailable } from "../errors";
import { ACCEPTED_HEADER, DIVERGED_HEADER, INSTANCE_HEADER, MIN_POSITION_HEADER, POSITION_HEADER, forwardHeaders, responseHeaders, withoutCredentials, withoutSecrets } from "./headers";
import { splitObject } from "../replay/raw-json";
import { joinArray, rewriteCollection, rewriteCollectionList } from "./rewrite";
import { parsedView, rawView, validateRecordRead, validateRecordWrite, type BodyView } from "./validate";

export type ApiDeps = Pick<
  Services,
  "config" | "log" | "wal" | "collections" | "registry" | "replayer" | "adoption" | "writes" | "instanceAnswers" | "access"
> &
  Partial<Pick<Services, "cluster">>;

export type RecordWriteOp = "add" | "upsert" | "update" | "delete";
export type RecordReadOp = "get" | "query" | "count";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const base = databasePath;

/** Chroma's own rule for collection names. */
const collectionNamePattern = /^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$/;
/** Chroma 1.0.5's own message for a name that breaks the rule, word for word. */
const invalidName = (name: string) =>
  `Validation error: name: Expected a name containing 3-512 characters from [a-zA-Z0-9._-], starting and ending with a character in [a-zA-Z0-9]. Got: ${name}`;

/** One read: where it may go and how to send it. */
interface ReadPlan {
  /** What the read is for, named in the 503 when no instance can serve it. */
  what: string;
  candidates: Array<InstanceView & { fresh: boolean }>;
  /** Brings a lagging candidate up to date first; false skips it. */
  catchUp?: (instance: Instance) => Promise<boolean>;
  /** Path and query on the instance; null skips the instance. */
  path: (instance: Instance) => string | null;
  body?: Uint8Array | null;
  /** Rewrites a 200 answer (collection ids). */
  rewrite?: (body: Uint8Array, headers: Headers) => Uint8Array | Promise<Uint8Array>;
  /** Extra headers on the answer. */
  headers?: (instance: Instance) => Record<string, string>;
  /** The answer when no instance could serve, instead of the 503; null keeps the 503. */
  whenNone?: () => Response | null;
  /**
   * A 404 from this instance means it lost the copy (a record read of a collection chroma-lb
   * holds mapped there): the copy is marked for repair and another instance is tried.
   */
  lost?: (instance: Instance) => Promise<void>;
}

/**
 * Chroma 1.0.5's rule for a JSON body, measured: no Content-Type at all is read as JSON;
 * otherwise the media type must be `application/json` or `application/*+json` (any case,
 * any parameters). Anything else, an empty value included, is 415 `ChromaError`.
 */
export function isJsonContentType(contentType: string | null): boolean {
  if (contentType === null) return true;
  const mediaType = contentType.split(";", 1)[0]!.trim().toLowerCase();
  const subtype = /^application\/([a-z0-9!#$&^_.+-]+)$/.exec(mediaType)?.[1];
  return subtype !== undefined && (subtype === "json" || subtype.endsWith("+json"));
}

function requireJson(contentType: string | null) {
  if (!isJsonContentType(contentType)) {
    // Chroma's own answer, word for word.
    throw new LbError(415, "ChromaError", "Expected request with `Content-Type: application/json`");
  }
}

/** A record body as the checks read it: scanned raw, or parsed when the scanner cannot read it. */
function recordBody(bytes: Uint8Array, contentType: string | null): BodyView {
  requireJson(contentType);
  return rawView(bytes) ?? parsedView(parseJsonBody(bytes, contentType));
}

export function parseJsonBody(bytes: Uint8Array, contentType: string | null): Record<string, unknown> {
  requireJson(contentType);
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
  private readonly protection: Protection;

  constructor(private readonly deps: ApiDeps) {
    this.protection = new Protection(deps);
  }

  private get config() {
    return this.deps.config;
  }

  private views(): InstanceView[] {
    return instanceViews(this.deps.registry, this.deps.wal, this.deps.writes.inFlight);
  }

  /**
   * The client's headers as an instance may see them: hop-by-hop ones removed, and any
   * header that carries chroma-lb's admin token (in whatever spelling) as well. Once the data
   * API is closed, `Authorization` and `X-Chroma-Token` carry chroma-lb's own tokens and are
   * kept for chroma-lb alone. While it is open (no data token exists), a client's credentials
   * are not chroma-lb's and pass on as before, so a deployment whose instances sit behind an
   * authenticating proxy keeps working (dropping them was the old balancer's defect 10).
   */
  private forwarded(request: Request): Headers {
    const headers = withoutSecrets(forwardHeaders(request.headers), [this.config.adminToken]);
    return this.deps.access.open ? headers : withoutCredentials(headers);
  }

  private droppedByInstance(instance: Instance, reason: string): Response {
    return errorResponse(
      new LbError(502, "BadGateway", `Instance ${instance.name} dropped the connection for this request (${reason}); check the request's parameters`),
    );
  }

  unsupported(message: string): Response {
    return errorResponse(notImplemented(message));
  }

  // ---------------------------------------------------------------- reads

  /**
   * Sends a read to its candidates in order until one answers: an instance that gives no
   * answer is skipped (and marked down when its heartbeat fails too), and so is one that
   * answers 5xx while another candidate remains (Chroma 1.0.5 answers some reads 500 while
   * it builds a segment reader). Every read goes through here.
   */
  private async read(request: Request, plan: ReadPlan): Promise<Response> {
    const { registry, log } = this.deps;
    const headers = this.forwarded(request);
    for (let i = 0; i < plan.candidates.length; i++) {
      const candidate = plan.candidates[i]!;
      const instance = registry.get(candidate.name)!;
      if (!candidate.fresh && plan.catchUp && !(await plan.catchUp(instance))) continue;
      const path = plan.path(instance);
      if (path === null) continue;
      const options = { method: request.method, path, headers, body: plan.body ?? null, timeoutMs: this.config.requestTimeoutMs, signal: request.signal };
      // Answers that are rewritten are read whole (collection objects, small); the others
      // are streamed on once their status shows no other instance will be tried.
      const result = plan.rewrite ? await instance.client.request(options) : await instance.client.open(options);
      if (!result.ok) {
        const blame = await blameTransportFailure(registry, log, instance, result.failure, result.reason, this.config.healthCheckTimeoutMs);
        if (blame === "request") return this.droppedByInstance(instance, result.reason);
        continue;
      }
      registry.reportAnswered(instance, result.status);
      if (result.status === 404 && plan.lost) {
        if ("stream" in result) await result.stream?.cancel().catch(() => undefined);
        await plan.lost(instance);
        continue;
      }
      if (result.status >= 500 && i < plan.candidates.length - 1) {
        log.warn("instance answered a read with an error; trying another", { instance: instance.name, status: result.status });
        if ("stream" in result) await result.stream?.cancel().catch(() => undefined);
        continue;
      }
      const body = "stream" in result ? result.stream : plan.rewrite && result.status === 200 ? await plan.rewrite(result.body, result.headers) : result.body;
      return new Response(body, {
        status: result.status,
        headers: responseHeaders(result.headers, { [INSTANCE_HEADER]: instance.name, ...plan.headers?.(instance) }),
      });
    }
    return plan.whenNone?.() ?? errorResponse(noInstanceFor(registry, plan.what));
  }

  /**
   * Heartbeat, version, pre-flight and other instance-level reads: any serving instance
   * answers. Pre-flight checks, version and identity are kept as the instances answer them
   * and, while no instance can serve, answered from what was kept (see instance-answers.ts).
   */
  async passthrough(request: Request, path: string): Promise<Response> {
    const candidates = readCandidates(this.views(), () => true, this.config.readReplicaRatio);
    const answers = this.deps.instanceAnswers;
    const key = answers.keyFor(path, request.headers);
    if (!key) return this.read(request, { what: "this request", candidates, path: () => path });
    return this.read(request, {
      what: "this request",
      candidates,
      path: () => path,
      rewrite: (body, headers) => {
        answers.remember(key, body, headers.get("content-type"));
        return body;
      },
      whenNone: () => answers.answer(key, { [INSTANCE_HEADER]: "none" }),
    });
  }

  /**
   * `GET /api/v2/auth/identity`. With a token, chroma-lb answers for it, in the shape Chroma
   * answers (`{"user_id":"","tenant":"default_tenant","databases":["default_database"]}` from
   * a lone Chroma 1.0.5): the official clients read it to pick their tenant and database when
   * none is given (Python: a single tenant other than default_tenant, a single database other
   * than `*`). While the data API is open and no token is sent, an instance answers as before.
   */
  async identity(request: Request): Promise<Response> {
    const principal = this.deps.access.principalFor(request);
    if (!principal || principal === anonymous) return this.passthrough(request, "/api/v2/auth/identity");
    const body = { user_id: principal.name, tenant: identityTenant(principal), databases: principal.databases };
    return new Response(JSON.stringify(body), { headers: { "content-type": "application/json" } });
  }

  /** `GET /api/v2/tenants/{tenant}/databases`: only the databases the caller's token may use. */
  async listDatabases(request: Request, tenant: string): Promise<Response> {
    const response = await this.catalogRead(request, () => `/api/v2/tenants/${encodeURIComponent(tenant)}/databases${new URL(request.url).search}`, null);
    const databases = this.deps.access.principalFor(request)?.databases ?? ["*"];
    if (response.status !== 200 || databases.includes("*")) return response;
    // A small catalog answer (ids and names), so reading it whole to drop entries is cheap.
    const list = decodeJsonArray(new Uint8Array(await response.arrayBuffer()));
    if (!list) throw new LbError(502, "BadGateway", "An instance answered the database list with something other than a list");
    const kept = list.filter((d) => typeof (d as { name?: unknown })?.name === "string" && scopeCovers(databases, (d as { name: string }).name));
    return new Response(JSON.stringify(kept), { status: 200, headers: response.headers });
  }

  /**
   * Reads about tenants, databases and collections (not records): served by an instance
   * that has applied every acknowledged collection, tenant and database change.
   */
  async catalogRead(
    request: Request,
    /** Null skips the instance (a known collection whose copy there is not made yet: it would answer 404). */
    pathFor: (instance: Instance) => string | null,
    rewrite: "collection" | "collections" | null,
    body: Uint8Array | null = null,
  ): Promise<Response> {
    const { wal, replayer } = this.deps;
    const candidates = readCandidates(this.views(), (name) => wal.isCatalogCaughtUp(name), this.config.readReplicaRatio);
    /**
     * Rewrites instance UUIDs to the ids clients know. With several nodes, a UUID this node
     * does not know yet may have been mapped by another node a moment ago (the instance
     * applied the create it replayed): the mappings are read again before answering it raw.
     */
    const rewriteIds = async (out: Uint8Array, rewriteWith: (idFor: (uuid: string) => string) => Uint8Array) => {
      let unknown = false;
      const idFor = (uuid: string) => {
        const record = this.deps.collections.byUuid(uuid);
        if (!record) unknown = true;
        return record?.id ?? uuid;
      };
      let rewritten = rewriteWith(idFor);
      // The node that replayed the create records the instance's UUID a moment after the
      // instance has it, and a reload is declined while a mapping change of this node's own
      // is in flight: a few tries, a moment apart, before a UUID no node mapped is answered
      // as the instance gave it (a collection made on the instance directly).
      for (let attempt = 0; unknown && this.deps.cluster && attempt < mappingRetriesMax; attempt++) {
        if (attempt > 0) await Bun.sleep(mappingRetryGapMs);
        try {
          await this.deps.cluster.mappingsCurrent();
        } catch {
          break; // Postgres does not answer: the instance's UUIDs are answered as they are.
        }
        unknown = false;
        rewritten = rewriteWith(idFor);
      }
      return rewritten;
    };
    return this.read(request, {
      what: "this read",
      candidates,
      catchUp: async (instance) => (await replayer.drainCatalog(instance, { deadlineMs: this.deadline(), urgent: true }).catch(() => ({ ok: false }))).ok,
      path: pathFor,
      body,
      rewrite:
        rewrite === "collection"
          ? (out) => rewriteIds(out, (idFor) => rewriteCollection(out, idFor))
          : rewrite === "collections"
            ? (out) =>
                rewriteIds(out, (idFor) => {
                  const list = rewriteCollectionList(out, idFor);
                  return list ? joinArray(list.map((c) => c.bytes)) : out;
                })
            : undefined,
    });
  }

  private deadline(): number {
    return Date.now() + this.config.requestTimeoutMs;
  }

  /**
   * Finds a collection by id, instance UUID or name; unknown names trigger one adoption pass.
   * Chroma 1.0.5 words a missing collection two ways: "does not exists." (with a period) on
   * the routes that take an id (records, modify), "does not exists" on the routes that take
   * a name (get, delete); `byName` picks the latter.
   */
  async resolve(tenant: string, database: string, ref: string, byName = false): Promise<CollectionRecord> {
    const found = this.deps.collections.resolve(tenant, database, ref);
    if (found) return found;
    // Another node may have made it a moment ago: its mapping is read before any adoption,
    // which would otherwise map the instances' copies a second time.
    if (this.deps.cluster && (await this.deps.cluster.mappingsOnce().catch(() => false))) {
      const loaded = this.deps.collections.resolve(tenant, database, ref);
      if (loaded) return loaded;
    }
    await this.deps.adoption.adoptSoon(tenant);
    const adopted = this.deps.collections.resolve(tenant, database, ref);
    if (adopted) return adopted;
    throw notFound(`Collection [${ref}] does not exists${byName ? "" : "."}`);
  }

  /**
   * Record reads (get, query, count): only from an instance that has applied what the
   * caller needs; never from one whose copy is lost or being rebuilt, and from one whose
   * copy diverged only when no other instance can serve (the answer then says so in
   * `X-Chroma-LB-Diverged`).
   */
  async recordRead(request: Request, tenant: string, database: string, ref: string, op: RecordReadOp, body: Uint8Array | null): Promise<Response> {
    if (op !== "count") validateRecordRead(op, recordBody(body ?? new Uint8Array(), request.headers.get("content-type")));
    const { wal, replayer } = this.deps;
    const minPosition = await this.mappingsUpTo(request);
    const record = await this.resolve(tenant, database, ref);
    // A copy that is lost or being rebuilt never serves; one that diverged only when no whole copy can.
    const views = this.views().filter((v) => !wal.isUnderRepair(v.name, record.id));
    const whole = views.filter((v) => !wal.isDiverged(v.name, record.id));
    // With several nodes another node may have acknowledged writes this node's view does
    // not show yet: which instance has them is read from the log store now.
    const behindNow = await wal.behindNow(views.map((v) => v.name), record.id, minPosition);
    // The store cannot be read: the view decides, and it lacks what other nodes acknowledged
    // since its last reload. A position past what it has seen cannot be vouched for.
    if (!behindNow && this.deps.cluster && minPosition !== undefined && minPosition > wal.view.headSeq()) {
      throw new LbError(503, "ServiceUnavailable", `This node cannot read the log store now and has not yet seen log position ${minPosition} (${MIN_POSITION_HEADER}); retry, another node may answer`, {
        "Retry-After": "1",
      });
    }
    const candidates = readCandidates(
      whole.some((v) => v.serving) ? whole : views,
      (name) => (behindNow ? !behindNow.has(name) : wal.isCaughtUp(name, record.id, minPosition)),
      this.config.readReplicaRatio,
    );
    return this.read(request, {
      what: `collection ${record.name}`,
      candidates,
      catchUp: async (instance) => {
        // A log store that cannot be reached cannot bring it up to date: another instance serves.
        const caughtUp = await replayer
          .drain(instance, record.id, { uptoSeq: minPosition, deadlineMs: this.deadline(), urgent: true })
          .catch((error) => ({ ok: false as const, applied: 0, reason: String(error) }));
        return caughtUp.ok && (await wal.caughtUpNow(instance.name, record.id, minPosition));
      },
      path: (instance) => {
        const uuid = record.instanceUuids.get(instance.name);
        return uuid ? `${base(tenant, database)}/collections/${uuid}/${op}${new URL(request.url).search}` : null;
      },
      body,
      headers: (instance): Record<string, string> => (wal.isDiverged(instance.name, record.id) ? { [DIVERGED_HEADER]: "true" } : {}),
      // The instance held the collection (chroma-lb has its UUID there, and it is current for
      // it): answering its 404 would tell the client an existing collection is gone.
      lost: async (instance) => {
        this.deps.log.warn("an instance answered a read 404 for a collection it held; its copy is marked for repair", { instance: instance.name, collection: record.name });
        await wal.markUnderRepair(instance.name, record.id, `answered 404 for collection ${record.id}, which it held`).catch(() => {});
      },
    });
  }

  /**
   * Several nodes: a read that needs a log position this node has not seen may name a
   * collection another node has since created, renamed or dropped (mapped in Postgres before
   * its entry was logged). The mappings are read again first; when Postgres cannot be read,
   * the read is refused with 503, for the client to retry (on another node, behind a load
   * balancer), never answered from the old mappings. Returns the position asked for.
   */
  private async mappingsUpTo(request: Request): Promise<number | undefined> {
    const minPosition = parseMinPosition(request.headers.get(MIN_POSITION_HEADER));
    const cluster = this.deps.cluster;
    if (!cluster || minPosition === undefined || minPosition <= cluster.mappingsAsOfPosition) return minPosition;
    if (!(await cluster.mappingsCurrent().catch(() => false))) {
      throw mappingsUnreadable(`, and has not yet seen log position ${minPosition} (${MIN_POSITION_HEADER})`);
    }
    return minPosition;
  }

  async getCollection(request: Request, tenant: string, database: string, ref: string): Promise<Response> {
    await this.mappingsUpTo(request);
    const record = this.deps.collections.resolve(tenant, database, ref) ?? (await this.resolve(tenant, database, ref).catch(() => undefined));
    const name = record?.name ?? ref;
    return this.catalogRead(request, (instance) => (record && !record.instanceUuids.has(instance.name) ? null : `${base(tenant, database)}/collections/${encodeURIComponent(name)}`), "collection");
  }

  /**
   * `GET .../collections`. Chroma sorts the list by its own UUIDs, which differ per instance,
   * so pages served by different instances would overlap or skip collections. chroma-lb asks
   * for the whole list, sorts it by the ids clients see (as Chroma sorts by its ids) and cuts
   * the page itself. A malformed limit or offset is passed on for Chroma to refuse.
   */
  async listCollections(request: Request, tenant: string, database: string): Promise<Response> {
    await this.mappingsUpTo(request);
    const params = new URL(request.url).searchParams;
    const page = (field: string) => (params.has(field) ? params.get(field)! : null);
    const [limit, offset] = [page("limit"), page("offset")];
    if ([limit, offset].some((v) => v !== null && !/^\d+$/.test(v))) {
      return this.catalogRead(request, () => `${base(tenant, database)}/collections${new URL(request.url).search}`, "collections");
    }
    const response = await this.catalogRead(request, () => `${base(tenant, database)}/collections`, null);
    if (response.status !== 200) return response;
    const list = rewriteCollectionList(new Uint8Array(await response.arrayBuffer()), (uuid) => this.deps.collections.logicalIdFor(uuid));
    if (!list) throw new LbError(502, "BadGateway", "An instance answered the collection list with something other than a list of collections");
    list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const start = offset === null ? 0 : Number(offset);
    const paged = list.slice(start, limit === null ? undefined : start + Number(limit));
    return new Response(joinArray(paged.map((c) => c.bytes)), { status: 200, headers: response.headers });
  }

  /** `GET .../collections/by-id/{id}`: answered from the mappings (Chroma 1.0 has no such route). */
  async getCollectionById(request: Request, tenant: string, database: string, id: string): Promise<Response> {
    await this.mappingsUpTo(request);
    const record = await this.resolve(tenant, database, id);
    return this.catalogRead(request, (instance) => (record.instanceUuids.has(instance.name) ? `${base(tenant, database)}/collections/${encodeURIComponent(record.name)}` : null), "collection");
  }

  // ---------------------------------------------------------------- writes

  /**
   * Collection, tenant and database changes: one at a time (names stay unique), and while
   * they run, what probes see of the instances does not count against them (Chroma answers
   * slowly or with errors while it changes its catalog).
   */
  private changeCatalog<T>(fn: () => Promise<T>): Promise<T> {
    return this.ddl.run("ddl", () => this.deps.registry.whileOwnOperation(fn));
  }

  /** Hands a checked write to the write path. */
  private submit(request: Request, entry: NewEntry): Promise<WriteResult> {
    return this.deps.writes.submit(entry, this.forwarded(request));
  }

  private writeResponse(result: WriteResult, acceptedBody: Uint8Array | string = "{}"): Response {
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
        return new Response(acceptedBody, {
          status: 202,
          headers: { "content-type": "application/json", [POSITION_HEADER]: String(result.seq), [ACCEPTED_HEADER]: "logged" },
        });
      case "unavailable":
        return errorResponse(unavailable(result.reason));
    }
  }

  async recordWrite(request: Request, tenant: string, database: string, ref: string, op: RecordWriteOp, body: Uint8Array): Promise<Response> {
    const view = recordBody(body, request.headers.get("content-type"));
    validateRecordWrite(op, view);
    const record = await this.resolve(tenant, database, ref);
    if (op === "delete" && (view.kind("where") !== "absent" || view.kind("where_document") !== "absent")) {
      // A delete by filter may remove any number of records: recorded in /events once it succeeds.
      this.deps.access.auditLater(request, { event: "delete_records", tenant, database, collection: record.name, collectionId: record.id });
    }
    const result = await this.submit(request, {
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
      throw badRequest(invalidName(name));
    }
    return this.changeCatalog(async () => {
      let existing = this.deps.collections.byName(tenant, database, name);
      // Several nodes: it may have been dropped through another node since this node's
      // mappings were read; answering it from memory would acknowledge a create that never ran.
      if (existing && this.deps.cluster) {
        if (!(await this.deps.cluster.mappingsCurrent().catch(() => false))) {
          throw mappingsUnreadable(" to tell whether the collection still exists");
        }
        existing = this.deps.collections.byName(tenant, database, name);
      }
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
      const record = await this.deps.collections.create(id, tenant, database, name);
      let result: WriteResult;
      try {
        result = await this.submit(request, {
          partition: id,
          kind: "collection",
          op: "create_collection",
          tenant,
          database,
          collectionId: id,
          name,
          body,
        });
      } catch (error) {
        // Refused before it was logged (a full disk refused the append, or an earlier entry
        // is unsettled): nothing will create it, so the name must stay free. Any other error
        // came after logging, and the logged entry is replayed (WritePath.appendAndApply).
        // Cut off midway (OutcomeUnknownError), it may have been logged: the mapping stays,
        // and goes later if its entry never was (cluster/replication.ts, dropNeverCreatedOnce).
        if ((error instanceof StorageFullError || error instanceof LbError) && !(error instanceof OutcomeUnknownError)) {
          // The mapping store may share the full disk; the client was told the create failed.
          await this.deps.collections.markDeleted(record.id).catch(() => {});
        }
        throw error;
      }
      if (result.kind === "applied") {
        const body = rewriteCollection(result.outcome.body, (uuid) => this.deps.collections.logicalIdFor(uuid));
        return this.writeResponse({ ...result, outcome: { ...result.outcome, body } });
      }
      if (result.kind === "accepted") return this.writeResponse(result, acceptedCollection(body, { id, name, tenant, database }));
      await this.deps.collections.markDeleted(record.id);
      return this.writeResponse(result);
    });
  }

  async modifyCollection(request: Request, tenant: string, database: string, ref: string, body: Uint8Array): Promise<Response> {
    const json = parseJsonBody(body, request.headers.get("content-type"));
    return this.changeCatalog(async () => {
      const record = await this.resolve(tenant, database, ref);
      const newName = typeof json.new_name === "string" ? json.new_name : null;
      if (newName !== null && newName !== record.name) {
        if (!collectionNamePattern.test(newName)) {
          throw badRequest(invalidName(newName));
        }
        await this.protection.refuseChange(record, "renamed");
        if (this.deps.collections.byName(tenant, database, newName)) throw conflict(`Collection [${newName}] already exists`);
      }
      const result = await this.submit(request, {
        partition: record.id,
        kind: "collection",
        op: "modify_collection",
        tenant,
        database,
        collectionId: record.id,
        name: record.name,
        body,
      });
      if ((result.kind === "applied" || result.kind === "accepted") && newName !== null) await this.deps.collections.rename(record.id, newName);
      return this.writeResponse(result);
    });
  }

  async deleteCollection(request: Request, tenant: string, database: string, ref: string): Promise<Response> {
    return this.changeCatalog(async () => {
      const record = await this.resolve(tenant, database, ref, true);
      await this.protection.refuseChange(record, "deleted");
      const result = await this.submit(request, {
        partition: record.id,
        kind: "collection",
        op: "delete_collection",
        tenant,
        database,
        collectionId: record.id,
        name: record.name,
        body: null,
      });
      if (result.kind === "applied" || result.kind === "accepted") await this.deps.collections.markDeleted(record.id);
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
    if (op === "delete_database") await this.refuseProtectedInside(tenant, database);
    return this.changeCatalog(async () => {
      const result = await this.submit(request, {
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
          if (record.tenant === tenant && record.database === database) await this.deps.collections.markDeleted(record.id);
        }
      }
      return this.writeResponse(result);
    });
  }

  /**
   * Deleting a database deletes every collection in it, so a database that holds a
   * protected collection (known to chroma-lb, or found on an instance by adoption) is
   * refused as the collection itself would be.
   */
  private async refuseProtectedInside(tenant: string, database: string) {
    await this.deps.adoption.adoptSoon(tenant);
    const protectedInside = this.deps.collections
      .list()
      .filter((c) => c.tenant === tenant && c.database === database && this.config.protectedCollections.includes(c.name));
    if (protectedInside.length) {
      const names = protectedInside.map((c) => c.name).join(", ");
      throw forbidden(`Database ${tenant}/${database} holds protected collections (${names}; PROTECTED_COLLECTIONS) and cannot be deleted through chroma-lb`);
    }
  }

  /**
   * Resets every instance, then chroma-lb's own log and mappings. Refused unless
   * ALLOW_RESET=true, without an admin credential (when ADMIN_TOKEN or a token exists), and while any
   * instance is not serving (it would come back with data). Writes are held and replay is
   * paused (waiting for batches in flight) before the first instance is cleared, so that
   * nothing written before the reset reaches an instance after it.
   */
  async reset(request: Request): Promise<Response> {
    // Who may reset is decided before (auth/rules.ts): an admin credential for everything.
    if (!this.config.allowReset) throw forbidden("Reset is disabled by config");
    const { registry, replayer, writes, wal, collections, log } = this.deps;
    return this.ddl.run("ddl", () =>
      writes.exclusive(() =>
        registry.whileOwnOperation(async () => {
          const notServing = registry.all.filter((i) => !i.serving);
          if (notServing.length) {
            throw unavailable(`Reset needs every instance; not serving: ${notServing.map((i) => i.name).join(", ")}. Retry once GET /status shows them healthy.`);
          }
          await replayer.pause();
          try {
            let last: Response | null = null;
            for (const instance of registry.all) {
              const result = await instance.client.request({
                method: "POST",
                path: "/api/v2/reset",
                headers: this.forwarded(request),
                timeoutMs: this.config.requestTimeoutMs,
              });
              if (!result.ok) throw unavailable(`Reset of instance ${instance.name} failed: ${result.reason}; retry the reset`);
              if (result.status >= 300) {
                return new Response(result.body, { status: result.status, headers: responseHeaders(result.headers, { [INSTANCE_HEADER]: instance.name }) });
              }
              last = new Response(result.body, { status: result.status, headers: responseHeaders(result.headers) });
            }
            await wal.clear();
            await collections.markAllDeleted();
            log.warn("reset: every instance and chroma-lb's log and mappings were cleared");
            return last ?? new Response("true", { headers: { "content-type": "application/json" } });
          } finally {
            replayer.resume();
          }
        }),
      ),
    );
  }
}

/**
 * The collection a create answered 202 (every instance down) will be: the client's own
 * `configuration` and `metadata` text, unchanged, in Chroma's collection shape.
 */
function acceptedCollection(body: Uint8Array, known: { id: string; name: string; tenant: string; database: string }): Uint8Array {
  const fields = splitObject(body);
  const raw = (field: string, fallback: string) => {
    const slice = fields?.get(field);
    return slice ? decoder.decode(body.subarray(slice.start, slice.end)) : fallback;
  };
  const text =
    `{"id":${JSON.stringify(known.id)},"name":${JSON.stringify(known.name)},"configuration_json":${raw("configuration", "{}")},` +
    `"metadata":${raw("metadata", "null")},"dimension":null,"tenant":${JSON.stringify(known.tenant)},` +
    `"database":${JSON.stringify(known.database)},"log_position":0,"version":0}`;
  return encoder.encode(text);
}

/** The tenant an identity names: the token's only tenant, else default_tenant when it may use it. */
function identityTenant(principal: Principal): string {
  if (principal.tenants.length === 1 && principal.tenants[0] !== "*") return principal.tenants[0]!;
  return scopeCovers(principal.tenants, "default_tenant") ? "default_tenant" : principal.tenants[0]!;
}

function decodeJsonArray(body: Uint8Array): unknown[] | null {
  try {
    const parsed = JSON.parse(decoder.decode(body)) as unknown;
    return Array.isArray(parsed) ? parsed : null;
  } catch {
    return null;
  }
}

/** Reads of the mappings tried before an instance UUID is answered unmapped, and the gap between them. */
const mappingRetriesMax = 4;
const mappingRetryGapMs = 50;

function parseMinPosition(raw: string | null): number | undefined {
  if (raw === null) return undefined;
  // Digits only: Number() reads "" as 0 and "1e3" as 1000, which would silently require less.
  const value = /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(value)) throw badRequest(`${MIN_POSITION_HEADER} must be a log position (a whole number), got ${raw}`);
  return value;
}

/** Several nodes: a request that needs the cluster's mappings while Postgres cannot be read. */
function mappingsUnreadable(why: string): LbError {
  return new LbError(503, "ServiceUnavailable", `This node cannot read the cluster's mappings now${why}; retry, another node may answer`, { "Retry-After": "1" });
}
