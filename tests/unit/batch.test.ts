/**
 * takeBatch merges consecutive log entries into one replay request only when applying the
 * merged request is the same as applying the entries one by one.
 */
import { describe, expect, test } from "bun:test";
import { takeBatch, type BatchLimits } from "../../src/replay/batch";
import type { EntryOp, PendingEntry } from "../../src/wal/log";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const collectionId = "6f1c2a4e-0b7d-4c1e-9a55-3f2d8e7b6a10";

let nextSeq = 1;
function entry(op: EntryOp, body: unknown, overrides: Partial<PendingEntry> = {}): PendingEntry {
  const bytes = body === null ? null : encoder.encode(typeof body === "string" ? body : JSON.stringify(body));
  return {
    seq: nextSeq++,
    createdAtMs: 1_700_000_000_000,
    partition: collectionId,
    kind: "records",
    op,
    tenant: "default_tenant",
    database: "default_database",
    collectionId,
    name: null,
    body: bytes,
    bodyBytes: bytes?.byteLength ?? 0,
    state: "ready",
    appliedBy: "primary",
    attempts: 0,
    lastError: null,
    ...overrides,
  };
}

const roomy: BatchLimits = { entriesMax: 100, recordsMax: 1000, bytesMax: 1024 * 1024 };

const seqs = (entries: PendingEntry[]) => entries.map((e) => e.seq);
const bodyOf = (body: Uint8Array | null) => (body === null ? null : JSON.parse(decoder.decode(body)));

describe("takeBatch merges", () => {
  test("base64 and float embeddings, decoding the base64 ones to the same float32 values", () => {
    // 1.5 and -2.25 are exact in float32; "AADAPwAAEMA=" is their little-endian encoding.
    const a = entry("add", { ids: ["a"], embeddings: ["AADAPwAAEMA="] });
    const b = entry("add", { ids: ["b"], embeddings: [[0.5, 4]] });
    const c = entry("add", { ids: ["c"], embeddings: ["AADAPwAAEMA="] });
    const batch = takeBatch([a, b, c], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq, c.seq]);
    expect(bodyOf(batch.body)).toEqual({ ids: ["a", "b", "c"], embeddings: [[1.5, -2.25], [0.5, 4], [1.5, -2.25]] });
  });

  test("base64 embeddings alone stay base64", () => {
    const a = entry("upsert", { ids: ["a"], embeddings: ["AADAPwAAEMA="] });
    const b = entry("upsert", { ids: ["b"], embeddings: ["AACAPw=="] });
    expect(bodyOf(takeBatch([a, b], roomy).body)).toEqual({ ids: ["a", "b"], embeddings: ["AADAPwAAEMA=", "AACAPw=="] });
  });

  test("consecutive adds into one body, field by field in log order", () => {
    const a = entry("add", { ids: ["a"], embeddings: [[1, 2]], documents: ["doc a"], metadatas: [{ k: 1 }] });
    const b = entry("add", { ids: ["b", "c"], embeddings: [[3, 4], [5, 6]], documents: ["doc b", "doc c"], metadatas: [null, { k: 3 }] });
    const batch = takeBatch([a, b], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq]);
    expect(bodyOf(batch.body)).toEqual({
      ids: ["a", "b", "c"],
      embeddings: [[1, 2], [3, 4], [5, 6]],
      documents: ["doc a", "doc b", "doc c"],
      metadatas: [{ k: 1 }, null, { k: 3 }],
    });
  });

  test("consecutive upserts", () => {
    const a = entry("upsert", { ids: ["a"], embeddings: [[1]] });
    const b = entry("upsert", { ids: ["b"], embeddings: [[2]] });
    const c = entry("upsert", { ids: ["c"], embeddings: [[3]] });
    const batch = takeBatch([a, b, c], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq, c.seq]);
    expect(bodyOf(batch.body)).toEqual({ ids: ["a", "b", "c"], embeddings: [[1], [2], [3]] });
  });

  test("consecutive deletes by ids", () => {
    const a = entry("delete", { ids: ["a", "b"] });
    const b = entry("delete", { ids: ["c"], where: null });
    const batch = takeBatch([a, b], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq]);
    expect(bodyOf(batch.body)).toEqual({ ids: ["a", "b", "c"] });
  });

  test("only the leading run and leaves the rest for the next batch", () => {
    const a = entry("add", { ids: ["a"], embeddings: [[1]] });
    const b = entry("add", { ids: ["b"], embeddings: [[2]] });
    const c = entry("upsert", { ids: ["c"], embeddings: [[3]] });
    const d = entry("add", { ids: ["d"], embeddings: [[4]] });
    const batch = takeBatch([a, b, c, d], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq]);
    expect(bodyOf(batch.body)).toEqual({ ids: ["a", "b"], embeddings: [[1], [2]] });
  });
});

