/**
 * A scanner over raw JSON bytes that finds where values start and end without converting
 * them. Merging writes must not re-serialize what the client sent: JSON.parse and
 * JSON.stringify turn `1.0` into `1` (Chroma keeps int and float metadata apart), cut
 * integers beyond 2^53 and drop the sign of `-0.0`. Working on the UTF-8 bytes rather than a
 * decoded string spares the decode and re-encode of bodies that are mostly embeddings, and
 * lets a merge copy byte ranges straight into the new body.
 *
 * The scanner is strict: anything RFC 8259 does not allow makes it answer null, and so do a
 * few things RFC 8259 leaves open that Chroma's Rust parser refuses (repeated top-level keys,
 * invalid UTF-8, unpaired surrogate escapes) and nesting deeper than `nestingMax`. Its caller
 * then does not guess at such a body but sends it on alone, for Chroma to judge.
 */

/**
 * Numbers per array element in `elements`: its start, its end (bytes [start, end) of the
 * source) and, when the element is itself an array of numbers only, its length (else -1).
 * One flat number array rather than an object per element keeps splitting allocation-light;
 * the length is counted during the one pass that validates, for embeddings' dimensions.
 */
export const elementStride = 3;

/** Where a raw value lies in the source: bytes [start, end). */
export interface RawValue {
  start: number;
  end: number;
  /** When the value is an array: its elements, `elementStride` numbers each. */
  elements: number[] | null;
}

/** Arrays and objects nested deeper than this are refused, which keeps recursion bounded. */
export const nestingMax = 512;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Index of the first byte at or after `i` that is not JSON whitespace (space, tab, LF, CR). */
function skipSpace(b: Uint8Array, i: number, end: number): number {
  while (i < end) {
    const c = b[i]!;
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    i++;
  }
  return i;
}

/** Value of a hex digit, or -1. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** The code unit of a `\uXXXX` escape whose `u` is at `i`, or -1. */
function unicodeEscape(b: Uint8Array, i: number, end: number): number {
  if (i + 4 >= end) return -1;
  let unit = 0;
  for (let k = 1; k <= 4; k++) {
    const h = hexValue(b[i + k]!);
    if (h < 0) return -1;
    unit = (unit << 4) | h;
  }
  return unit;
}

const isContinuation = (c: number | undefined) => c !== undefined && (c & 0xc0) === 0x80;

/**
 * Length of the UTF-8 sequence starting with lead byte `c` at `i` (which is >= 0x80), or -1
 * when it is not well-formed (overlong forms, surrogates and code points past U+10FFFF
 * included), as a Rust `str` requires.
 */
function utf8Length(b: Uint8Array, i: number, end: number, c: number): number {
  if (c >= 0xc2 && c <= 0xdf) return i + 1 < end && isContinuation(b[i + 1]) ? 2 : -1;
  if (c >= 0xe0 && c <= 0xef) {
    if (i + 2 >= end) return -1;
    const c1 = b[i + 1]!;
    const low = c === 0xe0 ? 0xa0 : 0x80;
    const high = c === 0xed ? 0x9f : 0xbf;
    return c1 >= low && c1 <= high && isContinuation(b[i + 2]) ? 3 : -1;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (i + 3 >= end) return -1;
    const c1 = b[i + 1]!;
    const low = c === 0xf0 ? 0x90 : 0x80;
    const high = c === 0xf4 ? 0x8f : 0xbf;
    return c1 >= low && c1 <= high && isContinuation(b[i + 2]) && isContinuation(b[i + 3]) ? 4 : -1;
  }
  return -1;
}

/** 1 for the bytes a string holds as they are: printable ASCII but the quote and the backslash. */
const plainInString = (() => {
  const table = new Uint8Array(256);
  for (let c = 0x20; c < 0x80; c++) table[c] = c === QUOTE || c === BACKSLASH ? 0 : 1;
  return table;
})();

