/**
 * Records read from Chroma's `get` answers without converting values: the canonical text
 * two copies must agree on, and add bodies that carry the answer's own bytes.
 */
import { describe, expect, test } from "bun:test";
import { addBodyFor, canonicalRecord, embeddingBits, readRecordPage, sortedObjectText } from "../../src/repair/records";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const page = (text: string) => readRecordPage(encoder.encode(text))!;

const answer = `{"ids":["a","b"],"embeddings":[[1.0,0.1],[-0.0,3.5]],"documents":[null,"d\\u00e9"],"uris":[null,null],"metadatas":[{"z":1,"a":1.0},null],"include":["embeddings","documents","metadatas","uris"]}`;

describe("readRecordPage", () => {
  test("reads ids and each field's element texts", () => {
    const p = page(answer);
    expect(p.ids).toEqual(["a", "b"]);
    expect(p.fields.metadatas!.map((b) => decoder.decode(b))).toEqual(['{"z":1,"a":1.0}', "null"]);
    expect(p.fields.documents!.map((b) => decoder.decode(b))).toEqual(["null", '"d\\u00e9"']);
  });

  test("a field not included is null, and anything but a get answer is refused", () => {
    expect(page(`{"ids":["x"],"embeddings":null,"documents":null,"metadatas":null,"uris":null,"include":[]}`).fields).toEqual({
      embeddings: null,
      documents: null,
      metadatas: null,
      uris: null,
    });
    expect(readRecordPage(encoder.encode(`{"error":"NotFoundError"}`))).toBeNull();
    expect(readRecordPage(encoder.encode(`{"ids":["a"],"documents":["x","y"]}`))).toBeNull();
  });
});

describe("canonical text", () => {
  test("sorts metadata keys and keeps every value's text, so 1 and 1.0 differ", () => {
    expect(sortedObjectText(encoder.encode('{"z":1,"a":1.0}'))).toBe('{"a":1.0,"z":1}');
    const int = canonicalRecord(page(`{"ids":["a"],"metadatas":[{"n":1}]}`), 0);
    const float = canonicalRecord(page(`{"ids":["a"],"metadatas":[{"n":1.0}]}`), 0);
    expect(int).not.toBe(float);
  });

  test("embeddings compare as float32 bits, whatever their text", () => {
    expect(embeddingBits(encoder.encode("[0.1, 1]"))).toBe(embeddingBits(encoder.encode("[0.100000001, 1.0]")));
    expect(embeddingBits(encoder.encode("[0.0]"))).not.toBe(embeddingBits(encoder.encode("[-0.0]")));
    const base64 = `"${Buffer.from(Float32Array.of(0.1, 1).buffer).toString("base64")}"`;
    expect(embeddingBits(encoder.encode(base64))).toBe(embeddingBits(encoder.encode("[0.1,1.0]")));
  });
});

describe("addBodyFor", () => {
  test("carries the answer's bytes and leaves out fields that are null for every record taken", () => {
    const p = page(answer);
    expect(decoder.decode(addBodyFor(p, [0, 1]))).toBe(
      '{"ids":["a","b"],"embeddings":[[1.0,0.1],[-0.0,3.5]],"documents":[null,"d\\u00e9"],"metadatas":[{"z":1,"a":1.0},null]}',
    );
    expect(decoder.decode(addBodyFor(p, [0]))).toBe('{"ids":["a"],"embeddings":[[1.0,0.1]],"metadatas":[{"z":1,"a":1.0}]}');
  });
});
