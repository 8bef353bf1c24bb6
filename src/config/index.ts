/**
 * The environment contract. Every setting is parsed and validated once, at start, into a
 * frozen Config that is passed to whoever needs it; nothing else reads process.env.
 * A bad value raises ConfigError, whose message names the variable and what it expects.
 */
import { readFileSync } from "node:fs";

import { hostname } from "node:os";

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    expected: string,
    got: string,
  ) {
    super(`${variable}: expected ${expected}, got ${JSON.stringify(got)}`);
    this.name = "ConfigError";
  }
}

export type LogLevel = "debug" | "info" | "warn" | "error";

export interface InstanceConfig {
  /** Stable name used in logs, admin paths and the log's positions (`primary`, `replica`, ...). */
  name: string;
  /** Base URL of the Chroma server, without a trailing slash. */
  url: string;
  /**
   * CHROMA_INSTANCE_HEADERS_<NAME> (none): headers sent on every request chroma-lb makes to
   * this instance (client requests, replay, probes, adoption, repair), for a Chroma behind an
   * authenticating proxy. A JSON object of strings, `{"Authorization":"Bearer s3cret"}`;
   * <NAME> is the instance name in capitals with `-` as `_` (PRIMARY, REPLICA, ...).
   */
  headers?: Readonly<Record<string, string>>;
}

/** One token declared in AUTH_TOKENS_FILE: its secret is known only by its SHA-256. */
export interface DeclaredToken {
  name: string;
  role: "read" | "write" | "admin";
  tenants: string[];
  databases: string[];
  /** Hex SHA-256 of the secret (`bun run token hash` prints one). */
  sha256: string;
}

