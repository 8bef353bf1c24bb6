/**
 * Adoption passes: a call made while a pass runs gets a pass that starts after it (the
 * running one may have listed the instances before the caller's reason to ask), and every
 * caller meanwhile shares that one further pass.
 */
import { expect, test } from "bun:test";
import { Adoption } from "../../src/collections/adoption";
import type { CollectionStore } from "../../src/collections/store";
import type { InstanceRegistry } from "../../src/instances/registry";
import type { Logger } from "../../src/observability/log";
import type { WriteAheadLog } from "../../src/wal/log";

/** One healthy instance whose database listings are answered when the test opens a gate. */
function harness() {
  const listings: Array<() => void> = [];
  const client = {
    json: () => new Promise((resolve) => listings.push(() => resolve({ ok: true, status: 200, json: [] }))),
  };
  const registry = { all: [{ name: "primary", priority: 0, healthy: true, client }], get: () => registry.all[0] } as unknown as InstanceRegistry;
  const collections = { list: () => [] } as unknown as CollectionStore;
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
