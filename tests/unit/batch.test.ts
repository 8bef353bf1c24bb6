/**
 * takeBatch merges consecutive log entries into one replay request only when applying the
 * merged request is the same as applying the entries one by one.
 */
import { describe, expect, test } from "bun:test";
import { takeBatch, type BatchLimits } from "../../src/replay/batch";
import type { EntryOp, PendingEntry } from "../../src/wal/log";
import { seededRandom } from "../support/random";

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

/** The merged body as text, to compare byte for byte. */
const textOf = (body: Uint8Array | null) => (body === null ? null : decoder.decode(body));

describe("takeBatch merges", () => {
  test("base64 embeddings of one dimension, as they were sent", () => {
    // 1.5, -2.25 and 0.5, 4: exact float32 values, little-endian.
    const a = entry("upsert", { ids: ["a"], embeddings: ["AADAPwAAEMA="] });
    const b = entry("upsert", { ids: ["b"], embeddings: ["AAAAPwAAgEA="] });
    expect(textOf(takeBatch([a, b], roomy).body)).toBe('{"ids":["a","b"],"embeddings":["AADAPwAAEMA=","AAAAPwAAgEA="]}');
  });

  test("base64 written with escaped slashes, keeping the escapes", () => {
    const a = entry("add", String.raw`{"ids":["a"],"embeddings":["AAAA\/w=="]}`);
    const b = entry("add", { ids: ["b"], embeddings: ["AACAPw=="] });
    expect(textOf(takeBatch([a, b], roomy).body)).toBe(String.raw`{"ids":["a","b"],"embeddings":["AAAA\/w==","AACAPw=="]}`);
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

describe("takeBatch keeps the bytes the clients sent", () => {
  test("numbers: 1.0 stays a float, big integers keep their digits, -0.0 its sign", () => {
    const a = entry("add", '{"ids":["a"],"embeddings":[[1.0,-0.0,1e-7]],"metadatas":[{"f":1.0,"big":9007199254740993,"huge":1E+300}]}');
    const b = entry("add", '{"ids":["b"],"embeddings":[[2,0.1,-1.5E-3]],"metadatas":[{"f":2.50,"big":-9007199254740993,"huge":1e300}]}');
    const batch = takeBatch([a, b], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq]);
    expect(textOf(batch.body)).toBe(
      '{"ids":["a","b"],"embeddings":[[1.0,-0.0,1e-7],[2,0.1,-1.5E-3]],' +
        '"metadatas":[{"f":1.0,"big":9007199254740993,"huge":1E+300},{"f":2.50,"big":-9007199254740993,"huge":1e300}]}',
    );
  });

  test("strings: escapes and raw characters as written", () => {
    // Raw emoji stay out of String.raw: Bun's transpiler writes them there as `\u{...}` escapes.
    const a = entry("add", String.raw`{"ids":["\u00e9"],"documents":["\\ and \"q\" and \u00e9 and \ud83d\ude00"]}`);
    const b = entry("add", '{"ids":["ê"],"documents":["😀 raw"]}');
    const batch = takeBatch([a, b], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq]);
    expect(textOf(batch.body)).toBe(
      String.raw`{"ids":["\u00e9",` + '"ê"],"documents":[' + String.raw`"\\ and \"q\" and \u00e9 and \ud83d\ude00",` + '"😀 raw"]}',
    );
  });

  test("nested metadata, unchanged", () => {
    const a = entry("upsert", '{"ids":["a"],"metadatas":[{"k":{"deep":[1.0,{"x":null}]},"t":true}]}');
    const b = entry("upsert", '{"ids":["b"],"metadatas":[null]}');
    expect(textOf(takeBatch([a, b], roomy).body)).toBe('{"ids":["a","b"],"metadatas":[{"k":{"deep":[1.0,{"x":null}]},"t":true},null]}');
  });

  test("whitespace inside elements kept, between them dropped", () => {
    const a = entry("add", ' { "ids" : [ "a" , "b" ] ,\n "embeddings" : [ [ 1.0 , 2 ] ,\t[3,4] ] , "documents" : null } ');
    const b = entry("add", '{"embeddings":[[5,6]],"ids":["c"]}');
    const batch = takeBatch([a, b], roomy);
    expect(seqs(batch.entries)).toEqual([a.seq, b.seq]);
    expect(textOf(batch.body)).toBe('{"ids":["a","b","c"],"embeddings":[[ 1.0 , 2 ],[3,4],[5,6]]}');
  });

  test("three deletes by ids", () => {
    const a = entry("delete", '{"ids":["a", "b"]}');
    const b = entry("delete", '{"ids":["c"],"where":null,"where_document":null}');
    const c = entry("delete", '{"ids":["d"]}');
    expect(textOf(takeBatch([a, b, c], roomy).body)).toBe('{"ids":["a","b","c","d"]}');
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
    ["base64 embeddings with float ones", () => [entry("add", { ids: ["a"], embeddings: ["AACAPw=="] }), entry("add", { ids: ["b"], embeddings: [[1]] })]],
    ["float embeddings with base64 ones", () => [entry("add", { ids: ["a"], embeddings: [[1]] }), entry("add", { ids: ["b"], embeddings: ["AACAPw=="] })]],
    ["float embeddings of different dimensions", () => [entry("add", { ids: ["a"], embeddings: [[1, 2]] }), entry("add", { ids: ["b"], embeddings: [[1, 2, 3]] })]],
    [
      "base64 embeddings of different dimensions",
      () => [entry("add", { ids: ["a"], embeddings: ["AADAPwAAEMA="] }), entry("add", { ids: ["b"], embeddings: ["AACAPw=="] })],
    ],
    [
      "an entry whose embeddings differ in dimension in itself",
      () => [entry("add", { ids: ["a", "c"], embeddings: [[1], [1, 2]] }), entry("add", { ids: ["b"], embeddings: [[1]] })],
    ],
    // Chroma refuses URL-safe base64 alone ("mpmZPpqZ2T+amTlA" in standard base64): merged, it must not pass.
    [
      "URL-safe base64 with standard base64",
      () => [entry("add", { ids: ["a"], embeddings: ["mpmZPpqZ2b-amTlA"] }), entry("add", { ids: ["b"], embeddings: ["mpmZPpqZ2T+amTlA"] })],
    ],
    [
      "standard base64 with URL-safe base64",
      () => [entry("add", { ids: ["a"], embeddings: ["mpmZPpqZ2T+amTlA"] }), entry("add", { ids: ["b"], embeddings: ["mpmZPpqZ2b-amTlA"] })],
    ],
    ["unpadded base64", () => [entry("add", { ids: ["a"], embeddings: ["AACAPw"] }), entry("add", { ids: ["b"], embeddings: ["AACAPw=="] })]],
    ["base64 with nonzero trailing bits", () => [entry("add", { ids: ["a"], embeddings: ["AACAPx=="] }), entry("add", { ids: ["b"], embeddings: ["AACAPw=="] })]],
    ["base64 with padding inside", () => [entry("add", { ids: ["a"], embeddings: ["AA==AACA"] }), entry("add", { ids: ["b"], embeddings: ["AACAPw=="] })]],
    [
      "base64 of a byte count that is not whole floats",
      () => [entry("add", { ids: ["a"], embeddings: ["AACAPwA="] }), entry("add", { ids: ["b"], embeddings: ["AACAPwA="] })],
    ],
    ["empty base64", () => [entry("add", { ids: ["a"], embeddings: [""] }), entry("add", { ids: ["b"], embeddings: [""] })]],
    ["empty float embeddings", () => [entry("add", { ids: ["a"], embeddings: [[]] }), entry("add", { ids: ["b"], embeddings: [[]] })]],
    ["float embeddings holding something else", () => [entry("add", { ids: ["a"], embeddings: [[1, "2"]] }), entry("add", { ids: ["b"], embeddings: [[1, 2]] })]],
    ["a null embedding", () => [entry("add", { ids: ["a"], embeddings: [null] }), entry("add", { ids: ["b"], embeddings: [[1]] })]],
    ["fewer embeddings than ids", () => [entry("add", { ids: ["a", "c"], embeddings: [[1]] }), entry("add", { ids: ["b"], embeddings: [[1]] })]],
    ["more documents than ids", () => [entry("add", { ids: ["a"], documents: ["x", "y"] }), entry("add", { ids: ["b"], documents: ["z"] })]],
    ["metadatas that are not an array", () => [entry("add", { ids: ["a"], metadatas: { k: 1 } }), entry("add", { ids: ["b"], metadatas: { k: 1 } })]],
    ["an add without ids", () => [entry("add", { ids: [], embeddings: [] }), entry("add", { ids: ["b"], embeddings: [[2]] })]],
    ["an entry repeating an id in itself", () => [entry("add", { ids: ["a", "a"], embeddings: [[1], [2]] }), entry("add", { ids: ["b"], embeddings: [[2]] })]],
    ["ids that are not strings", () => [entry("add", { ids: [1], embeddings: [[1]] }), entry("add", { ids: [2], embeddings: [[2]] })]],
    ["ids that are the same once decoded", () => [entry("add", String.raw`{"ids":["\u0061"],"embeddings":[[1]]}`), entry("add", { ids: ["a"], embeddings: [[2]] })]],
    ["a repeated field", () => [entry("add", '{"ids":["a"],"ids":["c"]}'), entry("add", { ids: ["b"] })]],
    ["an add carrying an unknown field set to null", () => [entry("add", { ids: ["a"], extra: null }), entry("add", { ids: ["b"], extra: null })]],
    ["invalid JSON: a trailing comma", () => [entry("add", '{"ids":["a"],}'), entry("add", { ids: ["b"] })]],
    ["invalid JSON: a number without fraction digits", () => [entry("add", '{"ids":["a"],"embeddings":[[1.]]}'), entry("add", '{"ids":["b"],"embeddings":[[1.0]]}')]],
    ["invalid JSON: NaN", () => [entry("add", '{"ids":["a"],"embeddings":[[NaN]]}'), entry("add", '{"ids":["b"],"embeddings":[[1]]}')]],
    ["invalid JSON: an unpaired surrogate escape", () => [entry("add", String.raw`{"ids":["\ud800"]}`), entry("add", { ids: ["b"] })]],
    ["invalid JSON: in the later entry", () => [entry("add", { ids: ["a"] }), entry("add", '{"ids":["b"]')]],
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

describe("takeBatch randomized", () => {
  const seed = Number(process.env.TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`takeBatch randomized seed: ${seed} (TEST_SEED=${seed} replays it)`);

  test("random bodies merge into their elements' exact texts, meaning what the parts meant", () => {
    const next = seededRandom(seed);
    const pick = <T>(items: readonly T[]) => items[Math.floor(next() * items.length)]!;
    const space = () => pick(["", "", "", " ", "\n", "\t", " \r\n "]);
    const numberText = () =>
      pick([
        () => pick(["1.0", "-0.0", "0", "9007199254740993", "1e-7", "1E+300", "-2.5E-3", "123456789012345678901234567890"]),
        () => String(Math.fround(next() * 2 - 1)),
      ])();
    const stringText = () => {
      const parts = [String.raw`\u00e9`, String.raw`\\`, String.raw`\"`, String.raw`\/`, String.raw`\n`, "😀", "é", "a", " ", String.raw`\ud83d\ude00`];
      return `"${Array.from({ length: Math.floor(next() * 5) }, () => pick(parts)).join("")}"`;
    };
    const valueText = (depth: number): string => {
      const roll = next();
      if (depth >= 3 || roll < 0.5) return pick([numberText, stringText, () => pick(["true", "false", "null"])])();
      const items = Array.from({ length: Math.floor(next() * 3) }, () =>
        roll < 0.75 ? `${space()}${valueText(depth + 1)}${space()}` : `${space()}${stringText()}${space()}:${space()}${valueText(depth + 1)}${space()}`,
      );
      return roll < 0.75 ? `[${items.join(",")}]` : `{${items.join(",")}}`;
    };
    const idText = (id: string) => {
      // Some ids escape a character, as some encoders do.
      const at = Math.floor(next() * id.length);
      return next() < 0.3 ? `"${id.slice(0, at)}\\u${id.charCodeAt(at).toString(16).padStart(4, "0")}${id.slice(at + 1)}"` : `"${id}"`;
    };

    for (let round = 0; round < 200; round++) {
      const dimension = 1 + Math.floor(next() * 4);
      const base64 = next() < 0.3;
      const fields = ["embeddings", "documents", "metadatas", "uris"].filter(() => next() < 0.5);
      const makeElement: Record<string, () => string> = {
        embeddings: () => {
          if (!base64) return `[${space()}${Array.from({ length: dimension }, numberText).join(`${space()},${space()}`)}${space()}]`;
          const floats = Float32Array.from({ length: dimension }, () => next() * 2 - 1);
          const encoded = Buffer.from(floats.buffer).toString("base64");
          return `"${next() < 0.5 ? encoded.replaceAll("/", "\\/") : encoded}"`;
        },
        documents: () => (next() < 0.2 ? "null" : stringText()),
        metadatas: () => (next() < 0.2 ? "null" : `{${space()}"k"${space()}:${space()}${valueText(1)}${space()}}`),
        uris: () => (next() < 0.2 ? "null" : stringText()),
      };
      const parts = Array.from({ length: 2 + Math.floor(next() * 6) }, (_, e) => {
        const records = 1 + Math.floor(next() * 4);
        const elements: Record<string, string[]> = {
          ids: Array.from({ length: records }, (_, r) => idText(`id-${round}-${e}-${r}`)),
        };
        for (const field of fields) elements[field] = Array.from({ length: records }, makeElement[field]!);
        const members = Object.entries(elements)
          .sort(() => next() - 0.5)
          .map(([field, texts]) => `${space()}"${field}"${space()}:${space()}[${space()}${texts.join(`${space()},${space()}`)}${space()}]${space()}`);
        return { elements, body: `${space()}{${members.join(",")}}${space()}` };
      });

      const entries = parts.map((part) => entry("add", part.body));
      const batch = takeBatch(entries, roomy);
      expect(seqs(batch.entries)).toEqual(seqs(entries));
      const order = ["ids", "embeddings", "documents", "metadatas", "uris"].filter((f) => f === "ids" || fields.includes(f));
      const expected = `{${order.map((f) => `"${f}":[${parts.flatMap((p) => p.elements[f]!).join(",")}]`).join(",")}}`;
      expect(textOf(batch.body)).toBe(expected);
      // Parsed only to check the meaning: the merged arrays are the parts' arrays, concatenated.
      const parsedParts = parts.map((p) => JSON.parse(p.body) as Record<string, unknown[]>);
      expect(bodyOf(batch.body)).toEqual(Object.fromEntries(order.map((f) => [f, parsedParts.flatMap((p) => p[f]!)])));
    }
  });
});