export interface Config {
  /** PORT (8000): the port chroma-lb listens on; 0 picks a free one. */
  port: number;
  /** HOST (0.0.0.0): the address chroma-lb listens on. */
  host: string;
  /**
   * CHROMA_INSTANCES, else CHROMA_PRIMARY_URL + CHROMA_REPLICA_URL. The first instance is the
   * preferred write target. Empty only in the embedded default (`bun run dev`), which fills it.
   */
  instances: InstanceConfig[];
  /** DATA_DIR (./data): holds the SQLite files (log and mappings). */
  dataDir: string;
  /** DATABASE_URL (unset): Postgres; with LOG_STORE=sqlite an optional mirror of the mappings, with postgres the store. */
  databaseUrl: string | null;
  /** LOG_STORE (sqlite): where the log and the mappings live, `sqlite` (DATA_DIR) or `postgres` (DATABASE_URL). */
  logStore: "sqlite" | "postgres";
  /**
   * ADMIN_TOKEN (unset): an admin token of everything (`Authorization: Bearer <token>` or
   * `X-Chroma-Token`). When set, admin endpoints need an admin credential; alone it leaves
   * the data API open (see `authRequired`).
   */
  adminToken: string | null;
  /**
   * AUTH_REQUIRED (false): the data API needs a token from the start. When false it is open
   * until the first data token exists (created, or declared in AUTH_TOKENS_FILE). Refused
   * without ADMIN_TOKEN or AUTH_TOKENS_FILE, since no token could then be made.
   */
  authRequired: boolean;
  /** AUTH_TOKENS_FILE (unset): a JSON file of declared tokens (hashes only), read at start. */
  authTokensFile: string | null;
  /** The tokens of AUTH_TOKENS_FILE, parsed and checked at start; empty without the file. */
  declaredTokens: DeclaredToken[];
  /** PROTECTED_COLLECTIONS (global): collection names that can never be deleted through chroma-lb. */
  protectedCollections: string[];
  /** ALLOW_RESET (false): allow POST /api/v2/reset, which wipes every instance and chroma-lb's state. */
  allowReset: boolean;
  /** LOG_LEVEL (info). */
  logLevel: LogLevel;
  /** ALERT_WEBHOOK_URL (unset): where alerts are posted as JSON. */
  alertWebhookUrl: string | null;
  /** ALERT_MIN_INTERVAL (300 s): an alert of one kind, instance and collection is posted at most once per this time. */
  alertMinIntervalMs: number;
  /** ALERT_LAG_SECONDS (60 s): replication lag (age of the oldest entry an instance owes) above which `replication_lag` fires. */
  alertLagMs: number;
  /** ALERT_BACKLOG_ENTRIES (10000): log entries owed by one instance above which `log_backlog` fires. */
  alertBacklogEntries: number;
  /** ALERT_CHECK_INTERVAL (5 s): time between evaluations of the polled alert conditions (lag, backlog, memory, disk, mirror). */
  alertCheckIntervalMs: number;
  /** HEALTH_CHECK_INTERVAL (1 s): time between active health checks. */
  healthCheckIntervalMs: number;
  /** HEALTH_CHECK_TIMEOUT (0.5 s): a probe slower than this fails. */
  healthCheckTimeoutMs: number;
  /** HEALTH_FAILS (2): consecutive failed probes that mark a healthy instance down. */
  healthFails: number;
  /** HEALTH_PASSES (2): consecutive passed probes that mark a down instance up again. */
  healthPasses: number;
  /** REQUEST_TIMEOUT (30 s): bound on one request to an instance. */
  requestTimeoutMs: number;
  /** WAL_MAX_MEMORY_MB (400): process memory (RSS) at which replay batches shrink to one operation. */
  walMaxMemoryMb: number;
  /** WAL_MAX_WORKERS (3): collections replayed in parallel per instance. */
  walMaxWorkers: number;
  /** REPLAY_STEP_ENTRIES_MAX (10000): log entries one replay step (`replayOnce`) applies to one instance at most. */
  replayStepEntriesMax: number;
  /** WAL_DEFAULT_BATCH_SIZE (50): operations per replay request when memory is low. */
  walDefaultBatchSize: number;
  /** WAL_MAX_BATCH_SIZE (200): upper bound on operations per replay request. */
  walMaxBatchSize: number;
  /** WAL_MAX_BATCH_MB (30): upper bound on the body of one replay request. */
  walMaxBatchBytes: number;
  /** WAL_RETENTION_HOURS (24): entries applied everywhere are removed after this age. */
  walRetentionMs: number;
  /** WAL_SYNC_INTERVAL (1 s): safety-net replay pass; replay is otherwise started by each write. */
  walSyncIntervalMs: number;
  /** READ_REPLICA_RATIO (0.5): share of reads sent to non-primary instances when several are fresh. */
  readReplicaRatio: number;
  /** ACCEPT_WRITES_WHEN_ALL_DOWN (true): log writes and answer 202 while no instance is reachable; false answers 503. */
  acceptWritesWhenAllDown: boolean;
  /**
   * MAX_BODY_MB (40): the largest request body accepted, in MiB. Chroma 1.0.5 refuses bodies
   * over 40 MiB (41,943,040 bytes, measured), so a larger body could only be refused later.
   */
  maxBodyBytes: number;
  /**
   * MAX_INFLIGHT_MB (128, or MAX_BODY_MB when larger): bytes of request bodies held in memory
   * at once, in MiB. A body costs about five times its size in RSS while it is handled
   * (parsed, logged, forwarded, replayed: 278 MB peak for one 41 MB add), so 128 MiB (three
   * bodies of the largest size, or over a hundred typical 1 MB batches) keeps chroma-lb near
   * 560 MB however many arrive: 4 and 8 concurrent 41 MB adds peaked at 555 and 556 MB.
   */
  maxInflightBytes: number;
  /** INFLIGHT_WAIT_TIMEOUT (2 s): how long a request waits for room under MAX_INFLIGHT_MB before a 503. */
  inflightWaitMs: number;
  /**
   * BODY_MIN_KIB_PER_SECOND (64): the slowest a request body may arrive, in KiB/s, measured
   * over each BODY_RATE_WINDOW; a slower body is cut off (408) and its bytes released, so a
   * stalled or trickling sender cannot hold MAX_INFLIGHT_MB. 0 disables the check.
   */
  bodyMinBytesPerS: number;
  /** BODY_RATE_WINDOW (5 s): the window over which BODY_MIN_KIB_PER_SECOND is measured. */
  bodyRateWindowMs: number;
  /**
   * WAL_MAX_DISK_MB (10240): size of the log's SQLite files at which new writes are refused
   * (507), in MiB; 0 means no bound. Nothing already acknowledged is dropped.
   */
  walMaxDiskBytes: number;
  /**
   * WAL_DISK_RESERVE_MB (16): a spare file of this size kept in DATA_DIR. When the file
   * system fills before WAL_MAX_DISK_MB, it is deleted so the log can still record the state
   * of entries already appended and POST /wal/cleanup can still remove entries; new writes
   * answer 507 until it can be written back. 0 = none (a full disk may then block cleanup).
   * A checkpoint may need up to the -wal file's size (about 4 MiB at SQLite's default
   * autocheckpoint, more after large group commits), so keep it above that.
   */
  walDiskReserveBytes: number;
  /** MIRROR_SYNC_INTERVAL (5 s): how often the Postgres mirror is brought up to date. */
  mirrorSyncIntervalMs: number;
  /** MEMORY_SAMPLE_INTERVAL (1 s): how often process memory is sampled. */
  memorySampleIntervalMs: number;
  /** CONSISTENCY_CHECK_INTERVAL (3600 s; 0 turns it off): time between scheduled consistency checks. */
  consistencyCheckIntervalMs: number;
  /** AUTO_REPAIR (true): resync a copy found diverged, lost or different without an operator. */
  autoRepair: boolean;
  /**
   * NODE_ID (host name and port, or host name and process id when PORT is 0): names this
   * chroma-lb node among several sharing one Postgres. Two live nodes must never share one.
   */
  nodeId: string;
  /**
   * NODE_ADDRESS (the URL this node listens on): where operators and other nodes reach this
   * node, as /status lists it (e.g. `http://$(POD_IP):8000` in Kubernetes).
   */
  nodeAddress: string | null;
  /**
   * NODE_HEARTBEAT_INTERVAL (1 s): time between a node's heartbeats and lease renewals in
   * Postgres. Whole seconds, because croner runs jobs on whole seconds.
   */
  nodeHeartbeatIntervalMs: number;
  /**
   * LEASE_TTL_SECONDS (6 s): how long a replay lease lives without renewal, and how long a
   * node stays live without a heartbeat. At least three heartbeat intervals, so one slow
   * renewal does not cost a lease; with the defaults a dead node's leases are taken over
   * within TTL + one interval (7 s), inside the 10 s the cluster promises.
   */
  leaseTtlMs: number;
}

