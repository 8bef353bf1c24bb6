/**
 * Resync: rebuilds one instance's copy of a collection from a current instance while
 * writes go on.
 *
 * 1. The target's copy is marked under repair: reads avoid it and writes prefer others.
 * 2. Replay of the collection to the target is held.
 * 3. Briefly holding the collection's writes, the source is brought up to date and the
 *    ids it holds are listed: this is the copy's position P.
 * 4. Writes resume. The target's collection is created if it is missing (lost disk), its
 *    records that the source lacks are deleted, and the source's records are copied in
 *    pages by id, each page deleted on the target first and added as the source answered
 *    it (bytes unchanged), so that nothing of the old copy survives in them.
 * 5. The target no longer owes the entries up to P (the copy has them); the entries after P
 *    are replayed to it in order. Replaying add, upsert, update and delete by ids over a
 *    copy that already holds some of their effects ends in the same state as the source.
 * 6. The mark is cleared and the check compares the two copies again.
 *
 * Writes that bypassed chroma-lb and went to the target are overwritten.
 */
import type { CollectionRecord } from "../collections/store";
import { databasePath } from "../chroma/paths";
import type { Instance } from "../instances/registry";
import type { Services } from "../services";
import { splitObject } from "../replay/raw-json";
import { KeyedMutex } from "../util/mutex";
import { addBodyFor, readRecordPage } from "./records";
import type { ConsistencyChecker, CollectionVerdict } from "./consistency";

export type ResyncDeps = Pick<Services, "config" | "log" | "wal" | "collections" | "registry" | "replayer" | "writes">;

/** Records copied per request: well under Chroma's max_batch_size (5461), a few MB with 384-dim embeddings. */
const pageSize = 1_000;
const idPageSize = 5_000;
const include = JSON.stringify(["documents", "metadatas", "embeddings", "uris"]);
const decoder = new TextDecoder();

/** Progress of one collection's resync, for /status and /wal/status. */
export interface ResyncProgress {
  instance: string;
  source: string;
  collection_id: string;
  collection_name: string;
  /** `elsewhere`: another node of the cluster runs this copy's resync (`running_on`). */
  state: "copying" | "replaying" | "done" | "failed" | "elsewhere";
  /** Log position the copy was taken at. */
  position: number | null;
  records_copied: number;
  records_total: number | null;
  records_per_second: number;
  /** Time left to copy the rest at the rate so far (null before the first page). */
  seconds_left: number | null;
  started_at: string;
  finished_at: string | null;
  error: string | null;
  /** The check of the two copies made right after. */
  verified: boolean | null;
  /** The node that runs it, when that is another node (state `elsewhere`). */
  running_on?: string;
}

/**
 * Claims one copy's resync for the whole cluster (cluster/jobs.ts): `fn` runs here unless
 * another node runs the same copy's resync already.
 */
export type CopyClaim = (
  scope: string,
  progress: () => unknown,
  fn: () => Promise<ResyncProgress>,
) => Promise<{ ran: true; result: ResyncProgress } | { ran: false; runningOn: string; startedAt: string }>;

export class ResyncError extends Error {}

/** Snapshots tried when the source may not be sent to for a while (see `snapshot`). */
const snapshotAttemptsMax = 3;

/** The collection was dropped (through another node, before this one learned of it): nothing to rebuild. */
class CollectionDropped extends ResyncError {}

export class Resyncer {
  /** Every resync since start, newest last (bounded). */
  readonly history: ResyncProgress[] = [];
  private readonly running = new Map<string, Promise<ResyncProgress>>();
  /** When a failed resync of a copy may be tried again by `repairOnce`, with its current delay. */
  private readonly retries = new Map<string, { atMs: number; delayMs: number }>();
  /** Called when a resync ends (alerts). */
  onFinished: ((progress: ResyncProgress) => void) | null = null;
  /**
   * Several nodes: a copy is resynced by one node at a time, whoever asked for it (the
   * repair pass, a lost copy seen by adoption, the consistency check, an operator).
   */
  claim: CopyClaim | null = null;
  /**
   * Several nodes: reads the cluster's mappings again (false when they cannot be read now).
   * A node learns of a collection dropped through another only at its next reload; a copy
   * that looked lost meanwhile must not be rebuilt, which would make the collection again.
   */
  refreshMappings: (() => Promise<boolean>) | null = null;

