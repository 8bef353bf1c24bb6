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

/**
 * How one object of the model (a record, or a whole collection) changes: its first state,
 * what a write does to it, and one text per distinct state. `apply` answers
 * {@link impossible} when an ok write could not have succeeded in that state (for example a
 * record write to a collection that does not exist): that branch of the history is dropped.
 */
export interface Semantics<S, W> {
  initial: S;
  apply(state: S, write: W, outcome: "ok" | "indeterminate"): S | typeof impossible;
  key(state: S): string;
}

export const impossible = Symbol("impossible");

/** One event of an object's history, in call order. */
export type HistoryEvent<S, W> =
  | { type: "write"; write: W; outcome: "ok" | "failed" | "indeterminate"; opRef: string }
  /** A read: `observe` turns a state into what the read would have seen of it. */
  | { type: "read"; observed: string; observe: (state: S) => string; opRef: string };

/** A read that saw a state no history allows, or an ok write that no state allows. */
export interface Anomaly {
  opRef: string;
  observed: string;
  allowed: string[];
}

export interface Possibilities {
  /** Keys of every state the object may end in. */
  finalStates: Set<string>;
  /** Reads that saw what no history allows at their moment. */
  readAnomalies: Anomaly[];
  /** An ok write that no possible state allowed (the check of this object stops there). */
  impossibleWrite: Anomaly | null;
  /** Indeterminate writes of this object. */
  indeterminate: number;
}

/** Thrown when a history allows too many states to enumerate (see {@link configsMax}). */
export class TooManyPossibilities extends Error {}

/** Bound on (state, pending writes) pairs per object, far above what a run produces. */
const configsMax = 200_000;

interface Config<S> {
  state: S;
  /** Indices of indeterminate writes not applied in this branch, ascending. */
  pending: number[];
}

/**
 * Replays an object's history and answers the states it may end in; each read is checked
 * against the states possible at its call (every ok write before it applied, any
 * indeterminate one applied or not, in any order: an indeterminate write may take effect
 * at any moment after its call).
 */
export function possibilitiesOf<S, W>(events: HistoryEvent<S, W>[], semantics: Semantics<S, W>): Possibilities {
  const configKey = (c: Config<S>) => `${semantics.key(c.state)}#${c.pending.join(",")}`;
  const writeAt = (i: number) => (events[i] as { write: W }).write;

  const closure = (configs: Map<string, Config<S>>) => {
    const out = new Map(configs);
    const queue = [...configs.values()];
    while (queue.length) {
      const c = queue.pop()!;
      for (const p of c.pending) {
        const state = semantics.apply(c.state, writeAt(p), "indeterminate");
        if (state === impossible) continue;
        const next: Config<S> = { state, pending: c.pending.filter((q) => q !== p) };
        const key = configKey(next);
        if (out.has(key)) continue;
        out.set(key, next);
        if (out.size > configsMax) throw new TooManyPossibilities(`more than ${configsMax} possible states`);
        queue.push(next);
      }
    }
    return out;
  };

  let configs = new Map<string, Config<S>>();
  const start: Config<S> = { state: semantics.initial, pending: [] };
  configs.set(configKey(start), start);
  const readAnomalies: Anomaly[] = [];
  let indeterminate = 0;

  for (let index = 0; index < events.length; index++) {
    const event = events[index]!;
    if (event.type === "read") {
      configs = closure(configs);
      const allowed = new Set([...configs.values()].map((c) => event.observe(c.state)));
      if (!allowed.has(event.observed)) readAnomalies.push({ opRef: event.opRef, observed: event.observed, allowed: [...allowed] });
      continue;
    }
    if (event.outcome === "failed") continue;
    if (event.outcome === "indeterminate") {
      indeterminate += 1;
      const next = new Map<string, Config<S>>();
      for (const c of configs.values()) {
        const grown: Config<S> = { state: c.state, pending: [...c.pending, index] };
        next.set(configKey(grown), grown);
      }
      configs = next;
      continue;
    }
    // An ok write: any pending write may have taken effect before it.
    configs = closure(configs);
    const next = new Map<string, Config<S>>();
    for (const c of configs.values()) {
      const state = semantics.apply(c.state, event.write, "ok");
      if (state === impossible) continue;
      const applied: Config<S> = { state, pending: c.pending };
      next.set(configKey(applied), applied);
    }
    if (next.size === 0) {
      const allowed = [...new Set([...configs.values()].map((c) => semantics.key(c.state)))];
      return { finalStates: new Set(), readAnomalies, impossibleWrite: { opRef: event.opRef, observed: "ok", allowed }, indeterminate };
    }
    configs = next;
  }

  configs = closure(configs);
  return { finalStates: new Set([...configs.values()].map((c) => semantics.key(c.state))), readAnomalies, impossibleWrite: null, indeterminate };
}

/** One record: absent at first. */
export const recordSemantics: Semantics<RecordState, RecordWrite> = {
  initial: null,
  apply: (state, write) => applyWrite(state, write),
  key: stateKey,
};

/** A record's history event (reads observe the record itself). */
export type RecordEvent =
  | { type: "write"; write: RecordWrite; outcome: "ok" | "failed" | "indeterminate"; opRef: string }
  | { type: "read"; observed: string; opRef: string };

/** The possible states of one record (see {@link possibilitiesOf}). */
export function possibilities(events: RecordEvent[]): Possibilities {
  return possibilitiesOf(
    events.map((e) => (e.type === "read" ? { ...e, observe: stateKey } : e)),
    recordSemantics,
  );
}

// ---------------------------------------------------------------- whole collections

/**
 * A collection that one client creates, drops and writes to (the collection churn): null
 * while it does not exist, else its records by id.
 */
export type CollectionState = ReadonlyMap<string, RecordValue> | null;

export type CollectionWrite =
  | { kind: "create" }
  | { kind: "drop" }
  /** Record writes of one operation, per id. */
  | { kind: "records"; writes: Array<[string, RecordWrite]> };

export const noCollection = "no collection";

/** What a read of `ids` sees of a collection: each id's state key, or {@link noCollection}. */
export function collectionView(state: CollectionState, ids: readonly string[]): string {
  if (!state) return noCollection;
  return ids.map((id) => `${id}: ${stateKey(state.get(id) ?? null)}`).join("\n");
}

export const collectionSemantics: Semantics<CollectionState, CollectionWrite> = {
  initial: null,
  apply(state, write, outcome) {
    switch (write.kind) {
      case "create":
        return state ?? new Map();
      case "drop":
        // An ok drop of a collection that does not exist is impossible (Chroma answers 404).
        return state ? null : outcome === "ok" ? impossible : null;
      case "records": {
        // Chroma answers 404 to a record write on a missing collection: an ok one proves it existed.
        if (!state) return outcome === "ok" ? impossible : null;
        const next = new Map(state);
        for (const [id, w] of write.writes) {
          const record = applyWrite(next.get(id) ?? null, w);
          if (record) next.set(id, record);
          else next.delete(id);
        }
        return next;
      }
    }
  },
  key(state) {
    if (!state) return noCollection;
    return `{${[...state.keys()].sort().map((id) => `${id}: ${stateKey(state.get(id)!)}`).join("; ")}}`;
  },
};
