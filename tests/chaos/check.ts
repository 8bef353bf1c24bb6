/**
 * The checks at the end of a chaos run, once the log has drained:
 * - every record on every instance is in a state its history allows (model.ts): an ok write
 *   is there with its last ok value unless a later write changed it; a record acknowledged
 *   as deleted is absent unless a later ok or indeterminate write re-added it; a failed write
 *   left nothing; an id no client wrote is nowhere;
 * - every ok get read a state its history allowed at that moment (read-your-writes);
 * - the two instances hold the same records, byte for byte once canonicalized;
 * - chroma-lb's own consistency check agrees.
 */
import type { InstanceName } from "./cluster";
import {
  collectionIdSemantics,
  collectionSemantics,
  collectionView,
  fieldsOf,
  noCollection,
  possibilities,
  possibilitiesOf,
  projectKey,
  recordFieldSemantics,
  stateKey,
  TooManyPossibilities,
  type Anomaly,
  type CollectionIdState,
  type CollectionState,
  type CollectionWrite,
  type HistoryEvent,
  type RecordEvent,
  type RecordField,
  type RecordWrite,
} from "./model";
import { readRecords } from "./records";
import type { OpRecord } from "./workload";

const T = "/api/v2/tenants/default_tenant/databases/default_database";
/** Enough for every record of a collection in one page: clients × ids per client is far below it. */
const getLimit = 10_000;

export interface CheckInput {
  lbUrl: string;
  instanceUrls: Record<InstanceName, string>;
  collections: readonly string[];
  /** Every id a client may have written, per collection the same. */
  ids: readonly string[];
  /** Collections the churner creates, drops and writes to, alone (any id it did not write is caught by the model). */
  churnCollections: readonly string[];
  history: readonly OpRecord[];
}

export interface CheckResult {
  violations: string[];
  /** (collection, id) pairs checked against the model, on each instance. */
  recordsChecked: number;
  /** Of those, present at the end (on the primary). */
  recordsPresent: number;
  /** Records whose history holds at least one indeterminate write. */
  recordsWithIndeterminateWrites: number;
  /** Of the records checked, those whose history allowed too many states to check whole: checked field by field. */
  recordsCheckedByField: number;
  readsChecked: number;
  /** Churn collections checked, and how many of them exist at the end. */
  churnCollectionsChecked: number;
  churnCollectionsPresent: number;
  /** Of the churn collections checked, those checked id by id (their whole state allowed too many branches). */
  churnCollectionsCheckedById: number;
  /** Creates and drops of churn collections acknowledged. */
  churnCatalogOpsOk: number;
  /** Gets answered from a copy marked diverged (not held to read-your-writes). */
  readsFromDivergedCopies: number;
  /** The consistency check's summary. */
  consistency: { collections_checked: number; collections_differing: number } | null;
}

const short = (text: string, max = 240) => (text.length > max ? `${text.slice(0, max)}…` : text);

/** A record's history in call order, as the model takes it. */
function eventsOf(history: readonly OpRecord[], collection: string, id: string): RecordEvent[] {
  const events: RecordEvent[] = [];
  for (const op of history) {
    if (op.collection !== collection) continue;
    const i = op.ids.indexOf(id);
    if (i < 0) continue;
    if (op.writes) events.push({ type: "write", write: op.writes[i]!, outcome: op.outcome, opRef: op.ref });
    else if (op.kind === "get" && op.outcome === "ok" && op.observed && !op.divergedRead) events.push({ type: "read", observed: op.observed[i]!, opRef: op.ref });
  }
  return events;
}