  constructor(
    private readonly deps: ResyncDeps,
    private readonly checker: ConsistencyChecker,
  ) {}

  active(): ResyncProgress[] {
    return this.history.filter((p) => p.state === "copying" || p.state === "replaying");
  }

  /**
   * One repair pass (AUTO_REPAIR; the repair schedule calls it): every copy still marked
   * diverged or under repair, whose resync is not running, is resynced once its instance
   * answers and a source exists. A resync that failed is tried again after a delay that
   * doubles up to a minute (most failures pass: Postgres or an instance back, a gone node's
   * requests timed out). A mark on a collection that no longer exists is cleared.
   */
  async repairOnce(): Promise<ResyncProgress[]> {
    const { wal, registry, collections } = this.deps;
    const runs: Array<Promise<ResyncProgress>> = [];
    for (const mark of wal.divergences()) {
      const key = `${mark.instance}\u0000${mark.partition}`;
      const record = collections.get(mark.partition);
      if (!record || record.status !== "active") {
        await wal.clearDiverged(mark.instance, mark.partition);
        continue;
      }
      const instance = registry.get(mark.instance);
      const retry = this.retries.get(key);
      if (!instance?.healthy || this.running.has(key) || (retry && retry.atMs > Date.now())) continue;
      if (!this.sourceFor(instance, record)) continue;
      runs.push(
        this.resync(instance, record).then((progress) => {
          if (progress.state === "done") this.retries.delete(key);
          // `elsewhere`: the node that runs it clears the mark when it is done.
          else if (progress.state !== "elsewhere") {
            const delayMs = Math.min(60_000, (retry?.delayMs ?? 2_500) * 2);
            this.retries.set(key, { atMs: Date.now() + delayMs, delayMs });
          }
          return progress;
        }),
      );
    }
    return Promise.all(runs);
  }

  /** Resyncs every collection the target holds (or should hold), one at a time. */
  async resyncInstance(target: Instance, collection?: string): Promise<ResyncProgress[]> {
    const records = this.deps.collections.list().filter((c) => collection === undefined || c.id === collection || c.name === collection);
    const out: ResyncProgress[] = [];
    for (const record of records) out.push(await this.resync(target, record));
    return out;
  }

  /** Resyncs one collection on the target; a resync already running for it is joined. */
  resync(target: Instance, record: CollectionRecord): Promise<ResyncProgress> {
    const key = `${target.name}\u0000${record.id}`;
    const current = this.running.get(key);
    if (current) return current;
    const run = (this.claim ? this.runClaimed(this.claim, target, record) : this.run(target, record, this.newProgress(target, record))).finally(() =>
      this.running.delete(key),
    );
    this.running.set(key, run);
    return run;
  }

  /** Runs the resync here if the cluster lets this node claim the copy, else says which node runs it. */
  private async runClaimed(claim: CopyClaim, target: Instance, record: CollectionRecord): Promise<ResyncProgress> {
    const progress = this.newProgress(target, record);
    try {
      const outcome = await claim(`${target.name}/${record.id}`, () => progress, () => this.run(target, record, progress));
      if (outcome.ran) return outcome.result;
      this.deps.log.info("resync runs on another node", { instance: target.name, collection: record.name, node: outcome.runningOn });
      return { ...progress, state: "elsewhere", running_on: outcome.runningOn, started_at: outcome.startedAt, finished_at: new Date().toISOString() };
    } catch (error) {
      // Postgres did not take the claim: nothing ran; the next repair pass tries again.
      const failed: ResyncProgress = {
        ...progress,
        state: "failed",
        finished_at: new Date().toISOString(),
        error: `could not claim the resync in the cluster's Postgres (${String((error as Error)?.message ?? error)}); it is retried by the next repair pass or POST /admin/instances/${target.name}/resync`,
      };
      this.deps.log.error("resync not started", { instance: target.name, collection: record.name, error: failed.error });
      return failed;
    }
  }

