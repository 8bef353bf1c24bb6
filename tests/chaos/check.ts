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
import { possibilities, TooManyPossibilities, type RecordEvent } from "./model";
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
    readsFromDivergedCopies: input.history.filter((op) => op.divergedRead).length,
    consistency: null,
  };
  const names = Object.keys(input.instanceUrls) as InstanceName[];

  for (const op of input.history) {
    if (op.kind === "get" && op.outcome === "ok" && !op.observed) violations.push(`read ${op.ref}: ${op.error ?? "no records read"}`);
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