type Env = Record<string, string | undefined>;

function read(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(name, `an integer from ${min} to ${max}`, raw);
  }
  return value;
}

function num(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(name, `a number from ${min} to ${max}`, raw);
  }
  return value;
}

/** Durations are given in seconds (fractions allowed), as in the system chroma-lb replaces. */
function seconds(env: Env, name: string, fallbackSeconds: number, minSeconds: number, maxSeconds: number): number {
  const raw = read(env, name);
  if (raw === undefined) return Math.round(fallbackSeconds * 1000);
  const value = Number(raw);
  if (!Number.isFinite(value) || value < minSeconds || value > maxSeconds) {
    throw new ConfigError(name, `a duration in seconds from ${minSeconds} to ${maxSeconds}`, raw);
  }
  return Math.round(value * 1000);
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  const lowered = raw.toLowerCase();
  if (["true", "1", "yes", "on"].includes(lowered)) return true;
  if (["false", "0", "no", "off"].includes(lowered)) return false;
  throw new ConfigError(name, "true or false", raw);
}

function httpUrl(name: string, raw: string): string {
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, "an http(s) URL such as http://127.0.0.1:8001", raw);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new ConfigError(name, "an http(s) URL such as http://127.0.0.1:8001", raw);
  }
  return raw.replace(/\/+$/, "");
}

const instanceNamePattern = /^[a-z][a-z0-9_-]{0,31}$/;