  private newProgress(target: Instance, record: CollectionRecord): ResyncProgress {
    return {
      instance: target.name,
      source: this.sourceFor(target, record)?.name ?? "",
      collection_id: record.id,
      collection_name: record.name,
      state: "copying",
      position: null,
      records_copied: 0,
      records_total: null,
      records_per_second: 0,
      seconds_left: null,
      started_at: new Date().toISOString(),
      finished_at: null,
      error: null,
      verified: null,
    };
  }

  /** The instance a copy is taken from: serving, current for the collection, whole, preferred write target first. */
  sourceFor(target: Instance, record: CollectionRecord): Instance | null {
    const { registry, wal } = this.deps;
    const candidates = registry.all.filter((i) => i !== target && i.serving && record.instanceUuids.has(i.name)).sort((a, b) => a.priority - b.priority);
    const whole = candidates.find((i) => !wal.isDiverged(i.name, record.id));
    if (whole) return whole;
    // No whole copy: one in doubt (a node that went was applying to it; most likely whole) is
    // better than waiting for good. Between copies in doubt, the preferred write target's is
    // the others' source, never the other way round: two resyncs crossing left each copy with
    // the other's records.
    const inDoubt = candidates.filter((i) => wal.isInDoubt(i.name, record.id));
    if (wal.isInDoubt(target.name, record.id)) return inDoubt.find((i) => i.priority < target.priority) ?? null;
    return inDoubt[0] ?? null;
  }

  /**
   * When no whole copy can serve and the target holds nothing of the collection (its disk
   * was lost), a copy that is itself marked (diverged, or under a repair that could not
   * finish) is still better than none: the target is rebuilt from it, so that what it holds
   * is not lost with it, and its own mark stays until its own repair. Without this, two
   * marked copies each waited for the other to be whole. Null when the target holds the
   * collection, or no other instance does.
   */
  private async lastResortSourceFor(target: Instance, record: CollectionRecord): Promise<Instance | null> {
    if (!target.healthy) return null;
    const held = await this.call(target, "GET", `${this.collectionsPath(record)}/${encodeURIComponent(record.name)}`).catch(() => null);
    if (held?.status !== 404) return null;
    const source = this.deps.registry.all.filter((i) => i !== target && i.serving && record.instanceUuids.has(i.name)).sort((a, b) => a.priority - b.priority)[0] ?? null;
    if (source) this.deps.log.warn("resync: no whole copy serves; the lost copy is rebuilt from a marked one", { instance: target.name, source: source.name, collection: record.name });
    return source;
  }

  /**
   * The copies of one collection are rebuilt one at a time on a node: two resyncs in
   * opposite directions (each copy lost or in doubt, each the other's source) each held its
   * own target while it waited to bring its source up to date, which the other held: both
   * waited for good (chaos, NODES=3, seed 4). Across nodes such waits end at lock_timeout.
   */
  private readonly collectionTurns = new KeyedMutex();

  private run(target: Instance, record: CollectionRecord, progress: ResyncProgress): Promise<ResyncProgress> {
    return this.collectionTurns.run(record.id, () => this.runInTurn(target, record, progress));
  }

