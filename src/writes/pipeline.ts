/**
 * The write path: every write a client sends goes through here, in four steps.
 *
 * 1. queue: writes of one partition (a collection, or `meta`) wait in arrival order;
 * 2. group: an add (or upsert) takes the adds queued right behind it when merging them
 *    gives the same result as applying them one by one (see replay/batch.ts);
 * 3. append: the group is appended to the log, durable before anything is answered;
 * 4. apply: the first write target that can take it in order applies it; a refused merged
 *    group is split in halves until each refused write is refused alone, so its client
 *    gets Chroma's own error and every other client its success.
 *
 * Replay then brings every other instance up to date. The public surface is `submit`,
 * `inFlight` and `exclusive` (reset holds writes while it clears everything).
 */
import type { Config } from "../config";
import { fileSystemFull, LbError, notFound, storageRetryAfterSeconds } from "../errors";
import { blameTransportFailure, instanceViews, noInstanceFor } from "../instances/views";
import type { Instance, InstanceRegistry } from "../instances/registry";
import type { Logger } from "../observability/log";
import type { ApplyOutcome } from "../replay/apply";
import { takeBatch } from "../replay/batch";
import { applyBisecting } from "../replay/order";
import type { Replayer } from "../replay/replayer";
import { writeCandidates } from "../routing/select";
import type { KeyedMutex } from "../util/mutex";
import { AppendQueueFullError } from "../wal/group-commit";
import type { Entry, NewEntry, WriteAheadLog } from "../wal/log";
import { StorageFullError } from "../wal/storage";

export interface WritePathDeps {
  config: Config;
  log: Logger;
  wal: WriteAheadLog;
  registry: InstanceRegistry;
  replayer: Replayer;
  /** Shared with adoption's copies: one writer per collection at a time. */
  writeLocks: KeyedMutex;
}

/** How one write ended. */
export type WriteResult =
  /** An instance applied it; its answer goes back to the client. */
  | { kind: "applied"; seq: number; instance: Instance; outcome: Extract<ApplyOutcome, { kind: "applied" }> }
  /** An instance refused it (or dropped it); no instance will apply it. */
  | { kind: "answered"; seq: number; instance: Instance; status: number; headers: Headers | null; body: Uint8Array | null }
  /** No instance could take it; it is kept in the log and applied when instances return. */
  | { kind: "accepted"; seq: number }
  /** No instance could take it and ACCEPT_WRITES_WHEN_ALL_DOWN=false: nothing was kept. */
  | { kind: "unavailable"; reason: string };

interface QueuedWrite {
  entry: NewEntry;
  /** The client's headers, already stripped of hop-by-hop ones. */
  headers: Headers;
  resolve: (result: WriteResult) => void;
  reject: (error: unknown) => void;
}

const encoder = new TextEncoder();

export class WritePath {
  /** Writes submitted and not yet answered: an instance owing no more than these is caught up. */
  inFlight = 0;
  /** Writes waiting for their partition, in arrival order. */
  private readonly queues = new Map<string, QueuedWrite[]>();
  /** Set while `exclusive` runs: new writes wait for it. */
  private gate: Promise<void> | null = null;
  private onDrained: (() => void) | null = null;
  /**
   * With several nodes (cluster/): runs a group's append, apply and record holding the
   * collection's write lock in Postgres, so writers on different nodes take turns. Throws
   * an LbError (503) when the lock cannot be had. Null on one node.
   */
  partitionLock: (<T>(partition: string, fn: () => Promise<T>) => Promise<T>) | null = null;
  /**
   * Several nodes: whether the collection was dropped, asked under the partition's lock
   * before a record write is logged. A node's mappings learn of a drop made through another
   * node only at its next reload; without this a write by name in that window was logged
   * against a dropped collection, answered 202, and never applied.
   */
  collectionDropped: ((partition: string) => Promise<boolean>) | null = null;

  constructor(private readonly deps: WritePathDeps) {}

