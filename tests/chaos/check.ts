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
  collectionSemantics,
  collectionView,
  noCollection,
  possibilities,
  possibilitiesOf,
  TooManyPossibilities,
  type CollectionState,
  type CollectionWrite,
  type HistoryEvent,
  type RecordEvent,
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
  readsChecked: number;
  /** Churn collections checked, and how many of them exist at the end. */
  churnCollectionsChecked: number;
  churnCollectionsPresent: number;
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
    readsChecked: 0,
    churnCollectionsChecked: 0,
    churnCollectionsPresent: 0,
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
      let allowed: ReturnType<typeof possibilities>;
      try {
        allowed = possibilities(events);
      } catch (error) {
        if (!(error instanceof TooManyPossibilities)) throw error;
        violations.push(`collection ${collection} id ${id}: history too large to check (${error.message})`);
        continue;
      }
      result.recordsChecked += 1;
      if (allowed.indeterminate > 0) result.recordsWithIndeterminateWrites += 1;
      result.readsChecked += events.filter((e) => e.type === "read").length;
      if (copies.get(names[0]!)?.records.has(id)) result.recordsPresent += 1;
      for (const anomaly of allowed.readAnomalies) {
        violations.push(
          `collection ${collection} id ${id}: read ${anomaly.opRef} saw ${anomaly.observed}; allowed then: ${anomaly.allowed.map((a) => short(a, 160)).join(" | ")}\n` +
            describeHistory(input.history, collection, id, anomaly.opRef),
        );
      }
      for (const [name, copy] of copies) {
        const actual = copy.records.get(id) ?? "absent";
        if (allowed.finalStates.has(actual)) continue;
        const possible = [...allowed.finalStates];
        const what =
          actual === "absent"
            ? "missing (an acknowledged write is lost)"
            : possible.every((s) => s === "absent")
              ? `present although its history leaves it absent: ${actual}`
              : `holds ${actual}`;
        violations.push(
          `collection ${collection} id ${id} on ${name}: ${what}; possible: ${possible.map((s) => short(s, 160)).join(" | ")}\n` +
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

/**
 * A churn collection at the end: on each instance (looked up by name, directly) it exists
 * exactly when its history allows, with records its history allows; both instances agree;
 * chroma-lb maps it exactly when it exists, to the UUID each instance holds it under.
 */
async function checkChurnCollection(
  input: CheckInput,
  collection: string,
  mappings: Array<{ collection_name: string; instances: Record<string, string> }>,
  result: CheckResult,
): Promise<void> {
  const { violations } = result;
  const names = Object.keys(input.instanceUrls) as InstanceName[];
  let allowed: ReturnType<typeof possibilitiesOf>;
  try {
    // The run creates every collection before the clients start.
    allowed = possibilitiesOf(collectionEventsOf(input.history, collection), { ...collectionSemantics, initial: new Map() });
  } catch (error) {
    if (!(error instanceof TooManyPossibilities)) throw error;
    violations.push(`churn collection ${collection}: history too large to check (${error.message})`);
    return;
  }
  result.churnCollectionsChecked += 1;
  for (const anomaly of allowed.readAnomalies) {
    violations.push(
      `churn collection ${collection}: read ${anomaly.opRef} saw ${short(anomaly.observed.replaceAll("\n", "; "), 400)}; allowed then: ${anomaly.allowed.map((a) => short(a.replaceAll("\n", "; "), 300)).join(" | ")}\n` +
        describeCollectionHistory(input.history, collection, anomaly.opRef),
    );
  }
  if (allowed.impossibleWrite) {
    violations.push(
      `churn collection ${collection}: ${allowed.impossibleWrite.opRef} was acknowledged but no possible state allows it (the collection cannot exist then)\n` +
        describeCollectionHistory(input.history, collection, allowed.impossibleWrite.opRef),
    );
    return;
  }

  const mapping = mappings.find((m) => m.collection_name === collection);
  const found = new Map<InstanceName, { key: string; canonical: string | null }>();
  for (const name of names) {
    const url = `${input.instanceUrls[name]}${T}/collections/${collection}`;
    const res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
    const text = await res.text();
    if (res.status === 404) {
      found.set(name, { key: noCollection, canonical: null });
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
    found.set(name, { key, canonical: read.canonical });
  }
  if (found.get(names[0]!)?.key !== noCollection && found.has(names[0]!)) result.churnCollectionsPresent += 1;
  for (const [name, { key }] of found) {
    if (allowed.finalStates.has(key)) continue;
    violations.push(
      `churn collection ${collection} on ${name}: holds ${short(key, 600)}; possible: ${[...allowed.finalStates].map((k) => short(k, 300)).join(" | ")}\n` +
        describeCollectionHistory(input.history, collection),
    );
  }
  const [a, b] = names.map((n) => found.get(n));
  if (a && b && (a.key !== b.key || a.canonical !== b.canonical)) {
    violations.push(`churn collection ${collection}: the instances differ: ${names[0]} ${short(a.key, 400)} | ${names[1]} ${short(b.key, 400)}`);
  }
}
