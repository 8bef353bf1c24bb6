/**
 * The consistency check: do the instances hold the same records, collection by collection?
 *
 * Each instance's copy is read in pages and folded into a digest: a count and, in 256
 * buckets chosen by a hash of the id, the sum of the records' hashes (a set digest, as
 * Chroma's own log compares setsums): order does not matter, memory stays a few kilobytes
 * whatever the collection's size. A record's hash covers its id, document, metadata (sorted
 * keys, values as the instance wrote them, so `1` and `1.0` differ), embedding (float32
 * bits) and uri. Only when digests differ is a second pass made over the differing buckets,
 * to name a sample of the ids that differ.
 *
 * The copies are compared at a log position both have applied: each instance is brought up
 * to date for the collection first, and a pass during which the collection was written to
 * is done again (the last attempt holds the collection's writes for its duration).
 */
import type { CollectionRecord } from "../collections/store";
import { databasePath } from "../chroma/paths";
import type { Instance } from "../instances/registry";
import type { Services } from "../services";
import { canonicalRecord, readRecordPage, type RecordPage } from "./records";

export type ConsistencyDeps = Pick<Services, "config" | "log" | "wal" | "collections" | "registry" | "replayer" | "writes">;

const bucketCount = 256;
const pageSize = 500;
const sampleIdsMax = 20;
/** Ids held per instance in the second pass at most, so a large difference stays bounded too. */
const secondPassIdsMax = 20_000;
const attemptsMax = 3;

const include = JSON.stringify(["documents", "metadatas", "embeddings", "uris"]);

interface Digest {
  count: number;
  sums: BigUint64Array;
  counts: Uint32Array;
}

/** What the check found for one collection. */
export interface CollectionVerdict {
  collection_id: string;
  collection_name: string;
  tenant: string;
  database: string;
  /** The log position both copies had applied when they were read. */
  position: number;
  consistent: boolean;
  instances: Array<{ name: string; count: number; digest: string }>;
  /** How the copies differ, in words: counts, records. */
  differences: string[];
  /** Ids whose record differs or exists on one copy only (a sample). */
  sample_ids: string[];
  /** Why the collection was not compared (fewer than two instances could be read). */
  skipped?: string;
}

export interface ConsistencyReport {
  started_at: string;
  finished_at: string;
  collections_checked: number;
  collections_differing: number;
  collections: CollectionVerdict[];
}

export interface ConsistencyProgress {
  running: boolean;
  started_at: string | null;
  collections_done: number;
  collections_total: number;
  current_collection: string | null;
  records_read: number;
  /**
   * Records to read: every copy's count when the check started (each copy is read once;
   * a pass made again because of writes reads more, so records_read may pass it).
   */
  records_total: number | null;
  /** Records read per second so far. */
  records_per_second: number;
  /** Time left at that rate (null until known). */
  seconds_left: number | null;
}

const recordHash = (text: string) => BigInt.asUintN(64, BigInt(Bun.hash.wyhash(text)));
const bucketOf = (id: string) => Number(BigInt(Bun.hash.wyhash(id)) & BigInt(bucketCount - 1));

export class ConsistencyChecker {
  private running: Promise<ConsistencyReport> | null = null;
  private runningFilter: string | undefined;
  last: ConsistencyReport | null = null;
  readonly progress: ConsistencyProgress = {
    running: false,
    started_at: null,
    collections_done: 0,
    collections_total: 0,
    current_collection: null,
    records_read: 0,
    records_total: null,
    records_per_second: 0,
    seconds_left: null,
  };
  private progressStartedMs = 0;
  /** Called with each collection found to differ (alerts, metrics, repair). */
  onDifference: ((verdict: CollectionVerdict) => void) | null = null;

  constructor(private readonly deps: ConsistencyDeps) {}

  /** Checks every active collection (or the one named or identified by `collection`); a check already running is joined. */
  checkOnce(collection?: string): Promise<ConsistencyReport> {
    if (this.running && this.runningFilter === collection) return this.running;
    const run = (async () => {
      if (this.running) await this.running.catch(() => undefined);
      return this.run(collection);
    })();
    this.running = run;
    this.runningFilter = collection;
    return run.finally(() => {
      if (this.running === run) this.running = null;
    });
  }