  /**
   * Holds the collection's writes in this process and, with several nodes, on every node
   * (the cross-node write lock): no write of it is logged or applied anywhere while `fn`
   * runs. What a resync's copy and a consistency check take their position under.
   */
  holdWrites<T>(partition: string, fn: () => Promise<T>): Promise<T> {
    const lock = this.partitionLock;
    return this.deps.writeLocks.run(partition, () => (lock ? lock(partition, fn) : fn()));
  }

  /**
   * Logs and applies one write; resolves with how it ended. Writes of one partition are
   * applied one group at a time, in arrival order, so every instance sees them in log order.
   */
  async submit(entry: NewEntry, headers: Headers): Promise<WriteResult> {
    while (this.gate) await this.gate;
    this.inFlight += 1;
    try {
      return await new Promise<WriteResult>((resolve, reject) => {
        const item: QueuedWrite = { entry, headers, resolve, reject };
        const queue = this.queues.get(entry.partition);
        if (queue) {
          queue.push(item);
          return;
        }
        const fresh = [item];
        this.queues.set(entry.partition, fresh);
        void this.deps.writeLocks.run(entry.partition, () => this.drain(entry.partition, fresh));
      });
    } finally {
      this.inFlight -= 1;
      if (this.inFlight === 0) this.onDrained?.();
    }
  }

  /**
   * Runs `fn` with no write in flight: new writes wait until it ends, and it starts once
   * the writes already submitted have been answered.
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    let open!: () => void;
    this.gate = new Promise<void>((resolve) => (open = resolve));
    try {
      if (this.inFlight > 0) await new Promise<void>((resolve) => (this.onDrained = resolve));
      return await fn();
    } finally {
      this.onDrained = null;
      this.gate = null;
      open();
    }
  }

  private async drain(partition: string, queue: QueuedWrite[]) {
    try {
      while (queue.length > 0) {
        const { group, body } = this.takeGroup(queue);
        const held = await this.heldBack(partition);
        if (held) {
          for (const item of group) item.reject(held);
          continue;
        }
        try {
          const lock = this.partitionLock;
          const results = lock
            ? await lock(partition, async () => {
                await this.refuseIfDropped(partition, group);
                return this.appendAndApply(group, body);
              })
            : await this.appendAndApply(group, body);
          group.forEach((item, i) => item.resolve(results[i]!));
        } catch (error) {
          for (const item of group) item.reject(error);
        }
      }
    } finally {
      // Runs right after the queue was seen empty, with no await between: a later write starts a new queue.
      this.queues.delete(partition);
    }
  }

  /**
   * Takes the next write, merged with the adds (or upserts) of the same caller queued right
   * behind it when the merge gives the same result as applying them one by one. Several
   * clients ingesting into one collection then cost one request to the write target.
   */
  private takeGroup(queue: QueuedWrite[]): { group: QueuedWrite[]; body: Uint8Array | null } {
    const first = queue.shift()!;
    if ((first.entry.op !== "add" && first.entry.op !== "upsert") || queue.length === 0) return { group: [first], body: first.entry.body };
    const sameCaller = (item: QueuedWrite) => ["authorization", "x-chroma-token"].every((h) => item.headers.get(h) === first.headers.get(h));
    const candidates = [first];
    for (const item of queue) {
      if (candidates.length >= this.deps.config.walMaxBatchSize || !sameCaller(item)) break;
      candidates.push(item);
    }
    const batch = takeBatch(
      candidates.map((item) => ({ op: item.entry.op, body: item.entry.body, bodyBytes: item.entry.body?.byteLength ?? 0 })),
      {
        entriesMax: this.deps.config.walMaxBatchSize,
        recordsMax: Math.min(...this.deps.registry.all.map((i) => i.maxBatchSize)),
        bytesMax: this.deps.config.walMaxBatchBytes,
      },
    );
    const group = [first, ...queue.splice(0, batch.entries.length - 1)];
    return { group, body: batch.body };
  }