function parseInstances(env: Env): InstanceConfig[] {
  const list = read(env, "CHROMA_INSTANCES");
  if (list !== undefined) {
    const expected = "name=url pairs separated by commas, such as primary=http://a:8000,replica=http://b:8000";
    const instances = list.split(",").map((item) => {
      const at = item.indexOf("=");
      if (at < 1) throw new ConfigError("CHROMA_INSTANCES", expected, list);
      const name = item.slice(0, at).trim();
      if (!instanceNamePattern.test(name)) {
        throw new ConfigError("CHROMA_INSTANCES", "instance names of lowercase letters, digits, - and _", name);
      }
      return { name, url: httpUrl("CHROMA_INSTANCES", item.slice(at + 1).trim()), ...withHeaders(env, name) };
    });
    const names = new Set(instances.map((i) => i.name));
    if (names.size !== instances.length) throw new ConfigError("CHROMA_INSTANCES", "distinct instance names", list);
    if (read(env, "CHROMA_PRIMARY_URL") || read(env, "CHROMA_REPLICA_URL")) {
      throw new ConfigError("CHROMA_INSTANCES", "to be the only instance setting (unset CHROMA_PRIMARY_URL and CHROMA_REPLICA_URL)", list);
    }
    return instances;
  }
  const instances: InstanceConfig[] = [];
  const primary = read(env, "CHROMA_PRIMARY_URL");
  const replica = read(env, "CHROMA_REPLICA_URL");
  if (primary !== undefined) instances.push({ name: "primary", url: httpUrl("CHROMA_PRIMARY_URL", primary), ...withHeaders(env, "primary") });
  if (replica !== undefined) {
    if (primary === undefined) throw new ConfigError("CHROMA_PRIMARY_URL", "a URL when CHROMA_REPLICA_URL is set", "");
    instances.push({ name: "replica", url: httpUrl("CHROMA_REPLICA_URL", replica), ...withHeaders(env, "replica") });
  }
  return instances;
}

/** The variable holding an instance's extra headers. */
export function instanceHeadersVariable(name: string): string {
  return `CHROMA_INSTANCE_HEADERS_${name.toUpperCase().replace(/-/g, "_")}`;
}

/** Header names of RFC 9110 (a token); values without line breaks. */
const headerNamePattern = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Headers chroma-lb sets itself on each request. */
const headersChromaLbSets = new Set(["host", "content-length", "content-type", "transfer-encoding", "connection"]);

/**
 * CHROMA_INSTANCE_HEADERS_<NAME>: a JSON object of header names to strings. JSON rather than
 * `k=v;k=v` because header values (base64 tokens, cookies) hold `=` and `;` themselves.
 * Values may hold secrets, so an error names the variable and the field, never the value.
 */
export function instanceHeaders(env: Env, name: string): Record<string, string> {
  const variable = instanceHeadersVariable(name);
  const raw = read(env, variable);
  if (raw === undefined) return Object.freeze({});
  const expected = 'a JSON object of header names to strings, such as {"Authorization":"Bearer s3cret"}';
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError(variable, expected, "(hidden: not JSON)");
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new ConfigError(variable, expected, "(hidden)");
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!headerNamePattern.test(key) || headersChromaLbSets.has(key.toLowerCase())) {
      throw new ConfigError(variable, "header names other than Host, Content-Length, Content-Type, Transfer-Encoding and Connection", key);
    }
    if (typeof value !== "string" || /[\r\n\0]/.test(value)) throw new ConfigError(variable, `a string without line breaks for ${key}`, "(hidden)");
    headers[key] = value;
  }
  return Object.freeze(headers);
}

/** `{ headers }` when the instance has CHROMA_INSTANCE_HEADERS_<NAME>, else nothing. */
function withHeaders(env: Env, name: string): { headers?: Readonly<Record<string, string>> } {
  const headers = instanceHeaders(env, name);
  return Object.keys(headers).length ? { headers } : {};
}

const tokenNamePattern = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

