/**
 * Who may do what, decided once per request before its body is read.
 *
 * Tokens come from the TokenStore (created through /admin/tokens or `bun run token`), from
 * AUTH_TOKENS_FILE, and ADMIN_TOKEN. The valid ones are held in memory by hash and reloaded
 * from the store every second (`refreshOnce`, scheduled in schedules.ts), so a token made or
 * revoked by another node or by the command is seen here within about a second; one revoked
 * here is refused at once.
 *
 * The data API is open (every request is the `anonymous` principal) only on purpose: while
 * AUTH_REQUIRED is false and no data token was ever made. The first token closes it for good:
 * revoked tokens keep their rows, so revoking the last one does not open it again.
 */
import type { CollectionStore } from "../collections/store";
import type { Config } from "../config";
import { errorResponse, forbidden, unauthorized } from "../errors";
import type { RecentEvents } from "../observability/events";
import type { Logger } from "../observability/log";
import { needOf, type AuditedAction, type Need } from "./rules";
import type { TokenStore } from "./token-store";
import {
  adminTokenPrincipal,
  anonymous,
  coversEverything,
  hashSecret,
  newSecret,
  newTokenId,
  principalOf,
  roleAllows,
  sameHash,
  scopeCovers,
  type Principal,
  type Role,
  type TokenRecord,
} from "./tokens";

/** The metrics label of requests without a valid credential while the data API is closed. */
export const unauthenticatedLabel = "unauthenticated";

/** How often the set of tokens is reloaded from the store (a revoke elsewhere holds within twice this). */
export const tokenRefreshIntervalMs = 1000;

export type AccessDeps = {
  config: Pick<Config, "adminToken" | "authRequired" | "declaredTokens">;
  log: Logger;
  events: RecentEvents;
  collections: Pick<CollectionStore, "resolve">;
  tokens: TokenStore;
};

/** What was decided for one request: kept for the answer's metrics and audit. */
interface Decision {
  principal: Principal | null;
  audit?: AuditedAction;
}

/** A token as listed by GET /admin/tokens: no secret, no hash. */
export interface TokenView {
  id: string;
  name: string;
  role: Role;
  tenants: string[];
  databases: string[];
  created_at: string | null;
  revoked_at: string | null;
  /** `store`: created through chroma-lb; `file`: declared in AUTH_TOKENS_FILE (revoked by editing the file). */
  source: "store" | "file";
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

const unauthorizedAnswer = (message: string) => errorResponse(unauthorized(message));

export class AccessControl {
  /** Valid tokens by hash (stored and declared); ADMIN_TOKEN apart. */
  private byHash = new Map<string, TokenRecord>();
  /** Tokens ever made in the store, revoked ones included: any closes the data API. */
  private storedEver = 0;
  /** Bumped by every change made here, so a reload that read the store before it is dropped. */
  private generation = 0;
  private readonly adminHash: string | null;
  private readonly decisions = new WeakMap<Request, Decision>();
  private readonly declared: TokenRecord[];
  private loaded = false;

  constructor(private readonly deps: AccessDeps) {
    this.adminHash = deps.config.adminToken === null ? null : hashSecret(deps.config.adminToken);
    this.declared = deps.config.declaredTokens.map((t, i) => ({
      id: `file_${i + 1}`,
      name: t.name,
      role: t.role,
      tenants: t.tenants,
      databases: t.databases,
      hash: t.sha256,
      createdAtMs: 0,
      revokedAtMs: null,
    }));
    this.rebuild([]);
  }

  /** True while requests need no token (see the file's comment). */
  get open(): boolean {
    return !this.deps.config.authRequired && this.declared.length === 0 && this.storedEver === 0;
  }

  /** Reloads every token from the store: one bounded step, called by the schedule and at start. */
  async refreshOnce(): Promise<void> {
    const generation = this.generation;
    const records = await this.deps.tokens.list();
    // A change made here while the store was read is newer than what was read.
    if (generation !== this.generation) return;
    this.rebuild(records);
    this.loaded = true;
  }

  private rebuild(stored: TokenRecord[]) {
    const byHash = new Map<string, TokenRecord>();
    for (const record of [...this.declared, ...stored]) if (record.revokedAtMs === null) byHash.set(record.hash, record);
    this.byHash = byHash;
    this.storedEver = stored.length;
  }

  /** Whether the first reload from the store has happened (before it, nothing is known of stored tokens). */
  get ready(): boolean {
    return this.loaded;
  }

