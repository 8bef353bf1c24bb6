/**
 * An exact model of one Chroma record under add, upsert, update and delete, and the set of
 * states a record may be in given a history whose outcomes are ok, failed or indeterminate.
 *
 * Chroma 1.0 semantics (measured, /work/shared/chroma-notes.md):
 * - add of an existing id is ignored (the old record stays whole);
 * - upsert of an existing id replaces document and embedding and merges metadata per key;
 * - update of a missing id is a no-op; of an existing one it replaces what it gives
 *   (document, embedding) and merges metadata per key;
 * - delete removes the record.
 *
 * Outcomes follow Jepsen: an ok write took effect between its call and its answer; a failed
 * one never did; an indeterminate one (timeout, lost connection, 5xx) may take effect at any
 * moment after its call, or never. Each record is written by one client only, one operation
 * at a time, so its history is a sequence and the set of possible states is exact.
 */

/** Metadata values the run writes: integers and strings (compared as text). */
export type MetadataValue = number | string;

export interface RecordValue {
  document: string;
  embedding: number[];
  metadata: Record<string, MetadataValue>;
}

/** A record's state: null when absent. */
export type RecordState = RecordValue | null;

export type WriteKind = "add" | "upsert" | "update" | "delete";

/** What one write does to one record (an operation on several ids has one per id). */
export interface RecordWrite {
  kind: WriteKind;
  document?: string;
  embedding?: number[];
  metadata?: Record<string, MetadataValue>;
}

export function applyWrite(state: RecordState, write: RecordWrite): RecordState {
  switch (write.kind) {
    case "delete":
      return null;
    case "add":
      return state ?? { document: write.document!, embedding: write.embedding!, metadata: { ...write.metadata! } };
    case "upsert":
      if (!state) return { document: write.document!, embedding: write.embedding!, metadata: { ...write.metadata! } };
      return { document: write.document!, embedding: write.embedding!, metadata: { ...state.metadata, ...write.metadata } };
    case "update":
      if (!state) return null;
      return {
        document: write.document ?? state.document,
        embedding: write.embedding ?? state.embedding,
        metadata: write.metadata ? { ...state.metadata, ...write.metadata } : state.metadata,
      };
  }
}

/**
 * A metadata object's text with keys sorted, in the form `canonicalGet` gives it
 * (`{"a":1,"b":"x"}`): an integer's text is its digits, so `1` and `1.0` differ.
 */
export function metadataText(metadata: Record<string, MetadataValue>): string {
  const keys = Object.keys(metadata).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(",")}}`;
}

/** One text per distinct state; what an instance holds is read into the same text. */
export function stateKey(state: RecordState): string {
  if (!state) return "absent";
  return stateKeyOf(state.document, state.embedding, metadataText(state.metadata));
}

/** The key of a record read from an instance: its document, embedding values and metadata text. */
export function stateKeyOf(document: string | null, embedding: number[] | null, metadataRaw: string): string {
  return `doc=${JSON.stringify(document)} emb=[${(embedding ?? []).join(",")}] meta=${metadataRaw}`;
}

/** One event of a record's history, in call order. */
export type RecordEvent =
  | { type: "write"; write: RecordWrite; outcome: "ok" | "failed" | "indeterminate"; opRef: string }
  | { type: "read"; observed: string; opRef: string };

/** A read that saw a state no history allows. */
export interface ReadAnomaly {
  opRef: string;
  observed: string;
  allowed: string[];
}

export interface Possibilities {
  /** Keys of every state the record may end in. */
  finalStates: Set<string>;
  readAnomalies: ReadAnomaly[];
  /** Indeterminate writes of this record. */
  indeterminate: number;
}

/** Thrown when a record's history allows too many states to enumerate (see {@link configsMax}). */
export class TooManyPossibilities extends Error {}

/** Bound on (state, pending writes) pairs per record, far above what a run produces. */
const configsMax = 200_000;

interface Config {
  state: RecordState;
  /** Indices of indeterminate writes not applied in this branch, ascending. */
  pending: number[];
}

const configKey = (c: Config) => `${stateKey(c.state)}#${c.pending.join(",")}`;

/**
 * Every configuration reachable by applying any of the pending writes, in any order:
 * an indeterminate write may take effect at any moment after its call.
 */
function closure(configs: Map<string, Config>, writes: RecordWrite[]): Map<string, Config> {
  const out = new Map(configs);
  const queue = [...configs.values()];
  while (queue.length) {
    const c = queue.pop()!;
    for (const p of c.pending) {
      const next: Config = { state: applyWrite(c.state, writes[p]!), pending: c.pending.filter((q) => q !== p) };
      const key = configKey(next);
      if (out.has(key)) continue;
      out.set(key, next);
      if (out.size > configsMax) throw new TooManyPossibilities(`more than ${configsMax} possible states`);
      queue.push(next);
    }
  }
  return out;
}

/**
 * Replays a record's history and answers the states it may end in; each read is checked
 * against the states possible at its call (every ok write before it applied, any
 * indeterminate one applied or not).
 */
export function possibilities(events: RecordEvent[]): Possibilities {
  const writes: RecordWrite[] = events.map((e) => (e.type === "write" ? e.write : { kind: "delete" }));
  let configs = new Map<string, Config>();
  const start: Config = { state: null, pending: [] };
  configs.set(configKey(start), start);
  const readAnomalies: ReadAnomaly[] = [];
  let indeterminate = 0;

  events.forEach((event, index) => {
    if (event.type === "read") {
      configs = closure(configs, writes);
      const allowed = new Set([...configs.values()].map((c) => stateKey(c.state)));
      if (!allowed.has(event.observed)) readAnomalies.push({ opRef: event.opRef, observed: event.observed, allowed: [...allowed] });
      return;
    }
    if (event.outcome === "failed") return;
    if (event.outcome === "indeterminate") {
      indeterminate += 1;
      const next = new Map<string, Config>();
      for (const c of configs.values()) {
        const grown: Config = { state: c.state, pending: [...c.pending, index] };
        next.set(configKey(grown), grown);
      }
      configs = next;
      return;
    }
    // An ok write: any pending write may have taken effect before it.
    configs = closure(configs, writes);
    const next = new Map<string, Config>();
    for (const c of configs.values()) {
      const applied: Config = { state: applyWrite(c.state, event.write), pending: c.pending };
      next.set(configKey(applied), applied);
    }
    configs = next;
  });

  configs = closure(configs, writes);
  return { finalStates: new Set([...configs.values()].map((c) => stateKey(c.state))), readAnomalies, indeterminate };
}
