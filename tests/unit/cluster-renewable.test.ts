/**
 * The cluster's renewable Postgres client: calls go to the current client, a renewal ends
 * the old one, and a node whose client leaves its checks unanswered replaces it.
 */
import { expect, test } from "bun:test";
import type postgres from "postgres";
import { ClusterNode, type ClusterNodeDeps } from "../../src/cluster/node";
import { renewableClient } from "../../src/cluster/renewable";
import { createLogger } from "../../src/observability/log";

/** A stand-in for a postgres.js client that records what it was asked. */
function fakeClient(name: string, calls: string[]): postgres.Sql {
  const client = (strings: TemplateStringsArray, ...values: unknown[]) => {
    calls.push(`${name}: ${strings.join("?")} ${JSON.stringify(values)}`);
    return Promise.resolve([]);
  };
  return Object.assign(client, {
    json: (value: unknown) => ({ json: value, from: name }),
    end: (options: unknown) => {
      calls.push(`${name}: end ${JSON.stringify(options)}`);
      return Promise.resolve();
    },
  }) as unknown as postgres.Sql;
}

test("calls go to the current client; a renewal makes a new one and ends the old one", async () => {
  const calls: string[] = [];
  const names = ["first", "second"];
  const client = renewableClient(() => fakeClient(names.shift()!, calls));
  await client.sql`select ${1}`;
  expect((client.sql.json as unknown as (v: unknown) => { from: string })({ a: 1 }).from).toBe("first");
  client.renew();
  await client.sql`select ${2}`;
  expect(calls).toEqual(["first: select ? [1]", "first: end {\"timeout\":0}", "second: select ? [2]"]);
  expect(client.made).toBe(2);
});

test("a node whose cluster client leaves three checks in a row unanswered replaces it", async () => {
  const lines: string[] = [];
  const deps = {
    // Nothing listens on port 1: every statement fails, as a client that stopped answering does.
    config: { databaseUrl: "postgres://postgres@127.0.0.1:1/none", nodeId: "n", nodeAddress: "http://n", nodeHeartbeatIntervalMs: 1000, leaseTtlMs: 1500, alertMinIntervalMs: 60_000 },
    log: createLogger("debug", (line) => lines.push(line)),
    registry: {} as ClusterNodeDeps["registry"],
    collections: {} as ClusterNodeDeps["collections"],
  } satisfies ClusterNodeDeps;
  const node = new ClusterNode(deps);
  try {
    expect(await node.clientCheckOnce()).toBe(false);
    expect(await node.clientCheckOnce()).toBe(false);
    expect(lines.some((l) => l.includes("stopped answering"))).toBe(false);
    expect(await node.clientCheckOnce()).toBe(false);
    expect(lines.filter((l) => l.includes("the cluster's Postgres client stopped answering; a new one takes its place"))).toHaveLength(1);
  } finally {
    await node.stop().catch(() => {});
  }
});