  /**
   * Why a new write of the partition may not be logged now, or null. An earlier entry of
   * the partition whose state the log could not record yet (a full disk) must settle first:
   * a later entry must not overtake it on any instance, so the write is refused (507 or 503
   * with Retry-After) before it is logged, and the client retries.
   */
  private async heldBack(partition: string): Promise<LbError | null> {
    const { wal } = this.deps;
    if (!wal.hasUnresolved(partition)) return null;
    await wal.resolveOnce();
    if (!wal.hasUnresolved(partition)) return null;
    if (wal.storageIsFull) return fileSystemFull();
    return new LbError(
      503,
      "ServiceUnavailable",
      "An earlier write of this collection is not recorded in chroma-lb's log yet (GET /wal/status lists it); retry shortly",
      { "retry-after": String(storageRetryAfterSeconds) },
    );
  }

  /** A record write to a collection dropped through another node is answered as Chroma answers a missing one. */
  private async refuseIfDropped(partition: string, group: QueuedWrite[]): Promise<void> {
    const first = group[0]!.entry;
    if (!this.collectionDropped || first.kind !== "records") return;
    if (await this.collectionDropped(partition)) throw notFound(`Collection [${first.collectionId ?? partition}] does not exists.`);
  }

  /** Appends the group to the log (durable, one commit), then applies it. */
  private async appendAndApply(group: QueuedWrite[], body: Uint8Array | null): Promise<WriteResult[]> {
    const { wal } = this.deps;
    const appended = await Promise.allSettled(group.map((item) => wal.append(item.entry)));
    const failed = appended.find((a) => a.status === "rejected");
    if (failed) {
      // Appends of one group share a commit, so this is not expected; if some made it
      // anyway, nothing applied them and their clients are refused: no instance gets them.
      for (const a of appended) if (a.status === "fulfilled") await wal.reject(a.value);
      // Not durable, so not acknowledged: the client retries (a store that cannot be reached,
      // Postgres restarting). A full disk and a full queue keep their own answers.
      const reason = failed.reason as unknown;
      if (reason instanceof LbError || reason instanceof StorageFullError || reason instanceof AppendQueueFullError) throw reason;
      this.deps.log.error("a write could not be appended to the log; answered 503", { error: String((reason as Error)?.message ?? reason).slice(0, 300) });
      throw new LbError(503, "ServiceUnavailable", "chroma-lb's log store cannot take the write now (nothing was kept); retry shortly", {
        "retry-after": String(storageRetryAfterSeconds),
      });
    }
    const entries = appended.map((a) => (a as PromiseFulfilledResult<Entry>).value);
    try {
      return await this.applyBisecting(entries, body, group[0]!.headers);
    } catch (error) {
      // The outcome is unknown (an instance may have applied them): like entries left
      // unanswered by a crash, any still `new` is kept for every instance, so none is left
      // blocking its partition (issue 14). Its client gets the error.
      this.deps.log.error("a logged write failed on chroma-lb's side; kept and replayed everywhere", {
        positions: entries.map((e) => e.seq),
        error: String((error as Error)?.message ?? error),
      });
      await wal.keepUnanswered(entries[0]!.partition, entries.map((e) => e.seq));
      throw error;
    }
  }

  /**
   * Applies logged entries; when the write target refuses them merged, applies each half on
   * its own, down to single entries, so only a refused entry is refused (order.ts). One
   * result per entry.
   */
  private async applyBisecting(entries: Entry[], body: Uint8Array | null, headers: Headers): Promise<WriteResult[]> {
    const { results } = await applyBisecting(entries, body, async (piece, pieceBody) => {
      const merged = await this.applyLogged(piece, pieceBody, headers);
      return merged === "split" ? { kind: "split" } : { kind: "done", results: merged };
    });
    return results;
  }

  /**
   * Write targets for a partition: routing's order, with instances whose copy diverged last
   * and without those whose copy is lost or being rebuilt (they get the write by replay,
   * once repaired).
   */
  private targets(partition: string) {
    const { wal } = this.deps;
    const views = writeCandidates(instanceViews(this.deps.registry, wal, this.inFlight)).filter((v) => !wal.isUnderRepair(v.name, partition));
    const diverged = (name: string) => (wal.isDiverged(name, partition) ? 1 : 0);
    return views.sort((a, b) => diverged(a.name) - diverged(b.name));
  }