/** The lines of a record's history, for a violation's details. */
function describeHistory(history: readonly OpRecord[], collection: string, id: string, untilRef?: string, lastMax = 12): string {
  const ops = history.filter((op) => op.collection === collection && op.ids.includes(id) && (op.writes || op.kind === "get"));
  const until = untilRef === undefined ? ops.length : ops.findIndex((op) => op.ref === untilRef) + 1;
  const lines = ops
    .slice(0, until)
    .map((op) => {
      const i = op.ids.indexOf(id);
      const what = op.writes ? JSON.stringify(op.writes[i]) : `get -> ${op.observed?.[i] ?? "-"}`;
      return `      ${op.ref} +${op.startMs}..${op.endMs} ms ${op.outcome}${op.status ? ` ${op.status}` : ""}${op.error ? ` (${short(op.error, 80)})` : ""}: ${what}`;
    });
  const skipped = lines.length > lastMax ? [`      … ${lines.length - lastMax} earlier operations`] : [];
  return [...skipped, ...lines.slice(-lastMax)].join("\n");
}

/**
 * What an object's history allows, found whole when its branches can be enumerated, else
 * part by part (see "projections" in model.ts): a part that allows none of what was seen is
 * a violation either way.
 */
export interface Checked {
  /** How it was checked: "whole", or the parts (fields, ids) checked one by one. */
  mode: "whole" | "by field" | "by id";
  readAnomalies: Anomaly[];
  impossibleWrite: Anomaly | null;
  indeterminate: number;
  /** The parts of `actual` (a final state key) that no possible final state allows; empty when it is allowed. */
  refusedParts(actual: string): string[];
  /** The possible final states, for messages (per part when checked by parts). */
  finals: string[];
}

/** Names a part in anomalies and messages. */
const labelled = (label: string, anomalies: Anomaly[]): Anomaly[] => anomalies.map((a) => ({ ...a, opRef: `${a.opRef} [${label}]` }));

/**
 * One record's history against the model: whole when possible, else field by field (the
 * fields any write, read or `actuals` holds). Throws TooManyPossibilities when even one
 * field is too large.
 */
export function checkRecord(events: RecordEvent[], actuals: readonly string[] = []): Checked {
  try {
    const p = possibilities(events);
    return {
      mode: "whole",
      readAnomalies: p.readAnomalies,
      impossibleWrite: p.impossibleWrite,
      indeterminate: p.indeterminate,
      refusedParts: (actual) => (p.finalStates.has(actual) ? [] : ["the record"]),
      finals: [...p.finalStates],
    };
  } catch (error) {
    if (!(error instanceof TooManyPossibilities)) throw error;
  }
  const seen = [...events.flatMap((e) => (e.type === "read" ? [e.observed] : [])), ...actuals].filter((k) => k !== "absent");
  const seenWrites: RecordWrite[] = seen.map((k) => ({ kind: "upsert", metadata: parseMetadata(k) }));
  const fields = fieldsOf([...events.flatMap((e) => (e.type === "write" ? [e.write] : [])), ...seenWrites]);
  const parts = fields.map((field) => ({
    field,
    p: possibilitiesOf(
      events.map((e) => (e.type === "read" ? { type: "read" as const, observed: projectKey(e.observed, field), observe: stateKey, opRef: e.opRef } : e)),
      recordFieldSemantics(field),
    ),
  }));
  return {
    mode: "by field",
    readAnomalies: parts.flatMap(({ field, p }) => labelled(field, p.readAnomalies)),
    impossibleWrite: null,
    indeterminate: parts[0]?.p.indeterminate ?? 0,
    refusedParts: (actual) => parts.filter(({ field, p }) => !p.finalStates.has(projectKey(actual, field))).map(({ field }) => field),
    finals: parts.map(({ field, p }) => `${field}: ${[...p.finalStates].join(" / ")}`),
  };
}

