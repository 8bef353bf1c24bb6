/**
 * The log view reloaded from the store (several nodes): a reload never undoes what this
 * node changed while the reload was reading, and what it read from other nodes is kept.
 */
import { expect, test } from "bun:test";
import type { OwedRow } from "../../src/wal/types";
import { LogView } from "../../src/wal/view";

const row = (instance: string, seq: number, partition = "c1"): OwedRow => ({
  instance,
  seq,
  partition,
  kind: "records",
  createdAtMs: Date.now(),
  state: "ready",
  attempts: 0,
  lastError: null,
});

test("changes made while a reload reads are applied again on top of what it read", () => {
  const view = new LogView(["primary", "replica"]);
  view.load({ headSeq: 2, owed: [row("replica", 1), row("replica", 2)], divergences: [] });
  view.startJournal();
  // While the reload reads, this node records that the replica applied entry 1, and appends entry 3.
  view.removed("replica", "c1", [1]);
  view.appended([{ seq: 3, partition: "c1", kind: "records", op: "add", tenant: "t", database: "d", collectionId: "c1", name: null, body: null, createdAtMs: Date.now(), state: "new", appliedBy: null, bodyBytes: 0 }]);
  // What the reload read: taken before entry 1 was recorded, with entry 4 of another node.
  view.replayJournal({ headSeq: 4, owed: [row("replica", 1), row("replica", 2), row("replica", 4)], divergences: [] });
  expect(view.owedPartitions("replica")).toEqual(["c1"]);
  expect(view.pendingCount("replica")).toBe(3); // 2, 3 and 4: not 1
  expect(view.pendingCount("primary")).toBe(1); // 3, appended here
  expect(view.headSeq()).toBe(4);
  expect(view.isCaughtUp("replica", "c1", 1)).toBe(true);
  expect(view.isCaughtUp("replica", "c1", 2)).toBe(false);
});

test("a reload that failed drops its journal and leaves the view as it was", () => {
  const view = new LogView(["primary"]);
  view.load({ headSeq: 1, owed: [row("primary", 1)], divergences: [] });
  view.startJournal();
  view.removed("primary", "c1", [1]);
  view.replayJournal(null);
  expect(view.pendingCount("primary")).toBe(0);
  // Journaling ended: later changes are not replayed by a later reload.
  view.removed("primary", "c1", [1]);
  view.load({ headSeq: 1, owed: [row("primary", 1)], divergences: [] });
  expect(view.pendingCount("primary")).toBe(1);
});
