/**
 * A strict reader of the Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format), used by
 * the tests to check `GET /metrics`. The parsers on npm accept lines Prometheus refuses
 * (values such as `abc`, names starting with a digit, unterminated label values), so this
 * one follows the rules itself and throws on the first line that breaks one:
 * - every line ends with `\n`; empty lines are ignored; `#` lines other than HELP and TYPE
 *   are comments;
 * - metric and label names match `[a-zA-Z_:][a-zA-Z0-9_:]*` and `[a-zA-Z_][a-zA-Z0-9_]*`
 *   (labels starting with `__` are reserved); label values are quoted, escaping only
 *   `\\`, `\"` and `\n`; HELP text escapes only `\\` and `\n`;
 * - a value is a float as Go's ParseFloat reads it, or `NaN`, `+Inf`, `-Inf`; an optional
 *   timestamp is an integer;
 * - at most one HELP and one TYPE per family, TYPE before its first sample, a family's
 *   lines all together, no label set twice in a family;
 * - histograms: `_bucket` samples with an `le` label, a `+Inf` bucket, cumulative counts,
 *   `_count` equal to the `+Inf` bucket, and a `_sum`; counters are never negative.
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export interface ExpositionSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ExpositionFamily {
  name: string;
  help: string | null;
  type: MetricType;
  samples: ExpositionSample[];
}

export class ExpositionError extends Error {
  constructor(lineNumber: number, line: string, reason: string) {
    super(`line ${lineNumber}: ${reason}: ${JSON.stringify(line.slice(0, 200))}`);
    this.name = "ExpositionError";
  }
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const types = new Set<MetricType>(["counter", "gauge", "histogram", "summary", "untyped"]);
/** Go's ParseFloat syntax for finite decimals (hex floats and underscores are not used by exporters). */
const finiteFloat = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function parseValue(text: string): number | null {
  if (text === "NaN") return Number.NaN;
  if (text === "+Inf") return Number.POSITIVE_INFINITY;
  if (text === "-Inf") return Number.NEGATIVE_INFINITY;
  return finiteFloat.test(text) ? Number(text) : null;
}

/** The family a sample name belongs to, given the declared types (histogram and summary suffixes). */
function familyOf(name: string, declared: Map<string, ExpositionFamily>): string {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue;
    const base = name.slice(0, -suffix.length);
    const family = declared.get(base);
    if (family && (family.type === "histogram" || (family.type === "summary" && suffix !== "_bucket"))) return base;
  }
  return name;
}

/** Reads one sample line: `name{label="value",...} value [timestamp]`. */
function parseSample(line: string, fail: (reason: string) => never): { name: string; labels: Record<string, string>; value: number } {
  let i = 0;
  while (i < line.length && line[i] !== "{" && line[i] !== " ") i++;
  const name = line.slice(0, i);
  if (!metricName.test(name)) fail("invalid metric name");
  const labels: Record<string, string> = {};
  if (line[i] === "{") {
    i++;
    while (line[i] !== "}") {
      let j = i;
      while (j < line.length && line[j] !== "=") j++;
      const label = line.slice(i, j);
      if (!labelName.test(label)) fail(`invalid label name ${JSON.stringify(label)}`);
      if (label.startsWith("__")) fail(`reserved label name ${label}`);
      if (label in labels) fail(`label ${label} given twice`);
      if (line[j + 1] !== '"') fail("label value not quoted");
      let value = "";
      let k = j + 2;
      for (; ; k++) {
        if (k >= line.length) fail("unterminated label value");
        const c = line[k];
        if (c === '"') break;
        if (c === "\\") {
          const next = line[k + 1];
          if (next === "\\") value += "\\";
          else if (next === '"') value += '"';
          else if (next === "n") value += "\n";
          else fail("invalid escape in label value");
          k++;
        } else {
          value += c;
        }
      }
      labels[label] = value;
      i = k + 1;
      if (line[i] === ",") i++;
      else if (line[i] !== "}") fail("expected , or } after a label");
    }
    i++;
  }
  if (line[i] !== " ") fail("expected a space before the value");
  const rest = line.slice(i + 1).split(" ");
  if (rest.length < 1 || rest.length > 2 || rest.some((part) => part === "")) fail("expected a value and an optional timestamp, separated by one space");
  const value = parseValue(rest[0]!);
  if (value === null) fail(`invalid value ${JSON.stringify(rest[0])}`);
  if (rest.length === 2 && !/^-?\d+$/.test(rest[1]!)) fail("invalid timestamp");
  return { name, labels, value };
}

