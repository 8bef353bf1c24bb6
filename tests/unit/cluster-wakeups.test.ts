/**
 * Wake-up hint payloads: what one node sends is what another reads, and anything else on
 * the channel (another version, junk) is ignored rather than acted on.
 */
import { expect, test } from "bun:test";
import { hintPayload, parseHint, type WakeupHint } from "../../src/cluster";

test("each kind of hint reads back as sent, with its sender", () => {
  const hints: WakeupHint[] = [
    { kind: "entry", collection: "0b1c7e9e-5a5e-4c1e-9d1e-2f1b3c4d5e6f" },
    { kind: "mapping", collection: null },
    { kind: "mapping", collection: "orders" },
    { kind: "switch", what: "maintenance", instance: "replica" },
    { kind: "switch", what: "simulation", instance: null },
  ];
  for (const hint of hints) expect(parseHint(hintPayload("lb-1:8000", hint))).toEqual({ ...hint, from: "lb-1:8000" });
});

test("payloads of another shape or version are ignored", () => {
  for (const payload of [
    "not json",
    "null",
    "42",
    JSON.stringify({ v: 2, from: "a", kind: "entry", collection: "x" }),
    JSON.stringify({ v: 1, kind: "entry", collection: "x" }),
    JSON.stringify({ v: 1, from: "a", kind: "entry" }),
    JSON.stringify({ v: 1, from: "a", kind: "switch", what: "reset", instance: null }),
    JSON.stringify({ v: 1, from: "a", kind: "unknown" }),
  ]) {
    expect(parseHint(payload)).toBeNull();
  }
});

test("a hint too large for NOTIFY fails at the sender", () => {
  expect(() => hintPayload("a", { kind: "entry", collection: "x".repeat(5000) })).toThrow(/over 4000 bytes/);
});
