/**
 * Adoption passes: a call made while a pass runs gets a pass that starts after it (the
 * running one may have listed the instances before the caller's reason to ask), and every
 * caller meanwhile shares that one further pass. A collection is reported lost by an instance
 * only when the instance was known to hold it before its listing began.
 */
import { expect, test } from "bun:test";
import { Adoption } from "../../src/collections/adoption";
import type { CollectionStore } from "../../src/collections/store";
import type { InstanceRegistry } from "../../src/instances/registry";
import type { Logger } from "../../src/observability/log";
import type { WriteAheadLog } from "../../src/wal/log";

/** One healthy instance whose database listings are answered when the test opens a gate. */
function harness(records: Array<{ tenant: string; database: string; name: string; status: string; instanceUuids: Map<string, string> }> = []) {
  const listings: Array<() => void> = [];
  const client = {
    json: () => new Promise((resolve) => listings.push(() => resolve({ ok: true, status: 200, json: [] }))),
  };
  const registry = { all: [{ name: "primary", priority: 0, healthy: true, client }], get: () => registry.all[0] } as unknown as InstanceRegistry;
  const collections = { list: () => records, byUuid: () => undefined } as unknown as CollectionStore;
  const quiet = { info() {}, warn() {}, debug() {}, error() {} } as unknown as Logger;
  const adoption = new Adoption(collections, registry, {} as WriteAheadLog, { requestTimeoutMs: 1000 }, quiet);
  /** Answers the listing a pass waits on: each pass lists default_tenant's databases once. */
  const answerListing = async () => {
    while (!listings.length) await Bun.sleep(1);
    listings.shift()!();
  };
  return { adoption, listings, answerListing };
}

test("a pass asked for while one runs starts after it, and callers meanwhile share it", async () => {
  const { adoption, listings, answerListing } = harness();
  const first = adoption.adoptOnce();
  // A pass lists at once: its first request is sent before adoptOnce returns.
  expect(listings.length).toBe(1);
  // Asked while the first pass runs: neither is that pass, and both are the same next one.
  const second = adoption.adoptOnce();
  const third = adoption.adoptOnce();
  expect(second).not.toBe(first);
  expect(third).toBe(second);
  await Bun.sleep(0);
  expect(listings.length).toBe(1);
  await answerListing();
  await first;
  // The next pass lists the instances anew.
  await answerListing();
  const [a, b] = await Promise.all([second, third]);
  expect(a).toBe(b);
  expect(listings.length).toBe(0);
  // With no pass running, a call starts one at once.
  const fourth = adoption.adoptOnce();
  expect(listings.length).toBe(1);
  await answerListing();
  expect((await fourth).scannedInstances).toEqual(["primary"]);
});

test("a collection an instance gained while the pass listed it is not reported lost; one it had before is", async () => {
  const record = { tenant: "default_tenant", database: "default_database", name: "items", status: "active", instanceUuids: new Map<string, string>() };
  const { adoption, answerListing } = harness([record]);
  const lost: string[] = [];
  adoption.onLost = (r, instance) => lost.push(`${r.name} on ${instance.name}`);
  // Replay creates the collection on the instance after its listing (which lacks it) was taken.
  const first = adoption.adoptOnce();
  record.instanceUuids.set("primary", "uuid-1");
  await answerListing();
  await first;
  expect(lost).toEqual([]);
  // Known before the listing began and missing from it: lost.
  const second = adoption.adoptOnce();
  await answerListing();
  await second;
  expect(lost).toEqual(["items on primary"]);
});
