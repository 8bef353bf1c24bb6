/**
 * The chaos checker's model: it allows exactly what Chroma's semantics and Jepsen's
 * outcomes allow, so a correct system never fails a run and a lost or resurrected write
 * always does.
 */
import { expect, test } from "bun:test";
import { possibilities, stateKey, type RecordEvent, type RecordWrite } from "./model";

const v = (document: string, metadata: Record<string, number | string> = { a: 1 }, embedding = [0.5, 1, -1, 0]) => ({ document, embedding, metadata });
const w = (kind: RecordWrite["kind"], value?: ReturnType<typeof v>): RecordWrite => ({ kind, ...(value ?? {}) });
let n = 0;
const ok = (write: RecordWrite): RecordEvent => ({ type: "write", write, outcome: "ok", opRef: `op${n++}` });
const maybe = (write: RecordWrite): RecordEvent => ({ type: "write", write, outcome: "indeterminate", opRef: `op${n++}` });
const failed = (write: RecordWrite): RecordEvent => ({ type: "write", write, outcome: "failed", opRef: `op${n++}` });
const read = (state: ReturnType<typeof v> | null): RecordEvent => ({ type: "read", observed: stateKey(state), opRef: `op${n++}` });
const finals = (events: RecordEvent[]) => [...possibilities(events).finalStates].sort();

test("ok writes follow Chroma: add of an existing id is ignored, upsert and update merge metadata per key, update of a missing id does nothing", () => {
  expect(finals([ok(w("add", v("x"))), ok(w("add", v("y", { b: 2 })))])).toEqual([stateKey(v("x"))]);
  expect(finals([ok(w("add", v("x", { a: 1, b: "s" }))), ok(w("upsert", v("y", { a: 2, c: 3 })))])).toEqual([stateKey(v("y", { a: 2, b: "s", c: 3 }))]);
  expect(finals([ok(w("update", v("x"))), ok(w("delete"))])).toEqual(["absent"]);
  expect(finals([ok(w("add", v("x"))), ok({ kind: "update", metadata: { z: "q" } })])).toEqual([stateKey(v("x", { a: 1, z: "q" }))]);
  expect(finals([ok(w("add", v("x"))), ok(w("delete")), ok(w("add", v("y")))])).toEqual([stateKey(v("y"))]);
});

test("a failed write leaves nothing; an indeterminate one may take effect at any later moment, or never", () => {
  expect(finals([ok(w("add", v("x"))), failed(w("delete"))])).toEqual([stateKey(v("x"))]);
  // The delete may land before or after the add (it timed out and was kept), or never.
  expect(finals([maybe(w("delete")), ok(w("upsert", v("x")))])).toEqual(["absent", stateKey(v("x"))].sort());
  expect(finals([ok(w("add", v("x"))), maybe(w("upsert", v("y", { b: 1 }))), ok(w("update", v("z", { c: 1 })))])).toEqual(
    [stateKey(v("z", { a: 1, c: 1 })), stateKey(v("z", { a: 1, b: 1, c: 1 })), stateKey(v("y", { a: 1, b: 1, c: 1 }))].sort(),
  );
});

test("reads must see every ok write before them", () => {
  expect(possibilities([ok(w("add", v("x"))), read(v("x")), ok(w("delete")), read(null)]).readAnomalies).toEqual([]);
  const stale = possibilities([ok(w("add", v("x"))), ok(w("delete")), read(v("x"))]);
  expect(stale.readAnomalies.map((a) => a.allowed)).toEqual([["absent"]]);
  expect(possibilities([ok(w("add", v("x"))), maybe(w("delete")), read(v("x")), read(null)]).readAnomalies).toEqual([]);
});
