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
  /**
   * True when the write's result does not depend on the state it meets and an indeterminate
   * one is never impossible (a delete, a drop): two pending copies of it reach nothing one
   * copy does not (only the last application matters), so one is kept.
   */
  overwrites?(write: W): boolean;
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

/** Bound on (state, pending writes) pairs per object kept at once, after pruning. */
const configsMax = 200_000;
/**
 * Bound on the branches one object's check may try (about a second of work): past it the
 * object is checked by parts instead (see "projections" below).
 */
const stepsMax = 100_000;

interface Config<S> {
  state: S;
  stateKey: string;
  /**
   * Indeterminate writes not applied in this branch, as a sorted multiset of write ids:
   * writes of the same content share an id, since which of two equal writes is left
   * changes nothing.
   */
  pending: number[];
}

/** True when multiset `small` (sorted) is contained in multiset `big` (sorted). */
function containedIn(small: readonly number[], big: readonly number[]): boolean {
  if (small.length > big.length) return false;
  let j = 0;
  for (const x of small) {
    while (j < big.length && big[j]! < x) j++;
    if (j === big.length || big[j] !== x) return false;
    j++;
  }
  return true;
}

/**
 * The configurations of one moment, kept free of dominated ones: a branch in state s with
 * pending writes P can reach everything a branch in state s with pending Q ⊆ P can (it may
 * simply never apply the rest), so only the branches with the largest pending sets of each
 * state are kept. This changes no state that may be reached at any later moment.
 */
class ConfigSet<S> {
  private readonly byState = new Map<string, Config<S>[]>();
  size = 0;

  /** Adds `c` unless an equal or larger branch of its state is there; false when not added. */
  add(c: Config<S>): boolean {
    const same = this.byState.get(c.stateKey);
    if (!same) {
      this.byState.set(c.stateKey, [c]);
      this.size += 1;
    } else {
      if (same.some((o) => containedIn(c.pending, o.pending))) return false;
      const kept = same.filter((o) => !containedIn(o.pending, c.pending));
      this.size += kept.length + 1 - same.length;
      kept.push(c);
      this.byState.set(c.stateKey, kept);
    }
    if (this.size > configsMax) throw new TooManyPossibilities(`more than ${configsMax} possible states`);
    return true;
  }

  *values(): IterableIterator<Config<S>> {
    for (const list of this.byState.values()) yield* list;
  }

  stateKeys(): string[] {
    return [...this.byState.keys()];
  }
}

/**
 * Replays an object's history and answers the states it may end in; each read is checked
 * against the states possible at its call (every ok write before it applied, any
 * indeterminate one applied or not, in any order: an indeterminate write may take effect
 * at any moment after its call).
 *
 * Exact, with three reductions that change no reachable state: equal pending writes are
 * one multiset entry, a pending write that overwrites (see {@link Semantics.overwrites}) is
 * kept once, and dominated branches are dropped (see {@link ConfigSet}).
 */
export function possibilitiesOf<S, W>(events: HistoryEvent<S, W>[], semantics: Semantics<S, W>): Possibilities {
  // Write ids: one per distinct write content.
  const writeIds = new Map<string, number>();
  const writes: W[] = [];
  const idOf = (write: W) => {
    const text = JSON.stringify(write);
    let id = writeIds.get(text);
    if (id === undefined) {
      id = writes.length;
      writeIds.set(text, id);
      writes.push(write);
    }
    return id;
  };
  let steps = 0;
  const config = (state: S, pending: number[]): Config<S> => {
    if (++steps > stepsMax) throw new TooManyPossibilities(`more than ${stepsMax} branches tried`);
    return { state, stateKey: semantics.key(state), pending };
  };

  const closure = (configs: ConfigSet<S>): ConfigSet<S> => {
    const out = new ConfigSet<S>();
    const queue: Config<S>[] = [];
    for (const c of configs.values()) if (out.add(c)) queue.push(c);
    while (queue.length) {
      const c = queue.pop()!;
      for (let i = 0; i < c.pending.length; i++) {
        // Equal writes: applying the first of them stands for any.
        if (i > 0 && c.pending[i] === c.pending[i - 1]) continue;
        const state = semantics.apply(c.state, writes[c.pending[i]!]!, "indeterminate");
        if (state === impossible) continue;
        const next = config(state, [...c.pending.slice(0, i), ...c.pending.slice(i + 1)]);
        if (out.add(next)) queue.push(next);
      }
    }
    return out;
  };

  let configs = new ConfigSet<S>();
  configs.add(config(semantics.initial, []));
  const readAnomalies: Anomaly[] = [];
  let indeterminate = 0;

  for (const event of events) {
    if (event.type === "read") {
      configs = closure(configs);
      const allowed = new Set([...configs.values()].map((c) => event.observe(c.state)));
      if (!allowed.has(event.observed)) readAnomalies.push({ opRef: event.opRef, observed: event.observed, allowed: [...allowed] });
      continue;
    }
    if (event.outcome === "failed") continue;
    if (event.outcome === "indeterminate") {
      indeterminate += 1;
      const id = idOf(event.write);
      const once = semantics.overwrites?.(event.write) ?? false;
      const next = new ConfigSet<S>();
      for (const c of configs.values()) {
        if (once && c.pending.includes(id)) {
          next.add(c);
          continue;
        }
        const pending = [...c.pending, id].sort((a, b) => a - b);
        next.add({ ...c, pending });
      }
      configs = next;
      continue;
    }
    // An ok write: any pending write may have taken effect before it.
    configs = closure(configs);
    const next = new ConfigSet<S>();
    for (const c of configs.values()) {
      const state = semantics.apply(c.state, event.write, "ok");
      if (state === impossible) continue;
      next.add(config(state, c.pending));
    }
    if (next.size === 0) {
      return { finalStates: new Set(), readAnomalies, impossibleWrite: { opRef: event.opRef, observed: "ok", allowed: configs.stateKeys() }, indeterminate };
    }
    configs = next;
  }

  configs = closure(configs);
  return { finalStates: new Set(configs.stateKeys()), readAnomalies, impossibleWrite: null, indeterminate };
}

