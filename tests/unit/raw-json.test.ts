/**
 * The raw JSON scanner finds values' exact bytes without converting them, and refuses
 * anything malformed rather than guessing.
 */
import { describe, expect, test } from "bun:test";
import { elementStride, nestingMax, splitArray, splitObject } from "../../src/replay/raw-json";
import { seededRandom } from "../support/random";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text: string) => encoder.encode(text);

/** Field name to raw value text. */
function objectTexts(text: string): Record<string, string> | null {
  const b = bytes(text);
  const fields = splitObject(b);
  if (!fields) return null;
  return Object.fromEntries([...fields].map(([key, value]) => [key, decoder.decode(b.subarray(value.start, value.end))]));
}

/** Raw element texts. */
function arrayTexts(text: string): string[] | null {
  const b = bytes(text);
  const elements = splitArray(b);
  if (!elements) return null;
  const texts: string[] = [];
  for (let k = 0; k < elements.length; k += elementStride) texts.push(decoder.decode(b.subarray(elements[k]!, elements[k + 1]!)));
  return texts;
}

/** The number-array lengths the scan counted, one per element (-1 for other elements). */
function numberLengths(text: string): number[] | null {
  const elements = splitArray(bytes(text));
  if (!elements) return null;
  return elements.filter((_, k) => k % elementStride === 2);
}

describe("splitObject", () => {
  test("gives each field's exact value text, numbers and strings unconverted", () => {
    // Raw emoji stay out of String.raw: Bun's transpiler writes them there as `\u{...}` escapes.
    const text = String.raw`{"f":1.0,"big":9007199254740993,"negZero":-0.0,"tiny":1e-7,"huge":1E+300,"e":"\u00e9","bs":"\\","q":"\"q\"",` + '"emoji":"😀"}';
    expect(objectTexts(text)).toEqual({
      f: "1.0",
      big: "9007199254740993",
      negZero: "-0.0",
      tiny: "1e-7",
      huge: "1E+300",
      e: String.raw`"\u00e9"`,
      bs: String.raw`"\\"`,
      q: String.raw`"\"q\""`,
      emoji: `"😀"`,
    });
  });

  test("allows whitespace anywhere between tokens, and keeps it inside values", () => {
    const text = ' \n{ "ids" :\t[ "a" , "b" ] ,\r\n "metadatas" : [ { "k" : [ 1.0 , { } ] } , null ] }\n ';
    expect(objectTexts(text)).toEqual({ ids: '[ "a" , "b" ]', metadatas: '[ { "k" : [ 1.0 , { } ] } , null ]' });
  });

  test("decodes keys, so an escaped key names the same field", () => {
    expect(objectTexts(String.raw`{"\u0069ds":[1]}`)).toEqual({ ids: "[1]" });
  });

  test("gives the elements of array values, with their number-array lengths", () => {
    const b = bytes('{"embeddings":[[1,2,3],[],"AACAPw==",[1,"x"]],"n":1}');
    const fields = splitObject(b)!;
    expect(fields.get("embeddings")!.elements!.filter((_, k) => k % elementStride === 2)).toEqual([3, 0, -1, -1]);
    expect(fields.get("n")!.elements).toBeNull();
  });

  test("reads a field's value text in a body that has others around it", () => {
    expect(objectTexts('{"a":{"b":{"c":[1,[2,[3]]]}},"d":"}]"}')).toEqual({ a: '{"b":{"c":[1,[2,[3]]]}}', d: '"}]"' });
  });
});

describe("splitArray", () => {
  test("gives each element's exact text", () => {
    expect(arrayTexts('[1.0, -0.0 ,"a\\"b", {"k": [1, 2]}, [], true, false, null]')).toEqual([
      "1.0",
      "-0.0",
      '"a\\"b"',
      '{"k": [1, 2]}',
      "[]",
      "true",
      "false",
      "null",
    ]);
    expect(arrayTexts("[]")).toEqual([]);
    expect(arrayTexts(" [ ] ")).toEqual([]);
  });

  test("counts the numbers of arrays of numbers only", () => {
    expect(numberLengths("[[1, 2.5, -3e2], [ ], [1, [2]], [null], 5]")).toEqual([3, 0, -1, -1, -1]);
  });

  test("accepts nesting up to nestingMax", () => {
    expect(arrayTexts("[".repeat(nestingMax) + "]".repeat(nestingMax))).toHaveLength(1);
    expect(splitArray(bytes("[".repeat(nestingMax + 1) + "]".repeat(nestingMax + 1)))).toBeNull();
  });
});

