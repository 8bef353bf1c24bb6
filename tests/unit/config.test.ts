/**
 * The environment contract: defaults, instance lists, durations in seconds, and a bad value
 * of any kind stops chroma-lb with a ConfigError that names the variable.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { ConfigError, loadConfig } from "../../src/config";

const two = { CHROMA_PRIMARY_URL: "http://127.0.0.1:8001", CHROMA_REPLICA_URL: "http://127.0.0.1:8002" };

/** Runs loadConfig and returns the ConfigError it throws (fails the test when it throws none). */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe("loadConfig", () => {
  test("fills every default when only the two instance URLs are set", () => {
    const config = loadConfig(two, { hostname: "lb-1" });
    expect({ ...config }).toEqual({
      port: 8000,
      host: "0.0.0.0",
      instances: [
        { name: "primary", url: "http://127.0.0.1:8001" },
        { name: "replica", url: "http://127.0.0.1:8002" },
      ],
      dataDir: "./data",
      databaseUrl: null,
      logStore: "sqlite",
      adminToken: null,
      authRequired: false,
      authTokensFile: null,
      declaredTokens: [],
      protectedCollections: ["global"],
      allowReset: false,
      logLevel: "info",
      alertWebhookUrl: null,
      healthCheckIntervalMs: 1000,
      healthCheckTimeoutMs: 500,
      healthFails: 2,
      healthPasses: 2,
      requestTimeoutMs: 30_000,
      walMaxMemoryMb: 400,
      walMaxWorkers: 3,
      replayStepEntriesMax: 10_000,
      walDefaultBatchSize: 50,
      walMaxBatchSize: 200,
      walMaxBatchBytes: 30 * 1024 * 1024,
      walRetentionMs: 24 * 3600 * 1000,
      walSyncIntervalMs: 1000,
      readReplicaRatio: 0.5,
      acceptWritesWhenAllDown: true,
      maxBodyBytes: 40 * 1024 * 1024,
      maxInflightBytes: 128 * 1024 * 1024,
      inflightWaitMs: 2000,
      bodyMinBytesPerS: 64 * 1024,
      bodyRateWindowMs: 5000,
      walMaxDiskBytes: 10_240 * 1024 * 1024,
      walDiskReserveBytes: 16 * 1024 * 1024,
      mirrorSyncIntervalMs: 5000,
      memorySampleIntervalMs: 1000,
      consistencyCheckIntervalMs: 3_600_000,
      autoRepair: true,
      alertMinIntervalMs: 300_000,
      alertLagMs: 60_000,
      alertBacklogEntries: 10_000,
      alertCheckIntervalMs: 5000,
      nodeId: "lb-1:8000",
      nodeAddress: null,
      nodeHeartbeatIntervalMs: 1000,
      leaseTtlMs: 6000,
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  test("strips trailing slashes from instance URLs", () => {
    const config = loadConfig({ CHROMA_PRIMARY_URL: "http://a:8000/", CHROMA_REPLICA_URL: "https://b:8000//" });
    expect(config.instances).toEqual([
      { name: "primary", url: "http://a:8000" },
      { name: "replica", url: "https://b:8000" },
    ]);
  });

  test("reads CHROMA_INSTANCES as ordered name=url pairs", () => {
    const config = loadConfig({ CHROMA_INSTANCES: "east=http://10.0.0.1:8000, west=http://10.0.0.2:8000/ ,backup_3=https://c.example:443" });
    expect(config.instances).toEqual([
      { name: "east", url: "http://10.0.0.1:8000" },
      { name: "west", url: "http://10.0.0.2:8000" },
      { name: "backup_3", url: "https://c.example:443" },
    ]);
  });

  test("takes durations in seconds with fractions and stores milliseconds", () => {
    const config = loadConfig({
      ...two,
      REQUEST_TIMEOUT: "0.5",
      HEALTH_CHECK_INTERVAL: "2.5",
      HEALTH_CHECK_TIMEOUT: "0.25",
      WAL_SYNC_INTERVAL: "0.1",
      WAL_RETENTION_HOURS: "0.5",
    });
    expect({
      requestTimeoutMs: config.requestTimeoutMs,
      healthCheckIntervalMs: config.healthCheckIntervalMs,
      healthCheckTimeoutMs: config.healthCheckTimeoutMs,
      walSyncIntervalMs: config.walSyncIntervalMs,
      walRetentionMs: config.walRetentionMs,
    }).toEqual({
      requestTimeoutMs: 500,
      healthCheckIntervalMs: 2500,
      healthCheckTimeoutMs: 250,
      walSyncIntervalMs: 100,
      walRetentionMs: 1800 * 1000,
    });
  });

  test("reads the other settings it is given", () => {
    const config = loadConfig({
      ...two,
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: "/var/lib/lb",
      DATABASE_URL: "postgresql://u:p@db:5432/x",
      ADMIN_TOKEN: "s3cret",
      PROTECTED_COLLECTIONS: "global, keep ,",
      ALLOW_RESET: "yes",
      LOG_LEVEL: "DEBUG",
      SLACK_WEBHOOK_URL: "https://hooks.example/x",
      WAL_MAX_BATCH_MB: "2",
      MAX_BODY_MB: "1",
      MAX_INFLIGHT_MB: "3",
      INFLIGHT_WAIT_TIMEOUT: "0.5",
      BODY_MIN_KIB_PER_SECOND: "8",
      BODY_RATE_WINDOW: "1.5",
      WAL_MAX_DISK_MB: "0",
      WAL_DISK_RESERVE_MB: "3",
      READ_REPLICA_RATIO: "0",
      ACCEPT_WRITES_WHEN_ALL_DOWN: "off",
    });
    expect({
      port: config.port,
      host: config.host,
      dataDir: config.dataDir,
      databaseUrl: config.databaseUrl,
      adminToken: config.adminToken,
      protectedCollections: config.protectedCollections,
      allowReset: config.allowReset,
      logLevel: config.logLevel,
      alertWebhookUrl: config.alertWebhookUrl,
      walMaxBatchBytes: config.walMaxBatchBytes,
      maxBodyBytes: config.maxBodyBytes,
      maxInflightBytes: config.maxInflightBytes,
      inflightWaitMs: config.inflightWaitMs,
      bodyMinBytesPerS: config.bodyMinBytesPerS,
      bodyRateWindowMs: config.bodyRateWindowMs,
      walMaxDiskBytes: config.walMaxDiskBytes,
      walDiskReserveBytes: config.walDiskReserveBytes,
      readReplicaRatio: config.readReplicaRatio,
      acceptWritesWhenAllDown: config.acceptWritesWhenAllDown,
    }).toEqual({
      port: 0,
      host: "127.0.0.1",
      dataDir: "/var/lib/lb",
      databaseUrl: "postgresql://u:p@db:5432/x",
      adminToken: "s3cret",
      protectedCollections: ["global", "keep"],
      allowReset: true,
      logLevel: "debug",
      alertWebhookUrl: "https://hooks.example/x",
      walMaxBatchBytes: 2 * 1024 * 1024,
      maxBodyBytes: 1024 * 1024,
      maxInflightBytes: 3 * 1024 * 1024,
      inflightWaitMs: 500,
      bodyMinBytesPerS: 8 * 1024,
      bodyRateWindowMs: 1500,
      walMaxDiskBytes: 0,
      walDiskReserveBytes: 3 * 1024 * 1024,
      readReplicaRatio: 0,
      acceptWritesWhenAllDown: false,
    });
  });

  test("MAX_INFLIGHT_MB follows a MAX_BODY_MB above its default, so one body always fits", () => {
    const config = loadConfig({ ...two, MAX_BODY_MB: "200" });
    expect([config.maxBodyBytes, config.maxInflightBytes]).toEqual([200 * 1024 * 1024, 200 * 1024 * 1024]);
  });

  test("treats empty and blank values as unset", () => {
    const config = loadConfig({ ...two, PORT: "", LOG_LEVEL: "   ", DATABASE_URL: "" });
    expect([config.port, config.logLevel, config.databaseUrl]).toEqual([8000, "info", null]);
  });
});

describe("bad values throw a ConfigError naming the variable", () => {
  const cases: Array<[string, Record<string, string>, string]> = [
    ["PORT not a number", { ...two, PORT: "abc" }, "PORT"],
    ["PORT out of range", { ...two, PORT: "70000" }, "PORT"],
    ["PORT with a fraction", { ...two, PORT: "80.5" }, "PORT"],
    ["WAL_MAX_WORKERS of 0", { ...two, WAL_MAX_WORKERS: "0" }, "WAL_MAX_WORKERS"],
    ["ALLOW_RESET neither true nor false", { ...two, ALLOW_RESET: "maybe" }, "ALLOW_RESET"],
    ["ACCEPT_WRITES_WHEN_ALL_DOWN neither true nor false", { ...two, ACCEPT_WRITES_WHEN_ALL_DOWN: "sometimes" }, "ACCEPT_WRITES_WHEN_ALL_DOWN"],
    ["CHROMA_PRIMARY_URL not a URL", { CHROMA_PRIMARY_URL: "notaurl" }, "CHROMA_PRIMARY_URL"],
    ["CHROMA_PRIMARY_URL not http", { CHROMA_PRIMARY_URL: "ftp://a:21" }, "CHROMA_PRIMARY_URL"],
    ["CHROMA_REPLICA_URL not a URL", { CHROMA_PRIMARY_URL: "http://a:1", CHROMA_REPLICA_URL: "b:2" }, "CHROMA_REPLICA_URL"],
    ["a replica without a primary", { CHROMA_REPLICA_URL: "http://b:2" }, "CHROMA_PRIMARY_URL"],
    ["no instance at all", {}, "CHROMA_PRIMARY_URL"],
    ["LOG_LEVEL unknown", { ...two, LOG_LEVEL: "loud" }, "LOG_LEVEL"],
    ["CHROMA_INSTANCES without =", { CHROMA_INSTANCES: "http://a:8000" }, "CHROMA_INSTANCES"],
    ["CHROMA_INSTANCES with an empty name", { CHROMA_INSTANCES: "=http://a:8000" }, "CHROMA_INSTANCES"],
    ["CHROMA_INSTANCES with an uppercase name", { CHROMA_INSTANCES: "East=http://a:8000" }, "CHROMA_INSTANCES"],
    ["CHROMA_INSTANCES with a bad URL", { CHROMA_INSTANCES: "a=notaurl" }, "CHROMA_INSTANCES"],
    ["CHROMA_INSTANCES with a trailing comma", { CHROMA_INSTANCES: "a=http://a:1," }, "CHROMA_INSTANCES"],
    ["CHROMA_INSTANCES with duplicate names", { CHROMA_INSTANCES: "a=http://a:1,a=http://b:2" }, "CHROMA_INSTANCES"],
    ["CHROMA_INSTANCES beside CHROMA_PRIMARY_URL", { CHROMA_INSTANCES: "a=http://a:1", CHROMA_PRIMARY_URL: "http://b:2" }, "CHROMA_INSTANCES"],
    ["WAL_DEFAULT_BATCH_SIZE above WAL_MAX_BATCH_SIZE", { ...two, WAL_DEFAULT_BATCH_SIZE: "300", WAL_MAX_BATCH_SIZE: "200" }, "WAL_DEFAULT_BATCH_SIZE"],
    ["REQUEST_TIMEOUT negative", { ...two, REQUEST_TIMEOUT: "-1" }, "REQUEST_TIMEOUT"],
    ["HEALTH_CHECK_INTERVAL not a number", { ...two, HEALTH_CHECK_INTERVAL: "1s" }, "HEALTH_CHECK_INTERVAL"],
    ["READ_REPLICA_RATIO above 1", { ...two, READ_REPLICA_RATIO: "1.5" }, "READ_REPLICA_RATIO"],
    ["ALERT_WEBHOOK_URL not a URL", { ...two, ALERT_WEBHOOK_URL: "hooks" }, "ALERT_WEBHOOK_URL"],
    ["SLACK_WEBHOOK_URL not a URL", { ...two, SLACK_WEBHOOK_URL: "hooks" }, "SLACK_WEBHOOK_URL"],
    ["MAX_INFLIGHT_MB below MAX_BODY_MB", { ...two, MAX_BODY_MB: "40", MAX_INFLIGHT_MB: "39" }, "MAX_INFLIGHT_MB"],
    ["WAL_MAX_DISK_MB negative", { ...two, WAL_MAX_DISK_MB: "-1" }, "WAL_MAX_DISK_MB"],
    ["INFLIGHT_WAIT_TIMEOUT above a minute", { ...two, INFLIGHT_WAIT_TIMEOUT: "61" }, "INFLIGHT_WAIT_TIMEOUT"],
  ];

  for (const [what, env, variable] of cases) {
    test(what, () => {
      const error = configError(env);
      expect(error.variable).toBe(variable);
      expect(error.message.startsWith(`${variable}: expected `)).toBe(true);
    });
  }

  test("the message says what was given", () => {
    expect(configError({ ...two, PORT: "abc" }).message).toBe('PORT: expected an integer from 0 to 65535, got "abc"');
    expect(configError({ ...two, WAL_DEFAULT_BATCH_SIZE: "300" }).message).toBe(
      'WAL_DEFAULT_BATCH_SIZE: expected at most WAL_MAX_BATCH_SIZE (200), got "300"',
    );
  });

  test("DATABASE_URL that is not postgres:// is refused without echoing its value", () => {
    const secret = "mysql://admin:hunter2@db.internal:3306/prod";
    const error = configError({ ...two, DATABASE_URL: secret });
    expect(error.variable).toBe("DATABASE_URL");
    expect(error.message).toContain("postgres://");
    for (const part of ["hunter2", "admin", "db.internal", "mysql"]) expect(error.message).not.toContain(part);
  });
});

describe("secrets in bad values are never echoed", () => {
  test("a webhook URL without its scheme is refused naming the variable set, without its token", () => {
    for (const variable of ["ALERT_WEBHOOK_URL", "SLACK_WEBHOOK_URL"]) {
      const error = configError({ ...two, [variable]: "hooks.slack.com/services/T0/B0/s3cr3tT0ken" });
      expect(error.message).toBe(`${variable}: expected an http(s) URL, got "(hidden)"`);
    }
  });
});

describe("bun run src/index.ts", () => {
  test("stops with exit code 1 and one stderr line naming PORT when PORT is bad", async () => {
    const root = join(import.meta.dir, "..", "..");
    const env: Record<string, string> = {};
    // Only what a process needs to run; no chroma-lb setting leaks in from the test runner.
    for (const key of ["PATH", "HOME", "TMPDIR"]) if (process.env[key]) env[key] = process.env[key]!;
    const child = Bun.spawn(["bun", "run", "src/index.ts"], {
      cwd: root,
      env: { ...env, PORT: "abc", CHROMA_PRIMARY_URL: "http://127.0.0.1:1" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [exitCode, stdout, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]);
    expect(exitCode).toBe(1);
    const lines = stderr.split("\n").filter((line) => line.trim() !== "");
    expect(lines).toEqual(['chroma-lb: bad configuration: PORT: expected an integer from 0 to 65535, got "abc"']);
    expect(stdout).toBe("");
  });
});

describe("access control settings", () => {
  test("AUTH_REQUIRED=true with neither ADMIN_TOKEN nor AUTH_TOKENS_FILE is refused", () => {
    expect(configError({ ...two, AUTH_REQUIRED: "true" }).message).toBe(
      'AUTH_REQUIRED: expected ADMIN_TOKEN or AUTH_TOKENS_FILE to be set as well (no token could be made otherwise), got "true"',
    );
    expect(loadConfig({ ...two, AUTH_REQUIRED: "true", ADMIN_TOKEN: "a" }).authRequired).toBe(true);
  });

  test("AUTH_TOKENS_FILE is read and checked at start; its hashes are never echoed", () => {
    const dir = mkdtempSync(join(tmpdir(), "chroma-lb-tokens-"));
    try {
      const file = join(dir, "tokens.json");
      const hash = "a".repeat(64);
      writeFileSync(file, JSON.stringify({ tokens: [{ name: "cms", role: "write", tenants: ["acme"], sha256: hash }] }));
      expect(loadConfig({ ...two, AUTH_TOKENS_FILE: file }).declaredTokens).toEqual([{ name: "cms", role: "write", tenants: ["acme"], databases: ["*"], sha256: hash }]);
      writeFileSync(file, JSON.stringify({ tokens: [{ name: "cms", role: "owner", sha256: hash }] }));
      expect(configError({ ...two, AUTH_TOKENS_FILE: file }).message).toBe(`AUTH_TOKENS_FILE: expected ${file} to hold role read, write or admin at tokens[0], got "owner"`);
      writeFileSync(file, JSON.stringify({ tokens: [{ name: "cms", role: "read", sha256: "not-a-hash" }] }));
      expect(configError({ ...two, AUTH_TOKENS_FILE: file }).message).toBe(`AUTH_TOKENS_FILE: expected ${file} to hold a lowercase hex sha256 at tokens[0], got "(hidden)"`);
      expect(configError({ ...two, AUTH_TOKENS_FILE: join(dir, "missing.json") }).message).toContain("AUTH_TOKENS_FILE: expected a readable file");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("CHROMA_INSTANCE_HEADERS_<NAME> is a JSON object of header names to strings, per instance", () => {
    const config = loadConfig({
      CHROMA_INSTANCES: "east=http://a:8000,west-2=http://b:8000",
      CHROMA_INSTANCE_HEADERS_WEST_2: '{"Authorization":"Bearer s3cret","X-Team":"a=b;c"}',
    });
    expect(config.instances).toEqual([
      { name: "east", url: "http://a:8000" },
      { name: "west-2", url: "http://b:8000", headers: { Authorization: "Bearer s3cret", "X-Team": "a=b;c" } },
    ]);
    expect(configError({ ...two, CHROMA_INSTANCE_HEADERS_PRIMARY: "Authorization=Bearer s3cret" }).message).toBe(
      'CHROMA_INSTANCE_HEADERS_PRIMARY: expected a JSON object of header names to strings, such as {"Authorization":"Bearer s3cret"}, got "(hidden: not JSON)"',
    );
    expect(configError({ ...two, CHROMA_INSTANCE_HEADERS_REPLICA: '{"Host":"x"}' }).message).toContain("CHROMA_INSTANCE_HEADERS_REPLICA: expected header names other than Host");
    expect(configError({ ...two, CHROMA_INSTANCE_HEADERS_REPLICA: '{"X-A":1}' }).message).toBe('CHROMA_INSTANCE_HEADERS_REPLICA: expected a string without line breaks for X-A, got "(hidden)"');
  });
});
