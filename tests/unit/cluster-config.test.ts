/**
 * The cluster settings: NODE_ID's default and shape, and a lease time that cannot be
 * shorter than three heartbeats (one slow renewal must not cost a node its leases).
 */
import { expect, test } from "bun:test";
import { ConfigError, loadConfig } from "../../src/config";

const two = { CHROMA_PRIMARY_URL: "http://127.0.0.1:8001", CHROMA_REPLICA_URL: "http://127.0.0.1:8002" };

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig({ ...two, ...env });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

test("NODE_ID defaults to the host name and port", () => {
  expect(loadConfig({ ...two, PORT: "8123" }, { hostname: "lb-a.example" }).nodeId).toBe("lb-a.example:8123");
});

test("with PORT=0 the default NODE_ID takes the process id, since every node on the machine would be host:0", () => {
  expect(loadConfig({ ...two, PORT: "0" }, { hostname: "lb-a", pid: 4242 }).nodeId).toBe("lb-a:pid4242");
});

test("characters outside the NODE_ID alphabet in a host name are replaced", () => {
  expect(loadConfig(two, { hostname: "my host/1" }).nodeId).toBe("my-host-1:8000");
});

test("NODE_ID is taken as given when it fits the alphabet", () => {
  expect(loadConfig({ ...two, NODE_ID: "chroma-lb-0.chroma-lb:8000" }).nodeId).toBe("chroma-lb-0.chroma-lb:8000");
});

test("a NODE_ID with spaces, quotes or over 128 characters is refused, naming the variable", () => {
  for (const bad of ["two words", "quote'd", "x".repeat(129), "-leading-dash"]) {
    expect(configError({ NODE_ID: bad }).variable).toBe("NODE_ID");
  }
});

test("lease time and heartbeat interval take seconds", () => {
  const config = loadConfig({ ...two, NODE_HEARTBEAT_INTERVAL: "2", LEASE_TTL_SECONDS: "7.5" });
  expect([config.nodeHeartbeatIntervalMs, config.leaseTtlMs]).toEqual([2000, 7500]);
});

test("a lease time under three heartbeat intervals is refused", () => {
  const error = configError({ NODE_HEARTBEAT_INTERVAL: "3", LEASE_TTL_SECONDS: "8" });
  expect(error.variable).toBe("LEASE_TTL_SECONDS");
  expect(error.message).toContain("9 s");
});

test("heartbeats faster than croner's one second, and lease times under 3 s, are refused", () => {
  expect(configError({ NODE_HEARTBEAT_INTERVAL: "0.5" }).variable).toBe("NODE_HEARTBEAT_INTERVAL");
  expect(configError({ LEASE_TTL_SECONDS: "2" }).variable).toBe("LEASE_TTL_SECONDS");
});