  private async run(filter: string | undefined): Promise<ConsistencyReport> {
    const started = new Date();
    const records = this.deps.collections
      .list()
      .filter((c) => filter === undefined || c.id === filter || c.name === filter);
    Object.assign(this.progress, {
      running: true,
      started_at: started.toISOString(),
      collections_done: 0,
      collections_total: records.length,
      current_collection: null,
      records_read: 0,
      records_total: null,
      records_per_second: 0,
      seconds_left: null,
    });
    this.progressStartedMs = Date.now();
    const verdicts: CollectionVerdict[] = [];
    try {
      this.progress.records_total = await this.countCopies(records);
      for (const record of records) {
        this.progress.current_collection = record.name;
        const verdict = await this.checkCollection(record);
        verdicts.push(verdict);
        this.progress.collections_done += 1;
        if (!verdict.consistent && !verdict.skipped) {
          this.deps.log.error("consistency check: copies differ", { collection: record.name, differences: verdict.differences });
          this.onDifference?.(verdict);
        }
      }
    } finally {
      this.progress.running = false;
      this.progress.current_collection = null;
    }
    const report: ConsistencyReport = {
      started_at: started.toISOString(),
      finished_at: new Date().toISOString(),
      collections_checked: verdicts.filter((v) => !v.skipped).length,
      collections_differing: verdicts.filter((v) => !v.consistent && !v.skipped).length,
      collections: verdicts,
    };
    if (filter === undefined) this.last = report;
    return report;
  }

  /** Compares one collection across every serving instance that holds it. */
  async checkCollection(record: CollectionRecord): Promise<CollectionVerdict> {
    const { wal, writes } = this.deps;
    for (let attempt = 1; attempt <= attemptsMax; attempt++) {
      const compare = async () => {
        const instances = await this.currentInstances(record);
        if (instances.length < 2) return this.skipped(record, "fewer than two instances hold the collection and are current");
        const before = await wal.partitionState(record.id);
        if (before.unanswered > 0) return null;
        const digests = await Promise.all(instances.map((i) => this.digest(i, record)));
        const after = await wal.partitionState(record.id);
        const stillCurrent = (await Promise.all(instances.map((i) => wal.caughtUpNow(i.name, record.id)))).every(Boolean);
        if (after.headSeq !== before.headSeq || after.unanswered > 0 || !stillCurrent || digests.some((d) => d === null)) return null;
        return this.verdict(record, before.headSeq, instances, digests as Digest[]);
      };
      // The last attempt holds the collection's writes, so it cannot be overtaken.
      const verdict = attempt < attemptsMax ? await compare() : await writes.holdWrites(record.id, compare);
      if (verdict) return verdict;
    }
    return this.skipped(record, "the collection changed during every attempt");
  }

  private async skipped(record: CollectionRecord, reason: string): Promise<CollectionVerdict> {
    return {
      collection_id: record.id,
      collection_name: record.name,
      tenant: record.tenant,
      database: record.database,
      position: (await this.deps.wal.partitionState(record.id)).headSeq,
      consistent: true,
      instances: [],
      differences: [],
      sample_ids: [],
      skipped: reason,
    };
  }

  /** Serving instances that hold the collection, brought up to date for it. */
  private async currentInstances(record: CollectionRecord): Promise<Instance[]> {
    const { registry, replayer, wal, config } = this.deps;
    const out: Instance[] = [];
    for (const instance of registry.all) {
      if (!instance.serving || !record.instanceUuids.has(instance.name)) continue;
      if (!(await wal.caughtUpNow(instance.name, record.id))) {
        await replayer.drain(instance, record.id, { deadlineMs: Date.now() + config.requestTimeoutMs, urgent: true });
        if (!(await wal.caughtUpNow(instance.name, record.id))) continue;
      }
      out.push(instance);
    }
    return out;
  }

  /** Counts records read for the progress: rate and time left. */
  private countRead(records: number) {
    const p = this.progress;
    p.records_read += records;
    if (!p.running) return;
    const seconds = Math.max(0.001, (Date.now() - this.progressStartedMs) / 1000);
    p.records_per_second = Math.round(p.records_read / seconds);
    p.seconds_left = p.records_total !== null && p.records_per_second > 0 ? Math.ceil(Math.max(0, p.records_total - p.records_read) / p.records_per_second) : null;
  }

  /** Every serving copy's record count (`GET .../count`, fast in Chroma); an unanswered count adds nothing. */
  private async countCopies(records: CollectionRecord[]): Promise<number> {
    let total = 0;
    for (const record of records) {
      for (const instance of this.deps.registry.all) {
        const uuid = record.instanceUuids.get(instance.name);
        if (!uuid || !instance.serving) continue;
        const result = await instance.client.json<number>(
          "GET",
          `${databasePath(record.tenant, record.database)}/collections/${uuid}/count`,
          undefined,
          this.deps.config.requestTimeoutMs,
        );
        if (result.ok && result.status === 200 && typeof result.json === "number") total += result.json;
      }
    }
    return total;
  }

