/**
 * Whole-instance dumps for comparing Chroma servers: every collection of every database of
 * the given tenants, read directly from one instance (never through chroma-lb), by name,
 * with every record's embedding, document and metadata, sorted by id. Two instances that
 * hold the same data give dumps that are `toEqual`.
 *
 * Instance UUIDs, log positions and versions differ between instances by design, so a dump
 * keeps only what a user can observe by name: collection names, metadata, dimension and
 * records.
 */

/** One record as Chroma's `get` returns it, gathered into one object. */
export interface DumpedRecord {
  id: string;
  embedding: number[] | null;
  document: string | null;
  metadata: Record<string, unknown> | null;
}

/** One collection, by name. */
export interface DumpedCollection {
  metadata: Record<string, unknown> | null;
  dimension: number | null;
  records: DumpedRecord[];
}

/** `"tenant/database"` -> collection name -> contents. */
export type InstanceDump = Record<string, Record<string, DumpedCollection>>;

/** Options for {@link dumpInstance}. */
export interface DumpOptions {
  /** Tenants to read (Chroma 1.0 cannot list tenants). Default `["default_tenant"]`. */
  tenants?: string[];
  /** Records fetched per `get` request. Default 1000. */
  pageSize?: number;
  /** Bound on each request. Default 30 000 ms. */
  timeoutMs?: number;
}

const pageSizeDefault = 1000;
const listPageSize = 100;

async function getJson(url: string, init: RequestInit, timeoutMs: number): Promise<unknown> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${init.method ?? "GET"} ${url} answered ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/**
 * Reads everything `instanceUrl` holds under the given tenants. Throws when any request
 * fails, so a dump is never silently partial.
 */
export async function dumpInstance(instanceUrl: string, opts: DumpOptions = {}): Promise<InstanceDump> {
  const tenants = opts.tenants ?? ["default_tenant"];
  const pageSize = opts.pageSize ?? pageSizeDefault;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const out: InstanceDump = {};
  for (const tenant of [...tenants].sort()) {
    const t = encodeURIComponent(tenant);
    const databases = (await getJson(`${instanceUrl}/api/v2/tenants/${t}/databases`, {}, timeoutMs)) as Array<{ name: string }>;
    for (const database of databases.map((d) => d.name).sort()) {
      const base = `${instanceUrl}/api/v2/tenants/${t}/databases/${encodeURIComponent(database)}`;
      const collections: Array<{ id: string; name: string; metadata: Record<string, unknown> | null; dimension: number | null }> = [];
      for (let offset = 0; ; offset += listPageSize) {
        const page = (await getJson(`${base}/collections?limit=${listPageSize}&offset=${offset}`, {}, timeoutMs)) as typeof collections;
        collections.push(...page);
        if (page.length < listPageSize) break;
      }
      const byName: Record<string, DumpedCollection> = {};
      for (const collection of collections.sort((a, b) => a.name.localeCompare(b.name))) {
        byName[collection.name] = {
          metadata: collection.metadata ?? null,
          dimension: collection.dimension ?? null,
          records: await dumpRecords(`${base}/collections/${collection.id}/get`, pageSize, timeoutMs),
        };
      }
      out[`${tenant}/${database}`] = byName;
    }
  }
  return out;
}

async function dumpRecords(getUrl: string, pageSize: number, timeoutMs: number): Promise<DumpedRecord[]> {
  const records: DumpedRecord[] = [];
  for (let offset = 0; ; offset += pageSize) {
    const page = (await getJson(
      getUrl,
      {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ limit: pageSize, offset, include: ["embeddings", "documents", "metadatas"] }),
      },
      timeoutMs,
    )) as { ids: string[]; embeddings: number[][] | null; documents: Array<string | null> | null; metadatas: Array<Record<string, unknown> | null> | null };
    page.ids.forEach((id, i) => {
      records.push({
        id,
        embedding: page.embeddings?.[i] ?? null,
        document: page.documents?.[i] ?? null,
        metadata: page.metadatas?.[i] ?? null,
      });
    });
    if (page.ids.length < pageSize) break;
  }
  return records.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Number of records in a dump, all collections together (for messages and sanity checks). */
export function recordCount(dump: InstanceDump): number {
  let n = 0;
  for (const collections of Object.values(dump)) for (const c of Object.values(collections)) n += c.records.length;
  return n;
}

/** Dumps every instance at once; answers the dumps in the order given. */
export function dumpInstances(instanceUrls: string[], opts: DumpOptions = {}): Promise<InstanceDump[]> {
  return Promise.all(instanceUrls.map((url) => dumpInstance(url, opts)));
}