  private async runInTurn(target: Instance, record: CollectionRecord, progress: ResyncProgress): Promise<ResyncProgress> {
    const { wal, log, replayer } = this.deps;
    // Chosen again: under a cluster claim, time may have passed since the progress was made.
    const source = this.sourceFor(target, record) ?? (await this.lastResortSourceFor(target, record));
    progress.source = source?.name ?? "";
    progress.started_at = new Date().toISOString();
    this.history.push(progress);
    if (this.history.length > 100) this.history.splice(0, this.history.length - 100);
    const startedMs = Date.now();
    // A copy that was not marked (a consistency difference, an operator's resync, a repair
    // asked for before another resync cleared the mark) and that this run never touched is
    // as good after a failure as before: its mark is taken back, or it would stay out of
    // use, and no source for the other copies, until the next repair pass succeeds.
    const wasMarked = wal.isDiverged(target.name, record.id);
    let touched = false;
    try {
      if (this.refreshMappings && !(await this.refreshMappings().catch(() => false))) {
        throw new ResyncError(`the cluster's mappings cannot be read now, to tell whether ${record.name} still exists; it is retried by the next repair pass`);
      }
      if (this.deps.collections.get(record.id)?.status !== "active") throw new CollectionDropped(`collection ${record.name} was dropped; nothing to rebuild`);
      // Marked first: until a resync succeeds, reads avoid the copy and the repair schedule
      // tries again, also when it cannot start yet.
      await wal.markUnderRepair(target.name, record.id, source ? `resync from ${source.name}` : "waiting for a source to resync from");
      if (!source) throw new ResyncError(`no serving instance other than ${target.name} holds ${record.name} whole; resync it once one does`);
      if (!target.healthy) throw new ResyncError(`instance ${target.name} is down; resync it once it answers`);
      log.warn("resync started", { instance: target.name, source: source.name, collection: record.name });
      await replayer.holdPartition(target, record.id, async () => {
        const { position, ids } = await this.snapshot(source, record);
        progress.position = position;
        progress.records_total = ids.length;
        const targetUuid = await this.ensureCollection(target, source, record);
        touched = true;
        await this.deleteExtra(target, targetUuid, record, new Set(ids));
        for (let k = 0; k < ids.length; k += pageSize) {
          await this.copyPage(source, target, targetUuid, record, ids.slice(k, k + pageSize));
          progress.records_copied = Math.min(ids.length, k + pageSize);
          progress.records_per_second = Math.round(progress.records_copied / Math.max(0.001, (Date.now() - startedMs) / 1000));
          progress.seconds_left = progress.records_per_second > 0 ? Math.ceil((ids.length - progress.records_copied) / progress.records_per_second) : null;
        }
        await wal.markCopiedUpTo(target.name, record.id, position);
      });
      progress.state = "replaying";
      progress.seconds_left = 0;
      const drained = await replayer.drain(target, record.id, { urgent: true, deadlineMs: Date.now() + this.deps.config.requestTimeoutMs });
      if (!drained.ok) log.warn("resync: replay after the copy is not done yet; it goes on in the background", { reason: drained.reason });
      await wal.clearDiverged(target.name, record.id);
      const verdict: CollectionVerdict = await this.checker.checkCollection(record);
      progress.verified = verdict.skipped ? null : verdict.consistent;
      progress.state = "done";
      log.warn("resync finished", { instance: target.name, collection: record.name, records: progress.records_copied, verified: progress.verified });
    } catch (error) {
      progress.state = "failed";
      progress.error = error instanceof ResyncError ? error.message : `resync failed: ${String((error as Error)?.message ?? error)}; it is retried by the next repair pass or POST /admin/instances/${target.name}/resync`;
      log.error("resync failed", { instance: target.name, collection: record.name, error: progress.error });
      if (error instanceof CollectionDropped) {
        await wal.clearDiverged(target.name, record.id).catch(() => {});
      } else if (!wasMarked && !touched) {
        await wal.clearDiverged(target.name, record.id).catch(() => {});
        log.warn("resync: the copy was not touched; it is back in use", { instance: target.name, collection: record.name });
      }
    } finally {
      progress.finished_at = new Date().toISOString();
      void replayer.kick(target);
      this.onFinished?.(progress);
    }
    return progress;
  }