/** Parses a whole exposition; throws ExpositionError at the first rule broken. */
export function parseExposition(text: string): Map<string, ExpositionFamily> {
  if (text.length > 0 && !text.endsWith("\n")) throw new ExpositionError(0, text.slice(-80), "the text does not end with a line feed");
  const families = new Map<string, ExpositionFamily>();
  /** Families whose lines are over (another family's line came after them). */
  const closed = new Set<string>();
  let current: string | null = null;
  const seenLabelSets = new Set<string>();
  const typed = new Set<string>();
  const enter = (name: string, lineNumber: number, line: string) => {
    if (current === name) return;
    if (closed.has(name)) throw new ExpositionError(lineNumber, line, `lines of ${name} are not all together`);
    if (current !== null) closed.add(current);
    current = name;
  };
  const lines = text.split("\n");
  lines.pop();
  lines.forEach((line, index) => {
    const lineNumber = index + 1;
    const fail = (reason: string): never => {
      throw new ExpositionError(lineNumber, line, reason);
    };
    if (line.trim() === "") return;
    if (line.startsWith("#")) {
      const parts = line.split(" ");
      const keyword = parts[1];
      if (parts[0] !== "#" || (keyword !== "HELP" && keyword !== "TYPE")) return; // a comment
      const name = parts[2] ?? "";
      if (!metricName.test(name)) fail("invalid metric name");
      enter(name, lineNumber, line);
      const family = families.get(name) ?? { name, help: null, type: "untyped" as MetricType, samples: [] };
      families.set(name, family);
      if (keyword === "HELP") {
        if (family.help !== null) fail("second HELP line");
        const help = parts.slice(3).join(" ");
        if (/\\[^\\n]/.test(help.replace(/\\\\/g, ""))) fail("invalid escape in HELP text");
        family.help = help;
      } else {
        if (parts.length !== 4) fail("TYPE line needs a name and a type");
        if (typed.has(name)) fail("second TYPE line");
        if (family.samples.length > 0) fail("TYPE after the family's first sample");
        if (!types.has(parts[3] as MetricType)) fail(`unknown type ${parts[3]}`);
        family.type = parts[3] as MetricType;
        typed.add(name);
      }
      return;
    }
    const sample = parseSample(line, fail);
    const familyName = familyOf(sample.name, families);
    enter(familyName, lineNumber, line);
    const family = families.get(familyName) ?? { name: familyName, help: null, type: "untyped" as MetricType, samples: [] };
    families.set(familyName, family);
    const identity = JSON.stringify([sample.name, Object.entries(sample.labels).sort()]);
    if (seenLabelSets.has(identity)) fail("the same sample (name and labels) twice");
    seenLabelSets.add(identity);
    if (family.type === "counter" && !(sample.value >= 0)) fail("a counter below zero");
    if (family.type === "histogram" && sample.name.endsWith("_bucket") && !("le" in sample.labels)) fail("a histogram bucket without le");
    family.samples.push(sample);
  });
  for (const family of families.values()) if (family.type === "histogram") checkHistogram(family);
  return families;
}

/** Buckets cumulative, a +Inf bucket equal to _count, and a _sum, for each label set. */
function checkHistogram(family: ExpositionFamily) {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (sample.name === `${family.name}_bucket`) {
      const bound = le === "+Inf" ? Number.POSITIVE_INFINITY : parseValue(le!);
      if (bound === null || Number.isNaN(bound)) throw new ExpositionError(0, sample.name, `histogram ${family.name}: invalid le ${JSON.stringify(le)}`);
      entry.buckets.push([bound, sample.value]);
    } else if (sample.name === `${family.name}_count`) entry.count = sample.value;
    else if (sample.name === `${family.name}_sum`) entry.sum = sample.value;
    else throw new ExpositionError(0, sample.name, `histogram ${family.name}: a sample that is not _bucket, _sum or _count`);
  }
  for (const [key, entry] of series) {
    const where = `histogram ${family.name}${key === "[]" ? "" : ` ${key}`}`;
    const sorted = entry.buckets.slice().sort((a, b) => a[0] - b[0]);
    if (sorted.at(-1)?.[0] !== Number.POSITIVE_INFINITY) throw new ExpositionError(0, family.name, `${where}: no le="+Inf" bucket`);
    sorted.forEach(([, count], i) => {
      if (i > 0 && count < sorted[i - 1]![1]) throw new ExpositionError(0, family.name, `${where}: buckets are not cumulative`);
    });
    if (entry.count !== sorted.at(-1)![1]) throw new ExpositionError(0, family.name, `${where}: _count differs from the +Inf bucket`);
    if (entry.sum === undefined) throw new ExpositionError(0, family.name, `${where}: no _sum`);
  }
}