  /** Reads one page of the instance's copy; null when the instance did not answer with one. */
  private async page(instance: Instance, record: CollectionRecord, body: string): Promise<RecordPage | null> {
    const uuid = record.instanceUuids.get(instance.name)!;
    const result = await instance.client.request({
      method: "POST",
      path: `${databasePath(record.tenant, record.database)}/collections/${uuid}/get`,
      headers: { "content-type": "application/json" },
      body,
      timeoutMs: this.deps.config.requestTimeoutMs,
    });
    if (!result.ok || result.status !== 200) return null;
    return readRecordPage(result.body);
  }

  /** Folds the instance's copy into a digest, page by page. */
  private async digest(instance: Instance, record: CollectionRecord): Promise<Digest | null> {
    const digest: Digest = { count: 0, sums: new BigUint64Array(bucketCount), counts: new Uint32Array(bucketCount) };
    for (let offset = 0; ; offset += pageSize) {
      const page = await this.page(instance, record, `{"limit":${pageSize},"offset":${offset},"include":${include}}`);
      if (!page) return null;
      for (let i = 0; i < page.ids.length; i++) {
        const bucket = bucketOf(page.ids[i]!);
        digest.sums[bucket] = BigInt.asUintN(64, digest.sums[bucket]! + recordHash(canonicalRecord(page, i)));
        digest.counts[bucket]! += 1;
      }
      digest.count += page.ids.length;
      this.countRead(page.ids.length);
      if (page.ids.length < pageSize) return digest;
    }
  }

  /** Per-record hashes of the ids that fall in `buckets` (bounded), for naming differences. */
  private async hashesIn(instance: Instance, record: CollectionRecord, buckets: Set<number>): Promise<Map<string, bigint> | null> {
    const out = new Map<string, bigint>();
    for (let offset = 0; ; offset += pageSize) {
      const page = await this.page(instance, record, `{"limit":${pageSize},"offset":${offset},"include":${include}}`);
      if (!page) return null;
      for (let i = 0; i < page.ids.length && out.size < secondPassIdsMax; i++) {
        if (buckets.has(bucketOf(page.ids[i]!))) out.set(page.ids[i]!, recordHash(canonicalRecord(page, i)));
      }
      if (page.ids.length < pageSize || out.size >= secondPassIdsMax) return out;
    }
  }

  private async verdict(record: CollectionRecord, position: number, instances: Instance[], digests: Digest[]): Promise<CollectionVerdict> {
    const summary = (d: Digest) => {
      let folded = 0n;
      for (let b = 0; b < bucketCount; b++) folded = BigInt.asUintN(64, folded * 1_000_003n + d.sums[b]!);
      return folded.toString(16).padStart(16, "0");
    };
    const [reference, ...others] = digests as [Digest, ...Digest[]];
    const differences: string[] = [];
    const differingBuckets = new Set<number>();
    others.forEach((d, k) => {
      if (d.count !== reference.count) differences.push(`${instances[0]!.name} holds ${reference.count} records, ${instances[k + 1]!.name} ${d.count}`);
      for (let b = 0; b < bucketCount; b++) if (d.sums[b] !== reference.sums[b] || d.counts[b] !== reference.counts[b]) differingBuckets.add(b);
    });
    const sample = new Set<string>();
    if (differingBuckets.size > 0) {
      const hashes = await Promise.all(instances.map((i) => this.hashesIn(i, record, differingBuckets)));
      const ids = new Set(hashes.flatMap((h) => (h ? [...h.keys()] : [])));
      let missing = 0;
      let changed = 0;
      for (const id of [...ids].sort()) {
        const values = hashes.map((h) => h?.get(id));
        if (values.some((v) => v === undefined)) missing += 1;
        else if (values.some((v) => v !== values[0])) changed += 1;
        else continue;
        if (sample.size < sampleIdsMax) sample.add(id);
      }
      if (missing) differences.push(`${missing} records are on some copies only`);
      if (changed) differences.push(`${changed} records differ in document, metadata, embedding or uri`);
      if (!missing && !changed) differences.push("digests differ");
    }
    return {
      collection_id: record.id,
      collection_name: record.name,
      tenant: record.tenant,
      database: record.database,
      position,
      consistent: differences.length === 0,
      instances: instances.map((i, k) => ({ name: i.name, count: digests[k]!.count, digest: summary(digests[k]!) })),
      differences,
      sample_ids: [...sample],
    };
  }
}