/**
 * AUTH_TOKENS_FILE: `{"tokens": [{"name": "cms", "role": "write", "tenants": ["default_tenant"],
 * "databases": ["*"], "sha256": "<hex>"}]}`; tenants and databases default to `["*"]`.
 */
export function parseDeclaredTokens(path: string, text: string): DeclaredToken[] {
  const variable = "AUTH_TOKENS_FILE";
  const fail = (what: string, got: string) => new ConfigError(variable, `${path} to hold ${what}`, got);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw fail('JSON such as {"tokens": [...]}', "(not JSON)");
  }
  const list = (parsed as { tokens?: unknown })?.tokens;
  if (!Array.isArray(list)) throw fail('an object with a "tokens" array', typeof parsed);
  const seen = new Set<string>();
  return list.map((item, i) => {
    const t = item as Record<string, unknown>;
    if (typeof t?.name !== "string" || !tokenNamePattern.test(t.name)) throw fail(`a name (letters, digits, . _ @ -) at tokens[${i}]`, String(t?.name));
    if (t.role !== "read" && t.role !== "write" && t.role !== "admin") throw fail(`role read, write or admin at tokens[${i}]`, String(t.role));
    if (typeof t.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(t.sha256)) throw fail(`a lowercase hex sha256 at tokens[${i}]`, "(hidden)");
    if (seen.has(t.sha256)) throw fail(`distinct hashes (tokens[${i}] repeats one)`, "(hidden)");
    seen.add(t.sha256);
    const names = (field: "tenants" | "databases"): string[] => {
      const value = t[field];
      if (value === undefined) return ["*"];
      if (!Array.isArray(value) || value.length === 0 || value.some((v) => typeof v !== "string" || v === "")) {
        throw fail(`${field} as a non-empty array of names (or "*") at tokens[${i}]`, JSON.stringify(value));
      }
      return value as string[];
    };
    return { name: t.name, role: t.role, tenants: names("tenants"), databases: names("databases"), sha256: t.sha256 };
  });
}

function readDeclaredTokens(path: string | null): DeclaredToken[] {
  if (path === null) return [];
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError("AUTH_TOKENS_FILE", "a readable file", `${path} (${(error as NodeJS.ErrnoException).code ?? "unreadable"})`);
  }
  return parseDeclaredTokens(path, text);
}

export interface LoadOptions {
  /** The embedded default fills the instances itself, so an empty list is allowed there. */
  allowNoInstances?: boolean;
  /** The machine's host name, for the default NODE_ID (default: os.hostname(); tests pass their own). */
  hostname?: string;
  /** This process's id, for the default NODE_ID when PORT is 0 (default: process.pid). */
  pid?: number;
}

/** Letters, digits and `.`, `_`, `:`, `-`: safe in logs, metric labels and SQL text columns. */
const nodeIdPattern = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/**
 * NODE_ID, or the host name with the port: unique per machine as long as each node listens
 * on its own port. PORT=0 (a free port, picked only after the config is read) would give
 * every node on a machine the same `host:0`, so the process id stands in for it then.
 */
function parseNodeId(env: Env, port: number, options: LoadOptions): string {
  const raw = read(env, "NODE_ID");
  if (raw !== undefined) {
    if (!nodeIdPattern.test(raw)) {
      throw new ConfigError("NODE_ID", "1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit", raw);
    }
    return raw;
  }
  const host = (options.hostname ?? hostname()).replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 100) || "node";
  return port === 0 ? `${host}:pid${options.pid ?? process.pid}` : `${host}:${port}`;
}