describe("takeBatch never merges", () => {
  const neverMerged: Array<[string, () => PendingEntry[]]> = [
    ["an add with an upsert", () => [entry("add", { ids: ["a"], embeddings: [[1]] }), entry("upsert", { ids: ["b"], embeddings: [[2]] })]],
    ["an upsert with an add", () => [entry("upsert", { ids: ["a"], embeddings: [[1]] }), entry("add", { ids: ["b"], embeddings: [[2]] })]],
    ["a delete with an add", () => [entry("delete", { ids: ["a"] }), entry("add", { ids: ["b"], embeddings: [[2]] })]],
    ["updates", () => [entry("update", { ids: ["a"], documents: ["x"] }), entry("update", { ids: ["b"], documents: ["y"] })]],
    [
      "entries with different field sets",
      () => [entry("add", { ids: ["a"], embeddings: [[1]], documents: ["x"] }), entry("add", { ids: ["b"], embeddings: [[2]] })],
    ],
    [
      "an entry whose field is null with one that carries it",
      () => [entry("add", { ids: ["a"], embeddings: [[1]], documents: null }), entry("add", { ids: ["b"], embeddings: [[2]], documents: ["y"] })],
    ],
    [
      "an entry mixing base64 and float embeddings in itself",
      () => [entry("add", { ids: ["a", "c"], embeddings: ["AACAPw==", [2]] }), entry("add", { ids: ["b"], embeddings: [[1]] })],
    ],
    ["adds whose ids overlap", () => [entry("add", { ids: ["a", "b"], embeddings: [[1], [2]] }), entry("add", { ids: ["b"], embeddings: [[3]] })]],
    ["upserts of the same id", () => [entry("upsert", { ids: ["a"], embeddings: [[1]] }), entry("upsert", { ids: ["a"], embeddings: [[2]] })]],
    ["deletes whose ids overlap", () => [entry("delete", { ids: ["a"] }), entry("delete", { ids: ["a", "b"] })]],
    ["a delete with a where filter", () => [entry("delete", { ids: ["a"], where: { k: 1 } }), entry("delete", { ids: ["b"] })]],
    ["a delete by ids with a later filtered delete", () => [entry("delete", { ids: ["a"] }), entry("delete", { ids: ["b"], where: { k: 1 } })]],
    ["a delete with where_document", () => [entry("delete", { ids: ["a"], where_document: { $contains: "x" } }), entry("delete", { ids: ["b"] })]],
    ["a delete without ids", () => [entry("delete", { ids: [] }), entry("delete", { ids: ["b"] })]],
    ["an add carrying an unknown field", () => [entry("add", { ids: ["a"], embeddings: [[1]], extra: 1 }), entry("add", { ids: ["b"], embeddings: [[2]], extra: 1 })]],
    ["an entry whose body is not JSON", () => [entry("add", "{not json"), entry("add", { ids: ["b"], embeddings: [[2]] })]],
    ["an entry without a body", () => [entry("add", null), entry("add", { ids: ["b"], embeddings: [[2]] })]],
    ["collection operations", () => [entry("modify_collection", { new_name: "x" }, { kind: "collection" }), entry("add", { ids: ["b"], embeddings: [[2]] })]],
  ];

  for (const [what, make] of neverMerged) {
    test(what, () => {
      const entries = make();
      const batch = takeBatch(entries, roomy);
      expect(seqs(batch.entries)).toEqual([entries[0]!.seq]);
      // A lone entry is sent as it was logged: the very same bytes.
      expect(batch.body).toBe(entries[0]!.body);
    });
  }

  test("a later entry that differs stops the run there", () => {
    const a = entry("add", { ids: ["a"], embeddings: [[1]] });
    const b = entry("add", { ids: ["b"], embeddings: [[2]] });
    const c = entry("add", { ids: ["a"], embeddings: [[3]] });
    const batch = takeBatch([a, b, c], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq]);
    expect(bodyOf(batch.body)).toEqual({ ids: ["a", "b"], embeddings: [[1], [2]] });
  });
});