  /**
   * The caller's secret: `Authorization: Bearer <t>` (what the Python client and most tools
   * send) or `X-Chroma-Token: <t>`; Authorization wins when both are sent.
   */
  static secretOf(headers: Headers): string | null {
    const authorization = headers.get("authorization");
    if (authorization) {
      const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
      if (match) return match[1]!;
    }
    return headers.get("x-chroma-token")?.trim() || null;
  }

  /**
   * The principal a secret belongs to, or null. The map is keyed by the secret's SHA-256:
   * how long a look-up takes can only tell about the hash of a guess, never about a stored
   * secret; the hash found is then compared in constant time all the same.
   */
  principalForSecret(secret: string): Principal | null {
    const hash = hashSecret(secret);
    if (this.adminHash !== null && sameHash(hash, this.adminHash)) return adminTokenPrincipal;
    const record = this.byHash.get(hash);
    return record && sameHash(hash, record.hash) ? principalOf(record) : null;
  }

  /**
   * Decides one request: null lets it through (its principal is then `principalFor(request)`),
   * a Response is the refusal (401 or 403 in Chroma's error shape).
   */
  check(request: Request, path: string): Response | null {
    const need = needOf(request.method, path);
    const secret = AccessControl.secretOf(request.headers);
    const principal = secret === null ? null : this.principalForSecret(secret);
    const open = this.open;
    if (need.kind === "public") {
      this.decisions.set(request, { principal: principal ?? (open ? anonymous : null) });
      return null;
    }
    if (need.kind === "admin") {
      // chroma-lb's admin endpoints are open only while nothing at all is configured.
      if (open && this.adminHash === null) {
        this.decisions.set(request, { principal: anonymous, audit: need.audit });
        return null;
      }
      if (!principal) return this.refuse(request, secret, `${need.what} needs an admin token: ADMIN_TOKEN, or a token of role admin for every tenant and database`);
      if (principal.role !== "admin" || !coversEverything(principal)) {
        return this.deny(request, principal, `${need.what} needs a token of role admin for every tenant and database; the token of ${principal.name} has role ${principal.role} for ${scopeText(principal)}`);
      }
      this.decisions.set(request, { principal, audit: need.audit });
      return null;
    }
    // The data API. While it is open an unknown credential is ignored, as before tokens
    // existed: a client may send one meant for something else.
    const who = principal ?? (open ? anonymous : null);
    if (!who) return this.refuse(request, secret, `${need.what} needs a token: \`Authorization: Bearer <token>\` or \`X-Chroma-Token: <token>\``);
    if (!roleAllows(who.role, need.role)) {
      return this.deny(request, who, `${need.what} needs role ${need.role}; the token of ${who.name} has role ${who.role}`);
    }
    const outOfScope = scopeMiss(who, need);
    if (outOfScope) return this.deny(request, who, `The token of ${who.name} may not use ${outOfScope}`);
    this.decisions.set(request, { principal: who, audit: need.audit && this.named(need.audit) });
    return null;
  }

  private refuse(request: Request, secret: string | null, message: string): Response {
    this.decisions.set(request, { principal: null });
    return unauthorizedAnswer(secret === null ? message : `The token is unknown or revoked. ${message}`);
  }

  private deny(request: Request, principal: Principal, message: string): Response {
    this.decisions.set(request, { principal });
    return errorResponse(forbidden(message));
  }

  /** The principal decided for a request that was let through (anonymous while open). */
  principalFor(request: Request): Principal | null {
    return this.decisions.get(request)?.principal ?? null;
  }

  /** The `principal` label of a request's metrics: a principal's name, bounded by the tokens made. */
  principalLabel(request: Request): string {
    const decided = this.decisions.get(request);
    if (decided?.principal) return decided.principal.name;
    return this.open ? anonymous.name : unauthenticatedLabel;
  }

  /** Told of every answer (the server's instrument): records it if audited, and names its principal for the metrics. */
  answered(request: Request, status: number): string {
    this.audit(request, status);
    return this.principalLabel(request);
  }

  /** Marks a request as recorded in /events once it succeeds (a delete by filter, found when its body is read). */
  auditLater(request: Request, action: AuditedAction) {
    const decided = this.decisions.get(request);
    if (decided) decided.audit = action;
  }

  /**
   * Records a destructive call that succeeded (status below 300): who, when (the event's
   * time) and what. Called with every answer; anything not marked for audit is ignored.
   */
  audit(request: Request, status: number) {
    const decided = this.decisions.get(request);
    if (!decided?.audit || status >= 300) return;
    const action = decided.audit;
    const principal = decided.principal?.name ?? unauthenticatedLabel;
    const target = targetText(action);
    this.record(principal, action, target);
  }

