/**
 * Merge figures: what merging logged writes into one request costs, per merge, with the
 * raw-bytes merge that takeBatch does against (b) the same merge through a lossless JSON
 * library and (c) the old lossy JSON.parse/JSON.stringify merge, for reference.
 *
 *   bun run bench:merge        (MERGE_RUNS scales the run counts, 1 by default)
 *
 * lossless-json is not a dependency of chroma-lb: install it outside the repository to
 * include it (`mkdir -p /tmp/ljbench && cd /tmp/ljbench && npm install lossless-json`, or
 * point LOSSLESS_JSON at its ESM index.js); otherwise its row says "not installed".
 *
 * Cases: 100 entries of 1 record each (what several clients adding one record at a time
 * queue), and 100 entries of 100 records each (realistic add batches), with 384-dim float
 * embeddings, a document and a metadata per record; then the same large case with base64
 * embeddings, which the official client sends. Prints the median ms per merge and MB/s of
 * input bodies.
 */
import fs from "node:fs";
import { takeBatch, type BatchLimits } from "../../src/replay/batch";
import { seededRandom } from "../support/random";

const losslessPath = process.env.LOSSLESS_JSON ?? "/tmp/ljbench/node_modules/lossless-json/lib/esm/index.js";
const runsScale = Number(process.env.MERGE_RUNS ?? 1);
const dim = 384;
const limits: BatchLimits = { entriesMax: 1_000, recordsMax: 1_000_000, bytesMax: 1 << 30 };

interface Entry {
  op: "add";
  body: Uint8Array;
  bodyBytes: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function makeEntries(entriesCount: number, recordsEach: number, base64: boolean): Entry[] {
  const next = seededRandom(42);
  return Array.from({ length: entriesCount }, (_, e) => {
    const ids = Array.from({ length: recordsEach }, (_, r) => `doc-${e}-${r}`);
    // Float32 values, as a model produces them: written back as doubles they take ~18 characters.
    const vectors = ids.map(() => Float32Array.from({ length: dim }, () => next() * 2 - 1));
    const embeddings = base64 ? vectors.map((v) => Buffer.from(v.buffer).toString("base64")) : vectors.map((v) => Array.from(v));
    const documents = ids.map((id) => `The text of ${id}: ${"lorem ipsum dolor sit amet ".repeat(6)}`);
    const metadatas = ids.map((id, r) => ({ source: `file-${e}.md`, chunk: r, score: 0.5 + r, id }));
    const body = encoder.encode(JSON.stringify({ ids, embeddings, documents, metadatas }));
    return { op: "add", body, bodyBytes: body.byteLength };
  });
}

const recordFields = ["ids", "embeddings", "documents", "metadatas", "uris"] as const;

/** The merge as it was before raw merging: parse, concatenate, stringify. */
function lossyMerge(entries: Entry[]): Uint8Array {
  const parsed = entries.map((e) => JSON.parse(decoder.decode(e.body)) as Record<string, unknown[]>);
  const merged: Record<string, unknown[]> = {};
  for (const field of recordFields) {
    if (parsed[0]![field] === undefined) continue;
    merged[field] = parsed.flatMap((p) => p[field]!);
  }
  return encoder.encode(JSON.stringify(merged));
}

type Lossless = { parse: (text: string) => unknown; stringify: (value: unknown) => string | undefined };

/** The same merge through lossless-json: numbers kept as their text, so nothing is changed. */
function losslessMerge(lib: Lossless, entries: Entry[]): Uint8Array {
  const parsed = entries.map((e) => lib.parse(decoder.decode(e.body)) as Record<string, unknown[]>);
  const merged: Record<string, unknown[]> = {};
  for (const field of recordFields) {
    if (parsed[0]![field] === undefined) continue;
    merged[field] = parsed.flatMap((p) => p[field]!);
  }
  return encoder.encode(lib.stringify(merged)!);
}

function rawMerge(entries: Entry[]): Uint8Array {
  const batch = takeBatch(entries, limits);
  if (batch.entries.length !== entries.length) throw new Error(`merged ${batch.entries.length} of ${entries.length} entries`);
  return batch.body!;
}

/** Median ms of `runs` calls, after a few unmeasured ones to warm the JIT up. */
function time(runs: number, merge: () => Uint8Array): number {
  for (let i = 0; i < Math.min(3, runs); i++) merge();
  const samplesMs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const startMs = performance.now();
    merge();
    samplesMs.push(performance.now() - startMs);
  }
  samplesMs.sort((a, b) => a - b);
  return samplesMs[Math.floor(samplesMs.length / 2)]!;
}

async function loadLossless(): Promise<Lossless | null> {
  if (!fs.existsSync(losslessPath)) return null;
  return (await import(losslessPath)) as Lossless;
}

const lossless = await loadLossless();
const cases: Array<{ name: string; entries: Entry[]; runs: number }> = [
  { name: "100 entries x 1 record, floats", entries: makeEntries(100, 1, false), runs: 200 },
  { name: "100 entries x 100 records, floats", entries: makeEntries(100, 100, false), runs: 11 },
  { name: "100 entries x 100 records, base64", entries: makeEntries(100, 100, true), runs: 21 },
];

console.log(`bun ${Bun.version}, ${dim}-dim embeddings; median ms per merge, MB/s of input bodies`);
for (const { name, entries, runs } of cases) {
  const inputBytes = entries.reduce((sum, e) => sum + e.bodyBytes, 0);
  // Sanity: the raw merge means what the old merge meant.
  const raw = rawMerge(entries);
  if (!Bun.deepEquals(JSON.parse(decoder.decode(raw)), JSON.parse(decoder.decode(lossyMerge(entries))))) {
    throw new Error(`${name}: the raw merge differs from the parsed one`);
  }
  console.log(`\n${name}: ${(inputBytes / 1e6).toFixed(2)} MB in, ${(raw.byteLength / 1e6).toFixed(2)} MB out`);
  const row = (label: string, ms: number | null) =>
    console.log(
      `  ${label.padEnd(30)} ${ms === null ? "not installed" : `${ms.toFixed(3).padStart(10)} ms  ${(inputBytes / 1e6 / (ms / 1000)).toFixed(0).padStart(6)} MB/s`}`,
    );
  const scaled = Math.max(1, Math.round(runs * runsScale));
  row("(a) raw merge (takeBatch)", time(scaled, () => rawMerge(entries)));
  row("(b) lossless-json", lossless ? time(Math.max(1, Math.ceil(scaled / 4)), () => losslessMerge(lossless, entries)) : null);
  row("(c) JSON.parse/stringify", time(scaled, () => lossyMerge(entries)));
}