describe("takeBatch respects its limits", () => {
  const adds = (n: number, idsEach = 1) =>
    Array.from({ length: n }, (_, i) =>
      entry("add", { ids: Array.from({ length: idsEach }, (_, j) => `r${i}-${j}`), embeddings: Array.from({ length: idsEach }, () => [i]) }),
    );

  test("entriesMax", () => {
    const entries = adds(5);
    const batch = takeBatch(entries, { ...roomy, entriesMax: 3 });
    expect(seqs(batch.entries)).toEqual(seqs(entries.slice(0, 3)));
    expect(bodyOf(batch.body)).toEqual({ ids: ["r0-0", "r1-0", "r2-0"], embeddings: [[0], [1], [2]] });
  });

  test("entriesMax of 1 sends the first entry alone", () => {
    const entries = adds(3);
    const batch = takeBatch(entries, { ...roomy, entriesMax: 1 });
    expect(seqs(batch.entries)).toEqual([entries[0]!.seq]);
    expect(batch.body).toBe(entries[0]!.body);
  });

  test("recordsMax counts ids, not entries", () => {
    const entries = adds(4, 2);
    expect(seqs(takeBatch(entries, { ...roomy, recordsMax: 5 }).entries)).toEqual(seqs(entries.slice(0, 2)));
    expect(seqs(takeBatch(entries, { ...roomy, recordsMax: 6 }).entries)).toEqual(seqs(entries.slice(0, 3)));
  });

  test("bytesMax counts the logged bodies", () => {
    const entries = adds(4);
    const size = entries[0]!.bodyBytes;
    expect(entries.every((e) => e.bodyBytes === size)).toBe(true);
    expect(seqs(takeBatch(entries, { ...roomy, bytesMax: size * 2 }).entries)).toEqual(seqs(entries.slice(0, 2)));
    expect(seqs(takeBatch(entries, { ...roomy, bytesMax: size * 3 - 1 }).entries)).toEqual(seqs(entries.slice(0, 2)));
  });

  test("an entry larger than every limit is still sent alone", () => {
    const big = entry("add", { ids: ["a", "b", "c"], embeddings: [[1], [2], [3]] });
    const next = entry("add", { ids: ["d"], embeddings: [[4]] });
    const batch = takeBatch([big, next], { entriesMax: 10, recordsMax: 2, bytesMax: 4 });
    expect(seqs(batch.entries)).toEqual([big.seq]);
    expect(batch.body).toBe(big.body);
  });
});

describe("takeBatch alone", () => {
  test("a single entry keeps its original bytes (the same Uint8Array)", () => {
    // Key order and spacing that JSON.stringify would not reproduce.
    const only = entry("add", '{ "embeddings": [[1.0]], "ids": ["a"] }');
    const batch = takeBatch([only], roomy);
    expect(batch.entries).toEqual([only]);
    expect(batch.body).toBe(only.body);
  });

  test("no entries gives an empty batch", () => {
    expect(takeBatch([], roomy)).toEqual({ entries: [], body: null });
  });
});