describe("malformed input gives null", () => {
  const malformed: Array<[string, string]> = [
    ["empty", ""],
    ["whitespace only", "  "],
    ["an unclosed object", '{"a":1'],
    ["a missing value", '{"a":}'],
    ["a trailing comma in an object", '{"a":1,}'],
    ["a missing colon", '{"a" 1}'],
    ["a missing comma", '{"a":1 "b":2}'],
    ["a single-quoted key", "{'a':1}"],
    ["an unquoted key", "{a:1}"],
    ["a leading zero", '{"a":01}'],
    ["a bare dot", '{"a":1.}'],
    ["a leading dot", '{"a":.5}'],
    ["a plus sign", '{"a":+1}'],
    ["a lone minus", '{"a":-}'],
    ["an empty exponent", '{"a":1e}'],
    ["an exponent sign alone", '{"a":1e+}'],
    ["NaN", '{"a":NaN}'],
    ["Infinity", '{"a":Infinity}'],
    ["a misspelt literal", '{"a":tru}'],
    ["a capitalised literal", '{"a":True}'],
    ["an unknown escape", String.raw`{"a":"\x"}`],
    ["a short unicode escape", String.raw`{"a":"\u12"}`],
    ["a non-hex unicode escape", String.raw`{"a":"\u12g4"}`],
    ["a raw control character in a string", '{"a":"x\ny"}'],
    ["an unterminated string", '{"a":"x}'],
    ["a lone high surrogate escape", String.raw`{"a":"\ud800"}`],
    ["a high surrogate escape before another character", String.raw`{"a":"\ud800x"}`],
    ["a lone low surrogate escape", String.raw`{"a":"\udc00"}`],
    ["trailing text", '{"a":1} x'],
    ["two objects", "{}{}"],
    ["a repeated key", '{"ids":[1],"ids":[2]}'],
    ["a repeated key spelt differently", String.raw`{"ids":[1],"\u0069ds":[2]}`],
    ["an array where an object is wanted", "[1]"],
    ["a byte order mark", "\ufeff{}"],
    ["too deep a nesting", `{"a":${"[".repeat(nestingMax)}${"]".repeat(nestingMax)}}`],
  ];
  for (const [what, text] of malformed) {
    test(what, () => expect(splitObject(bytes(text))).toBeNull());
  }

  const malformedArrays: Array<[string, string]> = [
    ["a trailing comma", "[1,]"],
    ["a leading comma", "[,1]"],
    ["an unclosed array", "[1"],
    ["a missing comma", "[1 2]"],
    ["an object where an array is wanted", "{}"],
    ["a bare value", "1"],
  ];
  for (const [what, text] of malformedArrays) {
    test(`array: ${what}`, () => expect(splitArray(bytes(text))).toBeNull());
  }

  const badUtf8: Array<[string, number[]]> = [
    ["a stray continuation byte", [0x80]],
    ["an invalid byte", [0xff]],
    ["an overlong encoding", [0xc0, 0xaf]],
    ["an encoded surrogate", [0xed, 0xa0, 0x80]],
    ["a code point past U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["a truncated sequence", [0xe2, 0x82]],
  ];
  for (const [what, sequence] of badUtf8) {
    test(`invalid UTF-8: ${what}`, () => {
      const b = new Uint8Array([...bytes('{"a":"x'), ...sequence, ...bytes('y"}')]);
      expect(splitObject(b)).toBeNull();
    });
  }

  test("valid multi-byte UTF-8 passes", () => {
    expect(objectTexts('{"a":"é € 😀 \u{10FFFF}"}')).toEqual({ a: '"é € 😀 \u{10FFFF}"' });
  });
});

/** Random JSON text, written the many ways clients write it: spacing, number forms, escapes. */
function randomJson(next: () => number, depth = 0): string {
  const pick = <T>(items: readonly T[]) => items[Math.floor(next() * items.length)]!;
  const space = () => pick(["", "", "", " ", "\n", "\t", " \r\n "]);
  const roll = next();
  if (depth >= 4 || roll < 0.5) {
    const scalars = [
      () => pick(["1.0", "-0.0", "0", "-0", "9007199254740993", "1e-7", "1E+300", "2.5e3", "-12.75", "123456789012345678901234567890"]),
      () => String(Math.round((next() - 0.5) * 1e6) / 1000),
      () => pick(["true", "false", "null"]),
      () => randomString(next, pick),
    ];
    return pick(scalars)();
  }
  const count = Math.floor(next() * 4);
  const items = Array.from({ length: count }, () =>
    roll < 0.75
      ? `${space()}${randomJson(next, depth + 1)}${space()}`
      : `${space()}${randomString(next, pick)}${space()}:${space()}${randomJson(next, depth + 1)}${space()}`,
  );
  return roll < 0.75 ? `[${items.join(",") || space()}]` : `{${items.join(",") || space()}}`;
}

function randomString(next: () => number, pick: <T>(items: readonly T[]) => T): string {
  const parts = [String.raw`\u00e9`, String.raw`\\`, String.raw`\"`, String.raw`\/`, String.raw`\n`, "😀", "é", "a", "Z", " ", String.raw`\ud83d\ude00`, "€"];
  return `"${Array.from({ length: Math.floor(next() * 6) }, () => pick(parts)).join("")}"`;
}

describe("randomized", () => {
  const seed = Number(process.env.TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
  console.log(`raw-json randomized seed: ${seed} (TEST_SEED=${seed} replays it)`);

  test("arrays split into their elements' exact texts, and rejoin into the same value", () => {
    const next = seededRandom(seed);
    for (let round = 0; round < 300; round++) {
      const texts = Array.from({ length: Math.floor(next() * 6) }, () => randomJson(next));
      const text = `[${texts.join(",")}]`;
      expect(arrayTexts(text)).toEqual(texts);
      expect(JSON.parse(`[${arrayTexts(text)!.join(",")}]`)).toEqual(JSON.parse(text));
    }
  });

  test("objects split into their fields' exact texts", () => {
    const next = seededRandom(seed + 1);
    for (let round = 0; round < 300; round++) {
      const values = Array.from({ length: Math.floor(next() * 5) }, () => randomJson(next));
      const text = `{${values.map((v, i) => `"k${i}" : ${v}`).join(" , ")}}`;
      expect(objectTexts(text)).toEqual(Object.fromEntries(values.map((v, i) => [`k${i}`, v])));
    }
  });

  test("a damaged text is refused exactly when JSON.parse refuses it", () => {
    const next = seededRandom(seed + 2);
    const damage = ['"', "\\", ",", "[", "]", "{", "}", ":", "1", ".", "e", "-", " ", "x", "\n"];
    for (let round = 0; round < 2000; round++) {
      const text = `[${randomJson(next)}]`;
      const at = Math.floor(next() * text.length);
      const damaged =
        next() < 0.5
          ? text.slice(0, at) + text.slice(at + 1)
          : text.slice(0, at) + damage[Math.floor(next() * damage.length)] + text.slice(at);
      // Through bytes and back: a split surrogate pair becomes U+FFFD on both sides alike.
      const b = bytes(damaged);
      const decoded = decoder.decode(b);
      let parsed: unknown = undefined;
      try {
        parsed = JSON.parse(decoded);
      } catch {
        parsed = undefined;
      }
      // Unpaired surrogate escapes are refused here though JSON.parse takes them: texts with
      // surrogate escapes at all are left to the tests above.
      if (/\\u[dD][89a-fA-F]/.test(decoded)) continue;
      const accepted = Array.isArray(parsed);
      expect({ damaged, accepted: splitArray(b) !== null }).toEqual({ damaged, accepted });
    }
  });
});