/** Index just past the string whose opening quote is at `i`, or -1 when it is malformed. */
export function scanString(b: Uint8Array, i: number, end: number): number {
  if (b[i] !== QUOTE) return -1;
  i++;
  while (i < end) {
    // Runs of plain characters are most of every string: one table look-up each.
    while (i < end && plainInString[b[i]!] === 1) i++;
    if (i >= end) return -1;
    const c = b[i]!;
    if (c === QUOTE) return i + 1;
    if (c < 0x20) return -1;
    if (c >= 0x80) {
      const length = utf8Length(b, i, end, c);
      if (length < 0) return -1;
      i += length;
      continue;
    }
    // A backslash escape.
    const e = b[i + 1];
    if (e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
      i += 2;
      continue;
    }
    if (e !== 0x75) return -1;
    const unit = unicodeEscape(b, i + 1, end);
    if (unit < 0) return -1;
    i += 6;
    if (unit >= 0xdc00 && unit <= 0xdfff) return -1;
    if (unit >= 0xd800 && unit <= 0xdbff) {
      // A high surrogate only stands with the low one right after it.
      if (b[i] !== BACKSLASH || b[i + 1] !== 0x75) return -1;
      const low = unicodeEscape(b, i + 1, end);
      if (low < 0xdc00 || low > 0xdfff) return -1;
      i += 6;
    }
  }
  return -1;
}

/** Index just past the digits starting at `i` (maybe none). */
function skipDigits(b: Uint8Array, i: number, end: number): number {
  while (i < end) {
    const c = b[i]!;
    if (c < DIGIT_0 || c > DIGIT_9) break;
    i++;
  }
  return i;
}

/** Index just past the number starting at `i`, or -1 when it is not a JSON number. */
export function scanNumber(b: Uint8Array, i: number, end: number): number {
  if (b[i] === MINUS) i++;
  if (i >= end) return -1;
  let c = b[i]!;
  if (c === DIGIT_0) i++;
  else if (c > DIGIT_0 && c <= DIGIT_9) i = skipDigits(b, i + 1, end);
  else return -1;
  if (i >= end) return i;
  c = b[i]!;
  if (c === DOT) {
    const fractionStart = i + 1;
    i = skipDigits(b, fractionStart, end);
    if (i === fractionStart) return -1;
    if (i >= end) return i;
    c = b[i]!;
  }
  if ((c | 0x20) === 0x65) {
    i++;
    if (i < end && (b[i] === PLUS || b[i] === MINUS)) i++;
    const exponentStart = i;
    i = skipDigits(b, exponentStart, end);
    if (i === exponentStart) return -1;
  }
  return i;
}

/** Index just past `word` (true, false, null) at `i`, or -1. */
function scanWord(b: Uint8Array, i: number, end: number, word: string): number {
  if (i + word.length > end) return -1;
  for (let k = 0; k < word.length; k++) if (b[i + k] !== word.charCodeAt(k)) return -1;
  return i + word.length;
}

/** Index just past the value starting at `i` (no leading whitespace), or -1 when it is malformed. */
export function scanValue(b: Uint8Array, i: number, end: number, depth = 0): number {
  if (i >= end) return -1;
  const c = b[i]!;
  if (c === QUOTE) return scanString(b, i, end);
  if (c === MINUS || (c >= DIGIT_0 && c <= DIGIT_9)) return scanNumber(b, i, end);
  if (c === OPEN_BRACKET) return scanArray(b, i, end, depth + 1, null);
  if (c === OPEN_BRACE) return scanObject(b, i, end, depth + 1, null);
  if (c === 0x74) return scanWord(b, i, end, "true");
  if (c === 0x66) return scanWord(b, i, end, "false");
  if (c === 0x6e) return scanWord(b, i, end, "null");
  return -1;
}

/**
 * Index just past the array whose `[` is at `i`, or -1. With `elements`, pushes each
 * element's start, end and number-array length (see `elementStride`) onto it.
 */
function scanArray(b: Uint8Array, i: number, end: number, depth: number, elements: number[] | null): number {
  if (depth > nestingMax) return -1;
  i = skipSpace(b, i + 1, end);
  if (i < end && b[i] === CLOSE_BRACKET) return i + 1;
  while (i < end) {
    let valueEnd = -1;
    if (elements) {
      const at = elements.length;
      elements.push(i, -1, -1);
      // Most arrays in arrays are embeddings: read one as numbers only first, counting them.
      if (b[i] === OPEN_BRACKET && depth < nestingMax) valueEnd = scanNumbers(b, i, end, elements, at + 2);
      if (valueEnd < 0) valueEnd = scanValue(b, i, end, depth);
      elements[at + 1] = valueEnd;
    } else {
      valueEnd = scanValue(b, i, end, depth);
    }
    if (valueEnd < 0) return -1;
    i = skipSpace(b, valueEnd, end);
    if (i >= end) return -1;
    const c = b[i];
    if (c === CLOSE_BRACKET) return i + 1;
    if (c !== COMMA) return -1;
    i = skipSpace(b, i + 1, end);
  }
  return -1;
}