/** The metadata of a state key, for the fields it names. */
function parseMetadata(key: string): Record<string, number | string> {
  const match = / meta=(.*)$/s.exec(key);
  return (match ? (JSON.parse(match[1]!) ?? {}) : {}) as Record<string, number | string>;
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status}: ${short(text)}`);
  return JSON.parse(text) as T;
}

/** Runs every check; throws only when chroma-lb or an instance cannot be read at all. */
export async function checkFinalState(input: CheckInput): Promise<CheckResult> {
  const violations: string[] = [];
  const result: CheckResult = {
    violations,
    recordsChecked: 0,
    recordsPresent: 0,
    recordsWithIndeterminateWrites: 0,
    recordsCheckedByField: 0,
    readsChecked: 0,
    churnCollectionsChecked: 0,
    churnCollectionsPresent: 0,
    churnCollectionsCheckedById: 0,
    churnCatalogOpsOk: input.history.filter((op) => (op.kind === "create" || op.kind === "drop") && op.outcome === "ok").length,
    readsFromDivergedCopies: input.history.filter((op) => op.divergedRead).length,
    consistency: null,
  };
  const names = Object.keys(input.instanceUrls) as InstanceName[];

  for (const op of input.history) {
    if (op.kind === "get" && op.outcome === "ok" && !op.observed) violations.push(`read ${op.ref}: ${op.error ?? "no records read"}`);
    // The shared collections are never dropped: a 404 denies an acknowledged create.
    if (op.collectionMissing && input.collections.includes(op.collection)) violations.push(`read ${op.ref}: ${op.collection} answered 404 (${short(op.error ?? "", 160)})`);
  }

  const { mappings } = await getJson<{ mappings: Array<{ collection_name: string; instances: Record<string, string> }> }>(`${input.lbUrl}/collection/mappings`);
  for (const collection of input.collections) {
    const mapping = mappings.find((m) => m.collection_name === collection);
    if (!mapping) {
      violations.push(`collection ${collection}: no mapping in GET /collection/mappings`);
      continue;
    }
    // Each instance's copy, read directly (never through chroma-lb).
    const copies = new Map<InstanceName, { canonical: string; records: Map<string, string> }>();
    for (const name of names) {
      const uuid = mapping.instances[name];
      if (!uuid) {
        violations.push(`collection ${collection}: no ${name} UUID in its mapping`);
        continue;
      }
      const res = await fetch(`${input.instanceUrls[name]}${T}/collections/${uuid}/get`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ limit: getLimit, include: ["documents", "metadatas", "embeddings"] }),
        signal: AbortSignal.timeout(60_000),
      });
      const text = await res.text();
      if (res.status !== 200) {
        violations.push(`collection ${collection} on ${name} (${uuid}): get answered ${res.status}: ${short(text)}`);
        continue;
      }
      copies.set(name, readRecords(text));
    }
    if (copies.size < 2) continue;

    // The instances identical, record by record.
    const [first, second] = names.map((n) => copies.get(n)!);
    if (first!.canonical !== second!.canonical) {
      const differing = new Set<string>();
      for (const id of new Set([...first!.records.keys(), ...second!.records.keys()])) {
        if (first!.records.get(id) !== second!.records.get(id)) differing.add(id);
      }
      const detail = [...differing]
        .slice(0, 5)
        .map((id) => `\n    ${id}: ${names[0]} ${first!.records.get(id) ?? "absent"} | ${names[1]} ${second!.records.get(id) ?? "absent"}`)
        .join("");
      violations.push(`collection ${collection}: the instances differ (${differing.size} records${differing.size === 0 ? ", in text only" : ""})${detail}`);
    }

    // Ids no client wrote.
    for (const [name, copy] of copies) {
      for (const id of copy.records.keys()) if (!input.ids.includes(id)) violations.push(`collection ${collection} on ${name}: id ${id} that no client wrote`);
    }

    // Every id against its history.
    for (const id of input.ids) {
      const events = eventsOf(input.history, collection, id);
      const actuals = [...copies.values()].map((copy) => copy.records.get(id) ?? "absent");
      let allowed: Checked;
      try {
        allowed = checkRecord(events, actuals);
      } catch (error) {
        if (!(error instanceof TooManyPossibilities)) throw error;
        violations.push(`collection ${collection} id ${id}: history too large to check, even field by field (${error.message})`);
        continue;
      }
      result.recordsChecked += 1;
      if (allowed.mode !== "whole") result.recordsCheckedByField += 1;
      if (allowed.indeterminate > 0) result.recordsWithIndeterminateWrites += 1;
      result.readsChecked += events.filter((e) => e.type === "read").length;
      if (copies.get(names[0]!)?.records.has(id)) result.recordsPresent += 1;
      for (const anomaly of allowed.readAnomalies) {
        violations.push(
          `collection ${collection} id ${id}: read ${anomaly.opRef} saw ${anomaly.observed}; allowed then: ${anomaly.allowed.map((a) => short(a, 160)).join(" | ")}\n` +
            describeHistory(input.history, collection, id, anomaly.opRef.split(" ")[0]),
        );
      }
      for (const [name, copy] of copies) {
        const actual = copy.records.get(id) ?? "absent";
        const refused = allowed.refusedParts(actual);
        if (refused.length === 0) continue;
        const possible = allowed.finals;
        const what =
          actual === "absent"
            ? "missing (an acknowledged write is lost)"
            : allowed.mode === "whole" && possible.every((s) => s === "absent")
              ? `present although its history leaves it absent: ${actual}`
              : `holds ${actual}`;
        violations.push(
          `collection ${collection} id ${id} on ${name}: ${what}${allowed.mode === "whole" ? "" : ` (checked ${allowed.mode}; refused: ${refused.join(", ")})`}; possible: ${possible.map((s) => short(s, 160)).join(" | ")}\n` +
            describeHistory(input.history, collection, id),
        );
      }
    }
  }

  for (const collection of input.churnCollections) {
    await checkChurnCollection(input, collection, mappings, result);
  }

  // chroma-lb's own check must agree.
  const report = await getJson<{
    collections_checked: number;
    collections_differing: number;
    collections: Array<{ collection_name: string; consistent: boolean; differences: string[]; skipped?: string }>;
  }>(`${input.lbUrl}/admin/consistency`);
  result.consistency = { collections_checked: report.collections_checked, collections_differing: report.collections_differing };
  if (report.collections_differing !== 0) violations.push(`GET /admin/consistency: collections_differing ${report.collections_differing}`);
  for (const c of report.collections) {
    if (!c.consistent || c.skipped) violations.push(`GET /admin/consistency: ${c.collection_name} ${c.skipped ? `skipped: ${c.skipped}` : `differs: ${c.differences.join("; ")}`}`);
  }
  const checked = new Set(report.collections.map((c) => c.collection_name));
  for (const collection of input.collections) if (!checked.has(collection)) violations.push(`GET /admin/consistency: ${collection} not checked`);
  return result;
}

/** A churn collection's history as one object: creates, drops, record writes and reads, in call order. */
function collectionEventsOf(history: readonly OpRecord[], collection: string): HistoryEvent<CollectionState, CollectionWrite>[] {
  const events: HistoryEvent<CollectionState, CollectionWrite>[] = [];
  for (const op of history) {
    if (op.collection !== collection) continue;
    if (op.kind === "create" || op.kind === "drop") events.push({ type: "write", write: { kind: op.kind }, outcome: op.outcome, opRef: op.ref });
    else if (op.writes) events.push({ type: "write", write: { kind: "records", writes: op.ids.map((id, i) => [id, op.writes![i]!]) }, outcome: op.outcome, opRef: op.ref });
    else if (op.kind === "get" && !op.divergedRead && (op.collectionMissing || (op.outcome === "ok" && op.observed))) {
      const ids = op.ids;
      const observed = op.collectionMissing ? noCollection : ids.map((id, i) => `${id}: ${op.observed![i]}`).join("\n");
      events.push({ type: "read", observed, observe: (state) => collectionView(state, ids), opRef: op.ref });
    }
  }
  return events;
}

function describeCollectionHistory(history: readonly OpRecord[], collection: string, untilRef?: string, lastMax = 16): string {
  const ops = history.filter((op) => op.collection === collection && op.kind !== "query");
  const until = untilRef === undefined ? ops.length : ops.findIndex((op) => op.ref === untilRef) + 1;
  const lines = ops.slice(0, until).map((op) => {
    const what =
      op.kind === "create" || op.kind === "drop"
        ? op.kind
        : op.writes
          ? op.ids.map((id, i) => `${id} ${JSON.stringify(op.writes![i])}`).join(", ")
          : `get ${op.collectionMissing ? "-> no collection" : op.ids.map((id, i) => `${id} -> ${op.observed?.[i] ?? "-"}`).join(", ")}`;
    return `      ${op.ref} +${op.startMs}..${op.endMs} ms ${op.outcome}${op.status ? ` ${op.status}` : ""}${op.error ? ` (${short(op.error, 80)})` : ""}: ${what}`;
  });
  const skipped = lines.length > lastMax ? [`      … ${lines.length - lastMax} earlier operations`] : [];
  return [...skipped, ...lines.slice(-lastMax)].join("\n");
}

/** One id of a churn collection's history, as that id's own object (see collectionIdSemantics). */
function collectionIdEventsOf(history: readonly OpRecord[], collection: string, id: string, field?: RecordField): HistoryEvent<CollectionIdState, CollectionWrite>[] {
  const project = (key: string) => (field ? projectKey(key, field) : key);
  const events: HistoryEvent<CollectionIdState, CollectionWrite>[] = [];
  for (const op of history) {
    if (op.collection !== collection) continue;
    const at = op.ids.indexOf(id);
    if (op.kind === "create" || op.kind === "drop") events.push({ type: "write", write: { kind: op.kind }, outcome: op.outcome, opRef: op.ref });
    else if (op.writes) {
      // A write to other ids changes nothing of this one; an ok one still proves the collection existed.
      if (at < 0 && op.outcome !== "ok") continue;
      events.push({ type: "write", write: { kind: "records", writes: op.ids.map((x, i) => [x, op.writes![i]!]) }, outcome: op.outcome, opRef: op.ref });
    } else if (op.kind === "get" && !op.divergedRead && (op.collectionMissing || (op.outcome === "ok" && op.observed))) {
      const observed = op.collectionMissing ? noCollection : at >= 0 ? project(op.observed![at]!) : "exists";
      const observe = (state: CollectionIdState) => (!state ? noCollection : at >= 0 ? stateKey(state.record) : "exists");
      events.push({ type: "read", observed, observe, opRef: op.ref });
    }
  }
  return events;
}

/**
 * One id of a churn collection: whole, or field by field when that is too large. `actuals`
 * are the final keys seen ({@link noCollection} when the collection is missing).
 */
function checkCollectionId(history: readonly OpRecord[], collection: string, id: string, actuals: readonly string[]): Checked {
  // The run creates every collection before the clients start.
  const whole = (field?: RecordField) =>
    possibilitiesOf(collectionIdEventsOf(history, collection, id, field), { ...collectionIdSemantics(id, field), initial: { record: null } });
  try {
    const p = whole();
    return {
      mode: "by id",
      readAnomalies: labelled(id, p.readAnomalies),
      impossibleWrite: p.impossibleWrite,
      indeterminate: p.indeterminate,
      refusedParts: (actual) => (p.finalStates.has(actual) ? [] : [id]),
      finals: [`${id}: ${[...p.finalStates].join(" / ")}`],
    };
  } catch (error) {
    if (!(error instanceof TooManyPossibilities)) throw error;
  }
  const writes = history.filter((op) => op.collection === collection && op.writes).flatMap((op) => op.writes!.filter((_, i) => op.ids[i] === id));
  const seen = [...history.filter((op) => op.collection === collection && op.observed).flatMap((op) => op.observed!.filter((_, i) => op.ids[i] === id)), ...actuals];
  const seenWrites: RecordWrite[] = seen.filter((k) => k !== "absent" && k !== noCollection).map((k) => ({ kind: "upsert", metadata: parseMetadata(k) }));
  const parts = fieldsOf([...writes, ...seenWrites]).map((field) => ({ field, p: whole(field) }));
  const keyOf = (actual: string, field: RecordField) => (actual === noCollection ? noCollection : projectKey(actual, field));
  return {
    mode: "by id",
    readAnomalies: parts.flatMap(({ field, p }) => labelled(`${id} ${field}`, p.readAnomalies)),
    impossibleWrite: parts.map(({ p }) => p.impossibleWrite).find((w) => w) ?? null,
    indeterminate: parts[0]?.p.indeterminate ?? 0,
    refusedParts: (actual) => parts.filter(({ field, p }) => !p.finalStates.has(keyOf(actual, field))).map(({ field }) => `${id} ${field}`),
    finals: parts.map(({ field, p }) => `${id} ${field}: ${[...p.finalStates].join(" / ")}`),
  };
}

/** What one instance holds of a churn collection. */
export interface FoundCollection {
  /** `{id: key; ...}`, or {@link noCollection}. */
  key: string;
  canonical: string | null;
  /** Each record's state key; null when the collection is missing. */
  records: Map<string, string> | null;
}

/**
 * A churn collection at the end: on each instance (looked up by name, directly) it exists
 * exactly when its history allows, with records its history allows; both instances agree;
 * chroma-lb maps it exactly when it exists, to the UUID each instance holds it under. The
 * history is checked whole when its branches can be enumerated, else id by id.
 */
async function checkChurnCollection(
  input: CheckInput,
  collection: string,
  mappings: Array<{ collection_name: string; instances: Record<string, string> }>,
  result: CheckResult,
): Promise<void> {
  const { violations } = result;
  const names = Object.keys(input.instanceUrls) as InstanceName[];

  const mapping = mappings.find((m) => m.collection_name === collection);
  const found = new Map<InstanceName, FoundCollection>();
  for (const name of names) {
    const url = `${input.instanceUrls[name]}${T}/collections/${collection}`;
    const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
    const text = await res.text();
    if (res.status === 404) {
      found.set(name, { key: noCollection, canonical: null, records: null });
      if (mapping) violations.push(`churn collection ${collection}: mapped by chroma-lb but missing on ${name}`);
      continue;
    }
    if (res.status !== 200) {
      violations.push(`churn collection ${collection} on ${name}: GET answered ${res.status}: ${short(text)}`);
      continue;
    }
    const uuid = (JSON.parse(text) as { id: string }).id;
    if (!mapping) violations.push(`churn collection ${collection}: on ${name} (${uuid}) but chroma-lb has no mapping for it`);
    else if (mapping.instances[name] !== uuid) violations.push(`churn collection ${collection}: on ${name} as ${uuid}, mapped to ${mapping.instances[name] ?? "nothing"}`);
    const records = await fetch(`${input.instanceUrls[name]}${T}/collections/${uuid}/get`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ limit: getLimit, include: ["documents", "metadatas", "embeddings"] }),
      signal: AbortSignal.timeout(60_000),
    });
    const recordsText = await records.text();
    if (records.status !== 200) {
      violations.push(`churn collection ${collection} on ${name}: get answered ${records.status}: ${short(recordsText)}`);
      continue;
    }
    const read = readRecords(recordsText);
    const key = `{${[...read.records.keys()].sort().map((id) => `${id}: ${read.records.get(id)}`).join("; ")}}`;
    found.set(name, { key, canonical: read.canonical, records: read.records });
  }

  judgeChurnCollection(input.history, collection, found, result);
}

/**
 * Judges what the instances hold of a churn collection (`found`) against its history, and
 * that they agree: the whole collection when its branches can be enumerated, else id by id.
 */
export function judgeChurnCollection(
  history: readonly OpRecord[],
  collection: string,
  found: Map<InstanceName, FoundCollection>,
  result: Pick<CheckResult, "violations" | "churnCollectionsChecked" | "churnCollectionsCheckedById" | "churnCollectionsPresent">,
): void {
  const { violations } = result;
  const names = [...found.keys()];
  const input = { history };
  let whole: ReturnType<typeof possibilitiesOf> | null = null;
  try {
    // The run creates every collection before the clients start.
    whole = possibilitiesOf(collectionEventsOf(input.history, collection), { ...collectionSemantics, initial: new Map() });
  } catch (error) {
    if (!(error instanceof TooManyPossibilities)) throw error;
  }
  if (whole) {
    result.churnCollectionsChecked += 1;
    for (const anomaly of whole.readAnomalies) {
      violations.push(
        `churn collection ${collection}: read ${anomaly.opRef} saw ${short(anomaly.observed.replaceAll("\n", "; "), 400)}; allowed then: ${anomaly.allowed.map((a) => short(a.replaceAll("\n", "; "), 300)).join(" | ")}\n` +
          describeCollectionHistory(input.history, collection, anomaly.opRef),
      );
    }
    if (whole.impossibleWrite) {
      violations.push(
        `churn collection ${collection}: ${whole.impossibleWrite.opRef} was acknowledged but no possible state allows it (the collection cannot exist then)\n` +
          describeCollectionHistory(input.history, collection, whole.impossibleWrite.opRef),
      );
      return;
    }
    for (const [name, { key }] of found) {
      if (whole.finalStates.has(key)) continue;
      violations.push(
        `churn collection ${collection} on ${name}: holds ${short(key, 600)}; possible: ${[...whole.finalStates].map((k) => short(k, 300)).join(" | ")}\n` +
          describeCollectionHistory(input.history, collection),
      );
    }
  } else if (!checkChurnById(input, collection, found, result)) {
    return;
  }

  if (names.length > 0 && found.get(names[0]!)!.key !== noCollection) result.churnCollectionsPresent += 1;
  const [a, b] = names.map((n) => found.get(n));
  if (a && b && (a.key !== b.key || a.canonical !== b.canonical)) {
    violations.push(`churn collection ${collection}: the instances differ: ${names[0]} ${short(a.key, 400)} | ${names[1]} ${short(b.key, 400)}`);
  }
}

/**
 * A churn collection whose whole history is too large, checked id by id (and field by field
 * within an id when needed). False when the check could not be made or found an ok write no
 * state allows (the rest of the collection's checks are then moot).
 */
function checkChurnById(
  input: { history: readonly OpRecord[] },
  collection: string,
  found: Map<InstanceName, FoundCollection>,
  result: Pick<CheckResult, "violations" | "churnCollectionsChecked" | "churnCollectionsCheckedById">,
): boolean {
  const { violations } = result;
  const ids = new Set<string>();
  for (const op of input.history) if (op.collection === collection) for (const id of op.ids) ids.add(id);
  for (const f of found.values()) for (const id of f.records?.keys() ?? []) ids.add(id);
  const actualOf = (f: FoundCollection, id: string) => (f.records ? (f.records.get(id) ?? "absent") : noCollection);
  let ok = true;
  for (const id of [...ids].sort()) {
    let allowed: Checked;
    try {
      allowed = checkCollectionId(input.history, collection, id, [...found.values()].map((f) => actualOf(f, id)));
    } catch (error) {
      if (!(error instanceof TooManyPossibilities)) throw error;
      violations.push(`churn collection ${collection} id ${id}: history too large to check, even field by field (${error.message})`);
      ok = false;
      continue;
    }
    for (const anomaly of allowed.readAnomalies) {
      violations.push(
        `churn collection ${collection}: read ${anomaly.opRef} saw ${short(anomaly.observed, 400)}; allowed then: ${anomaly.allowed.map((a) => short(a, 300)).join(" | ")}\n` +
          describeCollectionHistory(input.history, collection, anomaly.opRef.split(" ")[0]),
      );
    }
    if (allowed.impossibleWrite) {
      violations.push(
        `churn collection ${collection}: ${allowed.impossibleWrite.opRef} was acknowledged but no possible state allows it (the collection cannot exist then)\n` +
          describeCollectionHistory(input.history, collection, allowed.impossibleWrite.opRef.split(" ")[0]),
      );
      ok = false;
      continue;
    }
    for (const [name, f] of found) {
      const refused = allowed.refusedParts(actualOf(f, id));
      if (refused.length === 0) continue;
      violations.push(
        `churn collection ${collection} on ${name}: id ${id} is ${short(actualOf(f, id), 300)} (checked id by id; refused: ${refused.join(", ")}); possible: ${allowed.finals.map((k) => short(k, 300)).join(" | ")}\n` +
          describeCollectionHistory(input.history, collection),
      );
    }
  }
  if (ok) {
    result.churnCollectionsChecked += 1;
    result.churnCollectionsCheckedById += 1;
  }
  return ok;
}