  /**
   * One request; a change to the copy being rebuilt (`target`) is sent only while its
   * cross-node hold is still held (several nodes: see Replayer.beforeSend).
   */
  private async call(instance: Instance, method: string, path: string, body?: string | Uint8Array, target?: { partition: string }): Promise<{ status: number; body: Uint8Array }> {
    if (target) await this.deps.replayer.beforeSend(instance, target.partition);
    const result = await instance.client.request({
      method,
      path,
      headers: body === undefined ? undefined : { "content-type": "application/json" },
      body: body ?? null,
      timeoutMs: this.deps.config.requestTimeoutMs,
    });
    if (!result.ok) throw new ResyncError(`instance ${instance.name} did not answer ${method} ${path} (${result.reason}); resync it again once it answers`);
    return { status: result.status, body: result.body };
  }

  private collectionsPath(record: CollectionRecord) {
    return `${databasePath(record.tenant, record.database)}/collections`;
  }

  /**
   * Brings the source up to date and lists the ids it holds, while the collection's writes
   * wait: the copy's position. Ids alone (no values) are held in memory.
   */
  private async snapshot(source: Instance, record: CollectionRecord): Promise<{ position: number; ids: string[] }> {
    // Several nodes: nothing may be sent to the source for a while when a node that was
    // applying to it went (its requests may still land). The snapshot is taken again once
    // that time has passed (waiting without holding the writes), rather than failing the
    // resync and leaving the copy without a repair until the next pass.
    for (let attempt = 1; ; attempt++) {
      const taken = await this.snapshotOnce(source, record, attempt < snapshotAttemptsMax);
      if ("position" in taken) return taken;
      await Bun.sleep(Math.max(0, taken.retryAtMs - Date.now()) + 50);
    }
  }

  private async snapshotOnce(source: Instance, record: CollectionRecord, mayWait: boolean): Promise<{ position: number; ids: string[] } | { retryAtMs: number }> {
    const { writes, replayer, wal, config } = this.deps;
    // Every node's writes of the collection wait: an entry logged before the position and
    // not yet on the source would otherwise be in neither the copy nor what is replayed after it.
    return writes.holdWrites(record.id, async () => {
      const drained = await replayer.drain(source, record.id, { urgent: true, deadlineMs: Date.now() + config.requestTimeoutMs });
      if (!drained.ok && drained.retryAtMs !== undefined && mayWait) return { retryAtMs: drained.retryAtMs };
      if (!drained.ok || !(await wal.caughtUpNow(source.name, record.id))) {
        throw new ResyncError(`source ${source.name} could not catch up: ${drained.ok ? "entries still owed" : drained.reason}`);
      }
      const position = (await wal.partitionState(record.id)).headSeq;
      const uuid = record.instanceUuids.get(source.name)!;
      const ids: string[] = [];
      for (let offset = 0; ; offset += idPageSize) {
        const answer = await this.call(source, "POST", `${this.collectionsPath(record)}/${uuid}/get`, `{"limit":${idPageSize},"offset":${offset},"include":[]}`);
        const page = answer.status === 200 ? readRecordPage(answer.body) : null;
        if (!page) throw new ResyncError(`source ${source.name} answered ${answer.status} when listing ${record.name}`);
        ids.push(...page.ids);
        if (page.ids.length < idPageSize) return { position, ids };
      }
    });
  }