  /**
   * Applies logged entries (one, or a merged group with `body`) on the first write target
   * that can take them in order, failing over when a target never got the request or gave
   * no answer. Chroma's refusal is answered as is and the entry is not replayed. Answers one
   * result per entry, or "split" when a merged group must be tried in parts.
   */
  private async applyLogged(entries: Entry[], body: Uint8Array | null, headers: Headers): Promise<WriteResult[] | "split"> {
    const { config, log, registry, replayer, wal } = this.deps;
    const first = entries[0]!;
    const seqs = entries.map((e) => e.seq);
    const tried = new Set<string>();
    for (let round = 0; round < registry.all.length; round++) {
      const candidate = this.targets(first.partition).find((c) => !tried.has(c.name));
      if (!candidate) break;
      tried.add(candidate.name);
      const instance = registry.get(candidate.name)!;
      const outcome = await replayer.applyAsWriteTarget(instance, entries, body, {
        headers,
        deadlineMs: Date.now() + config.requestTimeoutMs,
      });
      if (outcome.kind === "not_ready") {
        log.warn("write target could not catch up; trying the next", { instance: instance.name, reason: outcome.reason });
        continue;
      }
      if (outcome.kind === "transport") {
        registry.reportFailedRequest(instance);
        const blame = await blameTransportFailure(registry, log, instance, outcome.failure, outcome.reason, config.healthCheckTimeoutMs);
        if (blame === "instance") continue;
        if (entries.length > 1) return "split";
        // The instance is alive but dropped this write: it is most likely malformed for Chroma.
        if (await wal.appliedNowhere(first.seq)) await wal.reject(first);
        const message = `Instance ${instance.name} dropped the connection for this write (${outcome.reason}); check the request's parameters`;
        return [{ kind: "answered", seq: first.seq, instance, status: 502, headers: null, body: encoder.encode(JSON.stringify({ error: "BadGateway", message })) }];
      }
      if (outcome.kind === "failed" && outcome.status === 0) {
        // chroma-lb cannot address the collection on this instance yet; another may take it.
        log.warn("write target cannot take this write; trying the next", { instance: instance.name, reason: outcome.reason });
        continue;
      }
      registry.reportAnswered(instance, outcome.status);
      if (outcome.kind === "applied") return entries.map((entry) => ({ kind: "applied", seq: entry.seq, instance, outcome }));
      if (outcome.kind === "refused" && outcome.status === 404 && first.kind === "records" && first.collectionId) {
        // chroma-lb resolved the collection before logging the write, so an instance that
        // does not know it has lost it (a wiped disk): another instance takes the write (or,
        // when none can, it stays logged and is replayed once the copy is rebuilt), and this
        // copy is marked for repair (reads avoid it meanwhile).
        await wal.markUnderRepair(instance.name, first.partition, `answered 404 for collection ${first.collectionId}, which it held`);
        log.warn("write target does not hold the collection; trying the next", { instance: instance.name, reason: outcome.reason });
        continue;
      }
      if (entries.length > 1) return "split";
      // Refused or failed on the write target: nothing was acknowledged, so no instance gets it.
      await wal.reject(first);
      return [{ kind: "answered", seq: first.seq, instance, status: outcome.status, headers: outcome.headers, body: outcome.body }];
    }
    if (config.acceptWritesWhenAllDown) {
      await wal.markReady(entries, null);
      log.warn("no instance could take a write; kept in the log", { positions: seqs, partition: first.partition });
      return entries.map((entry) => ({ kind: "accepted", seq: entry.seq }));
    }
    for (const entry of entries) await wal.reject(entry);
    const reason = noInstanceFor(registry, "writes").message;
    return entries.map(() => ({ kind: "unavailable", reason }));
  }
}