/** One record: absent at first. */
export const recordSemantics: Semantics<RecordState, RecordWrite> = {
  initial: null,
  apply: (state, write) => applyWrite(state, write),
  key: stateKey,
  overwrites: (write) => write.kind === "delete",
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
  // A drop leaves no collection whatever it meets (an indeterminate one is never impossible).
  overwrites: (write) => write.kind === "drop",
  key(state) {
    if (!state) return noCollection;
    return `{${[...state.keys()].sort().map((id) => `${id}: ${stateKey(state.get(id)!)}`).join("; ")}}`;
  },
};

// ---------------------------------------------------------------- projections

/**
 * When an object's whole state allows too many branches to enumerate, it is checked by
 * projections instead: one part of the state at a time (a record's document, its embedding,
 * one metadata key; one id of a collection). A write's effect on a projection depends on
 * that projection alone (whether the record exists, and that field), so each projection's
 * possible states are exactly the projections of the whole's possible states. Checking the
 * parts one by one is weaker than checking them together (it cannot tell that two parts
 * came from different branches) but never reports what the whole allows, and each part's
 * state space is small.
 */

/** A part of a record: its document, its embedding, or one metadata key (`metadata.<key>`). */
export type RecordField = "document" | "embedding" | `metadata.${string}`;

/** The record reduced to one field (absent stays absent): the rest is emptied. */
export function projectRecord(state: RecordState, field: RecordField): RecordState {
  if (!state) return null;
  const metadata: Record<string, MetadataValue> = {};
  if (field.startsWith("metadata.")) {
    const key = field.slice("metadata.".length);
    if (key in state.metadata) metadata[key] = state.metadata[key]!;
  }
  return { document: field === "document" ? state.document : "", embedding: field === "embedding" ? state.embedding : [], metadata };
}

/** Every field the writes touch (document and embedding always). */
export function fieldsOf(writes: Iterable<RecordWrite>): RecordField[] {
  const keys = new Set<string>();
  for (const w of writes) for (const key of Object.keys(w.metadata ?? {})) keys.add(key);
  return ["document", "embedding", ...[...keys].sort().map((k) => `metadata.${k}` as const)];
}

/**
 * A state key back into a record (see {@link stateKeyOf}); null for "absent". Metadata
 * values are read as JSON, so `1` and `1.0` read alike here (projections only).
 */
export function parseStateKey(key: string): RecordState {
  if (key === "absent") return null;
  const match = /^doc=(null|"(?:[^"\\]|\\.)*") emb=\[([^\]]*)\] meta=(.*)$/s.exec(key);
  if (!match) throw new Error(`not a record state key: ${key.slice(0, 200)}`);
  const document = JSON.parse(match[1]!) as string | null;
  const embedding = match[2] === "" ? [] : match[2]!.split(",").map(Number);
  const metadata = (JSON.parse(match[3]!) ?? {}) as Record<string, MetadataValue>;
  return { document: document as string, embedding, metadata };
}

/** The key of one field of a record state key. */
export function projectKey(key: string, field: RecordField): string {
  return stateKey(projectRecord(parseStateKey(key), field));
}

/** One record seen through one field. */
export function recordFieldSemantics(field: RecordField): Semantics<RecordState, RecordWrite> {
  return {
    initial: null,
    apply: (state, write) => projectRecord(applyWrite(state, write), field),
    key: stateKey,
    overwrites: (write) => write.kind === "delete",
  };
}

/** One id of a churn collection: null while the collection does not exist, else that record. */
export type CollectionIdState = { record: RecordState } | null;

/**
 * One id of a collection that is created, dropped and written to, optionally reduced to one
 * field: a record write to other ids only proves (when ok) that the collection existed.
 */
export function collectionIdSemantics(id: string, field?: RecordField): Semantics<CollectionIdState, CollectionWrite> {
  const project = (record: RecordState) => (field ? projectRecord(record, field) : record);
  return {
    initial: null,
    apply(state, write, outcome) {
      switch (write.kind) {
        case "create":
          return state ?? { record: null };
        case "drop":
          return state ? null : outcome === "ok" ? impossible : null;
        case "records": {
          if (!state) return outcome === "ok" ? impossible : null;
          let record = state.record;
          for (const [target, w] of write.writes) if (target === id) record = project(applyWrite(record, w));
          return record === state.record ? state : { record };
        }
      }
    },
    key: (state) => (state ? stateKey(state.record) : noCollection),
    overwrites: (write) => write.kind === "drop",
  };
}