/**
 * Index just past the array of numbers only whose `[` is at `i`, storing its length in
 * `out[slot]`; -1 (storing nothing) when it holds anything else or is malformed.
 */
function scanNumbers(b: Uint8Array, i: number, end: number, out: number[], slot: number): number {
  i = skipSpace(b, i + 1, end);
  let count = 0;
  if (i < end && b[i] === CLOSE_BRACKET) {
    out[slot] = count;
    return i + 1;
  }
  while (i < end) {
    const numberEnd = scanNumber(b, i, end);
    if (numberEnd < 0) return -1;
    count++;
    i = skipSpace(b, numberEnd, end);
    if (i >= end) return -1;
    const c = b[i];
    if (c === CLOSE_BRACKET) {
      out[slot] = count;
      return i + 1;
    }
    if (c !== COMMA) return -1;
    i = skipSpace(b, i + 1, end);
  }
  return -1;
}

/**
 * Index just past the object whose `{` is at `i`, or -1. With `fields`, records each member's
 * decoded key and raw value, and refuses a repeated key.
 */
function scanObject(b: Uint8Array, i: number, end: number, depth: number, fields: Map<string, RawValue> | null): number {
  if (depth > nestingMax) return -1;
  i = skipSpace(b, i + 1, end);
  if (i < end && b[i] === CLOSE_BRACE) return i + 1;
  while (i < end) {
    const keyEnd = scanString(b, i, end);
    if (keyEnd < 0) return -1;
    const keyStart = i;
    i = skipSpace(b, keyEnd, end);
    if (b[i] !== COLON) return -1;
    i = skipSpace(b, i + 1, end);
    let valueEnd: number;
    if (fields) {
      const key = decodeString(b, keyStart, keyEnd);
      if (fields.has(key)) return -1;
      const elements = b[i] === OPEN_BRACKET ? [] : null;
      valueEnd = elements ? scanArray(b, i, end, depth + 1, elements) : scanValue(b, i, end, depth);
      fields.set(key, { start: i, end: valueEnd, elements });
    } else {
      valueEnd = scanValue(b, i, end, depth);
    }
    if (valueEnd < 0) return -1;
    i = skipSpace(b, valueEnd, end);
    if (i >= end) return -1;
    const c = b[i];
    if (c === CLOSE_BRACE) return i + 1;
    if (c !== COMMA) return -1;
    i = skipSpace(b, i + 1, end);
  }
  return -1;
}

/**
 * The value of a string already scanned by `scanString` (quotes included in [start, end)).
 * Plain ASCII is read directly; escapes and other characters go through JSON.parse.
 */
export function decodeString(b: Uint8Array, start: number, end: number): string {
  let plain = true;
  for (let k = start + 1; k < end - 1; k++) {
    const c = b[k]!;
    if (c === BACKSLASH || c >= 0x80) {
      plain = false;
      break;
    }
  }
  if (!plain) return JSON.parse(decoder.decode(b.subarray(start, end))) as string;
  // Short strings (ids, keys) are cheaper to build here than through a decoder call.
  if (end - start > 34) return decoder.decode(b.subarray(start + 1, end - 1));
  let out = "";
  for (let k = start + 1; k < end - 1; k++) out += String.fromCharCode(b[k]!);
  return out;
}

/**
 * Splits the JSON object that [start, end) holds (whitespace around it allowed) into its
 * members: decoded key to the raw value's place, and the elements of array values. Null
 * when the text is not exactly one well-formed object, or repeats a key.
 */
export function splitObject(b: Uint8Array, start = 0, end = b.length): Map<string, RawValue> | null {
  const i = skipSpace(b, start, end);
  if (b[i] !== OPEN_BRACE || i >= end) return null;
  const fields = new Map<string, RawValue>();
  const objectEnd = scanObject(b, i, end, 1, fields);
  if (objectEnd < 0 || skipSpace(b, objectEnd, end) !== end) return null;
  return fields;
}

/**
 * Splits the JSON array that [start, end) holds (whitespace around it allowed) into its
 * elements, `elementStride` numbers each. Null when the text is not exactly one well-formed
 * array.
 */
export function splitArray(b: Uint8Array, start = 0, end = b.length): number[] | null {
  const i = skipSpace(b, start, end);
  if (b[i] !== OPEN_BRACKET || i >= end) return null;
  const elements: number[] = [];
  const arrayEnd = scanArray(b, i, end, 1, elements);
  if (arrayEnd < 0 || skipSpace(b, arrayEnd, end) !== end) return null;
  return elements;
}