  private record(principal: string, action: AuditedAction, target: string) {
    this.deps.events.push({
      event: action.event,
      level: "info",
      principal,
      target,
      ...(action.collection ? { collection: action.collection } : {}),
      message: `${principal}: ${action.event.replace(/_/g, " ")} ${target}`.trim(),
    });
    this.deps.log.info("audit", { principal, event: action.event, target });
  }

  /**
   * The action with its collection's name and id, found before the call runs (a deleted
   * collection can no longer be resolved), so the event names it whether the caller gave a
   * name or an id.
   */
  named(action: AuditedAction): AuditedAction {
    if (!action.collection || action.tenant === undefined || action.database === undefined) return action;
    const record = this.deps.collections.resolve(action.tenant, action.database, action.collection);
    return record ? { ...action, collection: record.name, collectionId: record.id } : action;
  }

  // ------------------------------------------------------------- token management

  /** Makes a token: the secret is answered once and never kept, only its hash. */
  async createToken(input: { name: string; role: Role; tenants?: string[]; databases?: string[] }, by: string): Promise<{ record: TokenRecord; secret: string }> {
    const secret = newSecret();
    const record: TokenRecord = {
      id: newTokenId(),
      name: input.name,
      role: input.role,
      tenants: input.tenants?.length ? input.tenants : ["*"],
      databases: input.databases?.length ? input.databases : ["*"],
      hash: hashSecret(secret),
      createdAtMs: Date.now(),
      revokedAtMs: null,
    };
    await this.deps.tokens.create(record);
    this.generation += 1;
    const wasOpen = this.open;
    this.byHash.set(record.hash, record);
    this.storedEver += 1;
    if (wasOpen) this.deps.log.warn("the first data token exists: the data API now needs a token", { principal: record.name });
    this.record(by, { event: "token_created" }, `${record.id} (${record.name}, ${record.role}, tenants ${record.tenants.join(",")}, databases ${record.databases.join(",")})`);
    return { record, secret };
  }

  /** Revokes a token here at once and in the store (other nodes follow at their next reload). */
  async revokeToken(id: string, by: string): Promise<{ revoked: true; atMs: number } | { revoked: false; reason: "unknown" | "declared" }> {
    if (this.declared.some((t) => t.id === id)) return { revoked: false, reason: "declared" };
    const atMs = Date.now();
    this.generation += 1;
    for (const [hash, record] of this.byHash) if (record.id === id) this.byHash.delete(hash);
    const revoked = await this.deps.tokens.revoke(id, atMs);
    if (!revoked) return { revoked: false, reason: "unknown" };
    this.record(by, { event: "token_revoked" }, id);
    return { revoked: true, atMs };
  }

  /** Every token without its secret or hash: declared ones first, then the store's, revoked ones included. */
  async listTokens(): Promise<TokenView[]> {
    const stored = await this.deps.tokens.list();
    const view = (t: TokenRecord, source: TokenView["source"]): TokenView => ({
      id: t.id,
      name: t.name,
      role: t.role,
      tenants: t.tenants,
      databases: t.databases,
      created_at: source === "file" ? null : iso(t.createdAtMs),
      revoked_at: iso(t.revokedAtMs),
      source,
    });
    return [...this.declared.map((t) => view(t, "file")), ...stored.map((t) => view(t, "store"))];
  }

  /** Tells at start how the data API stands (a warning while it is open). */
  announce() {
    if (this.open) {
      this.deps.log.warn(
        "the data API is open: anyone who reaches chroma-lb can read, write and delete every tenant's data. Create a token (POST /admin/tokens or `bun run token create`) or set AUTH_REQUIRED=true to close it",
        { adminToken: this.adminHash !== null },
      );
    } else {
      this.deps.log.info("the data API needs a token", { tokens: this.byHash.size, adminToken: this.adminHash !== null });
    }
  }
}

function scopeText(p: Principal): string {
  return `tenants ${p.tenants.join(", ")} and databases ${p.databases.join(", ")}`;
}

/** What of the request lies outside the principal's scope, or null. */
function scopeMiss(p: Principal, need: Extract<Need, { kind: "data" }>): string | null {
  if (need.everything && !coversEverything(p)) return "every tenant and database (it has " + scopeText(p) + ")";
  if (need.tenant !== null && !scopeCovers(p.tenants, need.tenant)) return `tenant ${need.tenant}`;
  if (need.allDatabases && !p.databases.includes("*")) return `every database of tenant ${need.tenant}`;
  if (need.database !== null && !scopeCovers(p.databases, need.database)) return `database ${need.database}`;
  return null;
}

function targetText(action: AuditedAction): string {
  const path = [action.tenant, action.database, action.collection].filter((x) => x !== undefined).join("/");
  return action.collectionId ? `${path} (${action.collectionId})` : path;
}