  /** The target's UUID for the collection, created there (like the source's) when it is missing. */
  private async ensureCollection(target: Instance, source: Instance, record: CollectionRecord): Promise<string> {
    const known = record.instanceUuids.get(target.name);
    const path = `${this.collectionsPath(record)}/${encodeURIComponent(record.name)}`;
    const existing = await this.call(target, "GET", path);
    if (existing.status === 200) {
      const id = (JSON.parse(decoder.decode(existing.body)) as { id: string }).id;
      const owner = this.deps.collections.byUuid(id);
      if (owner && owner.id !== record.id) throw new ResyncError(`the name ${record.name} is another collection's on ${target.name}; resync it once that instance has applied the changes it owes`);
      if (id !== known) await this.deps.collections.setInstanceUuid(record.id, target.name, id);
      return id;
    }
    const model = await this.call(source, "GET", path);
    if (model.status !== 200) throw new ResyncError(`source ${source.name} answered ${model.status} for collection ${record.name}`);
    // The database may be gone with the disk; 409 means it is there.
    const hold = { partition: record.id };
    await this.call(target, "POST", "/api/v2/tenants", JSON.stringify({ name: record.tenant }), hold);
    await this.call(target, "POST", `/api/v2/tenants/${encodeURIComponent(record.tenant)}/databases`, JSON.stringify({ name: record.database }), hold);
    const metadata = rawField(model.body, "metadata") ?? "null";
    const configuration = rawField(model.body, "configuration_json") ?? "{}";
    const created = await this.call(
      target,
      "POST",
      this.collectionsPath(record),
      `{"name":${JSON.stringify(record.name)},"metadata":${metadata},"configuration":${configuration}}`,
      hold,
    );
    if (created.status !== 200) throw new ResyncError(`instance ${target.name} refused to create ${record.name} (${created.status}: ${decoder.decode(created.body).slice(0, 200)})`);
    const id = (JSON.parse(decoder.decode(created.body)) as { id: string }).id;
    await this.deps.collections.setInstanceUuid(record.id, target.name, id);
    this.deps.log.warn("resync: created a missing collection", { instance: target.name, collection: record.name });
    return id;
  }

  /** Deletes the target's records whose ids the source does not hold. */
  private async deleteExtra(target: Instance, uuid: string, record: CollectionRecord, keep: Set<string>) {
    const extra: string[] = [];
    for (let offset = 0; ; offset += idPageSize) {
      const answer = await this.call(target, "POST", `${this.collectionsPath(record)}/${uuid}/get`, `{"limit":${idPageSize},"offset":${offset},"include":[]}`);
      const page = answer.status === 200 ? readRecordPage(answer.body) : null;
      if (!page) throw new ResyncError(`instance ${target.name} answered ${answer.status} when listing ${record.name}`);
      for (const id of page.ids) if (!keep.has(id)) extra.push(id);
      if (page.ids.length < idPageSize) break;
    }
    for (let k = 0; k < extra.length; k += idPageSize) {
      const answer = await this.call(target, "POST", `${this.collectionsPath(record)}/${uuid}/delete`, JSON.stringify({ ids: extra.slice(k, k + idPageSize) }), { partition: record.id });
      if (answer.status >= 300) throw new ResyncError(`instance ${target.name} answered ${answer.status} deleting records of ${record.name}`);
    }
  }

  /** Copies the records with these ids: read from the source, deleted then added on the target. */
  private async copyPage(source: Instance, target: Instance, targetUuid: string, record: CollectionRecord, ids: string[]) {
    const sourceUuid = record.instanceUuids.get(source.name)!;
    const answer = await this.call(source, "POST", `${this.collectionsPath(record)}/${sourceUuid}/get`, `{"ids":${JSON.stringify(ids)},"include":${include}}`);
    const page = answer.status === 200 ? readRecordPage(answer.body) : null;
    if (!page) throw new ResyncError(`source ${source.name} answered ${answer.status} reading records of ${record.name}`);
    const removed = await this.call(target, "POST", `${this.collectionsPath(record)}/${targetUuid}/delete`, JSON.stringify({ ids }), { partition: record.id });
    if (removed.status >= 300) throw new ResyncError(`instance ${target.name} answered ${removed.status} deleting records of ${record.name}`);
    // Ids deleted on the source since the position are not in the answer; their deletes replay later.
    if (page.ids.length === 0) return;
    const added = await this.call(target, "POST", `${this.collectionsPath(record)}/${targetUuid}/add`, addBodyFor(page, page.ids.map((_, i) => i)), { partition: record.id });
    if (added.status >= 300) {
      throw new ResyncError(`instance ${target.name} refused the copy of ${record.name} (${added.status}: ${decoder.decode(added.body).slice(0, 200)})`);
    }
  }
}

/** The raw text of one top-level field of a JSON answer (numbers keep their text), or null. */
function rawField(body: Uint8Array, field: string): string | null {
  const slice = splitObject(body)?.get(field);
  return slice ? decoder.decode(body.subarray(slice.start, slice.end)) : null;
}