/** Parses and validates the environment once; the result is frozen. */
export function loadConfig(env: Env, options: LoadOptions = {}): Config {
  const instances = parseInstances(env);
  if (instances.length === 0 && !options.allowNoInstances) {
    throw new ConfigError(
      "CHROMA_PRIMARY_URL",
      "the URL of a Chroma server (or set CHROMA_INSTANCES; `bun run dev` starts two local ones)",
      "",
    );
  }
  const logLevel = (read(env, "LOG_LEVEL") ?? "info").toLowerCase();
  if (!["debug", "info", "warn", "error"].includes(logLevel)) {
    throw new ConfigError("LOG_LEVEL", "one of debug, info, warn, error", logLevel);
  }
  const databaseUrl = read(env, "DATABASE_URL") ?? null;
  const logStore = (read(env, "LOG_STORE") ?? "sqlite").toLowerCase();
  if (logStore !== "sqlite" && logStore !== "postgres") throw new ConfigError("LOG_STORE", "sqlite or postgres", logStore);
  if (logStore === "postgres" && !databaseUrl) throw new ConfigError("DATABASE_URL", "a postgres:// URL when LOG_STORE=postgres", "");
  if (databaseUrl !== null && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    // The value itself may hold a password, so it is never echoed.
    throw new ConfigError("DATABASE_URL", "a postgres:// URL", "(hidden)");
  }
  // The error names the variable actually set, and never echoes its value: a webhook URL
  // (Slack's in particular) carries its secret in the path.
  const alertVariable = read(env, "ALERT_WEBHOOK_URL") !== undefined ? "ALERT_WEBHOOK_URL" : "SLACK_WEBHOOK_URL";
  const alertWebhookUrl = read(env, alertVariable) ?? null;
  if (alertWebhookUrl !== null) {
    try {
      httpUrl(alertVariable, alertWebhookUrl);
    } catch {
      throw new ConfigError(alertVariable, "an http(s) URL", "(hidden)");
    }
  }

  const adminToken = read(env, "ADMIN_TOKEN") ?? null;
  const authTokensFile = read(env, "AUTH_TOKENS_FILE") ?? null;
  const authRequired = bool(env, "AUTH_REQUIRED", false);
  if (authRequired && adminToken === null && authTokensFile === null) {
    throw new ConfigError("AUTH_REQUIRED", "ADMIN_TOKEN or AUTH_TOKENS_FILE to be set as well (no token could be made otherwise)", "true");
  }
  const declaredTokens = readDeclaredTokens(authTokensFile);

  const walDefaultBatchSize = int(env, "WAL_DEFAULT_BATCH_SIZE", 50, 1, 5000);
  const walMaxBatchSize = int(env, "WAL_MAX_BATCH_SIZE", 200, 1, 5000);
  if (walDefaultBatchSize > walMaxBatchSize) {
    throw new ConfigError("WAL_DEFAULT_BATCH_SIZE", `at most WAL_MAX_BATCH_SIZE (${walMaxBatchSize})`, String(walDefaultBatchSize));
  }
  const healthCheckIntervalMs = seconds(env, "HEALTH_CHECK_INTERVAL", 1, 0.1, 3600);
  const healthCheckTimeoutMs = seconds(env, "HEALTH_CHECK_TIMEOUT", Math.min(0.5, healthCheckIntervalMs / 1000), 0.05, 60);
  const maxBodyMb = int(env, "MAX_BODY_MB", 40, 1, 1024);
  const maxBodyBytes = maxBodyMb * 1024 * 1024;
  // A body larger than the whole budget could never be admitted.
  const maxInflightMb = int(env, "MAX_INFLIGHT_MB", Math.max(128, maxBodyMb), 1, 1_000_000);
  if (maxInflightMb < maxBodyMb) {
    throw new ConfigError("MAX_INFLIGHT_MB", `at least MAX_BODY_MB (${maxBodyMb})`, String(maxInflightMb));
  }

  const port = int(env, "PORT", 8000, 0, 65535);
  const nodeHeartbeatIntervalMs = seconds(env, "NODE_HEARTBEAT_INTERVAL", 1, 1, 60);
  const leaseTtlMs = seconds(env, "LEASE_TTL_SECONDS", 6, 3, 600);
  if (leaseTtlMs < 3 * nodeHeartbeatIntervalMs) {
    throw new ConfigError(
      "LEASE_TTL_SECONDS",
      `at least three NODE_HEARTBEAT_INTERVAL (${(3 * nodeHeartbeatIntervalMs) / 1000} s)`,
      String(leaseTtlMs / 1000),
    );
  }

  return Object.freeze({
    port,
    host: read(env, "HOST") ?? "0.0.0.0",
    instances: Object.freeze(instances) as InstanceConfig[],
    dataDir: read(env, "DATA_DIR") ?? "./data",
    databaseUrl,
    logStore,
    adminToken,
    authRequired,
    authTokensFile,
    declaredTokens: Object.freeze(declaredTokens) as DeclaredToken[],
    protectedCollections: (read(env, "PROTECTED_COLLECTIONS") ?? "global")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    allowReset: bool(env, "ALLOW_RESET", false),
    logLevel: logLevel as LogLevel,
    alertWebhookUrl,
    alertMinIntervalMs: seconds(env, "ALERT_MIN_INTERVAL", 300, 0, 7 * 24 * 3600),
    alertLagMs: seconds(env, "ALERT_LAG_SECONDS", 60, 0.1, 7 * 24 * 3600),
    alertBacklogEntries: int(env, "ALERT_BACKLOG_ENTRIES", 10_000, 1, 1_000_000_000),
    alertCheckIntervalMs: seconds(env, "ALERT_CHECK_INTERVAL", 5, 1, 3600),
    healthCheckIntervalMs,
    healthCheckTimeoutMs,
    healthFails: int(env, "HEALTH_FAILS", 2, 1, 100),
    healthPasses: int(env, "HEALTH_PASSES", 2, 1, 100),
    requestTimeoutMs: seconds(env, "REQUEST_TIMEOUT", 30, 0.1, 3600),
    walMaxMemoryMb: int(env, "WAL_MAX_MEMORY_MB", 400, 32, 1_000_000),
    walMaxWorkers: int(env, "WAL_MAX_WORKERS", 3, 1, 64),
    replayStepEntriesMax: int(env, "REPLAY_STEP_ENTRIES_MAX", 10_000, 1, 10_000_000),
    walDefaultBatchSize,
    walMaxBatchSize,
    walMaxBatchBytes: int(env, "WAL_MAX_BATCH_MB", 30, 1, 1024) * 1024 * 1024,
    walRetentionMs: Math.round(num(env, "WAL_RETENTION_HOURS", 24, 0, 24 * 365) * 3600 * 1000),
    walSyncIntervalMs: seconds(env, "WAL_SYNC_INTERVAL", 1, 0.1, 3600),
    readReplicaRatio: num(env, "READ_REPLICA_RATIO", 0.5, 0, 1),
    acceptWritesWhenAllDown: bool(env, "ACCEPT_WRITES_WHEN_ALL_DOWN", true),
    maxBodyBytes,
    maxInflightBytes: maxInflightMb * 1024 * 1024,
    inflightWaitMs: seconds(env, "INFLIGHT_WAIT_TIMEOUT", 2, 0, 60),
    bodyMinBytesPerS: int(env, "BODY_MIN_KIB_PER_SECOND", 64, 0, 1_048_576) * 1024,
    bodyRateWindowMs: seconds(env, "BODY_RATE_WINDOW", 5, 0.1, 3600),
    walMaxDiskBytes: int(env, "WAL_MAX_DISK_MB", 10_240, 0, 100_000_000) * 1024 * 1024,
    walDiskReserveBytes: int(env, "WAL_DISK_RESERVE_MB", 16, 0, 100_000) * 1024 * 1024,
    mirrorSyncIntervalMs: seconds(env, "MIRROR_SYNC_INTERVAL", 5, 1, 3600),
    memorySampleIntervalMs: seconds(env, "MEMORY_SAMPLE_INTERVAL", 1, 1, 3600),
    consistencyCheckIntervalMs: seconds(env, "CONSISTENCY_CHECK_INTERVAL", 3600, 0, 7 * 24 * 3600),
    autoRepair: bool(env, "AUTO_REPAIR", true),
    nodeId: parseNodeId(env, port, options),
    nodeAddress: read(env, "NODE_ADDRESS") ?? null,
    nodeHeartbeatIntervalMs,
    leaseTtlMs,
  } satisfies Config);
}
