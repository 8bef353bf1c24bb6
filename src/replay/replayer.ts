/**
 * Ordered, batched replay of the log to each instance.
 *
 * `drain(instance, partition)` applies what one instance owes in one partition, in seq
 * order, merging entries into batches; `replayOnce(instance)` drains up to WAL_MAX_WORKERS
 * partitions in parallel and returns. Schedules and the write path call them; tests too.
 * One lock per (instance, partition) keeps replay and the write path from applying the
 * same entries twice or out of order.
 */
import type { Config } from "../config";
import type { CollectionStore } from "../collections/store";
import { SendNotBefore } from "../errors";
import type { Instance, InstanceRegistry } from "../instances/registry";
import { blameTransportFailure } from "../instances/views";
import type { Logger } from "../observability/log";
import { KeyedMutex } from "../util/mutex";
import type { Entry, WriteAheadLog } from "../wal/log";
import { applyEntries, type ApplyOutcome } from "./apply";
import { takeBatch, type BatchLimits } from "./batch";
import { applyBisecting, blockerOf, nextStep, nothingAhead, type PieceOutcome } from "./order";
import type { BatchSizer } from "./sizing";

/** A drain that stopped says why, and, when nothing may be sent before a known time (SendNotBefore), until when. */
export type DrainResult = { ok: true; applied: number } | { ok: false; applied: number; reason: string; retryAtMs?: number };

export interface DrainOptions {
  /** Stop after this seq (the write path drains up to the entry before its own). */
  uptoSeq?: number;
  /** Give up when this time passes (ms since epoch). */
  deadlineMs?: number;
  /** Ignore retry backoff (a client is waiting). */
  urgent?: boolean;
  /** Apply at most this many entries of the partition (replayOnce's bound). */
  entriesMax?: number;
  /** Background replay with several nodes: only under this node's lease, checked where progress is recorded. */
  fenced?: boolean;
}

/**
 * How replay and the write path share instances with other chroma-lb nodes (cluster/);
 * null on one node, where the in-process locks suffice.
 */
export interface CrossNode {
  /** Runs `fn` holding (instance, partition) across nodes; null when another holder has it (or the lease, when `fenced`). */
  applying<T>(instance: string, partition: string, fn: () => Promise<T>, fenced: boolean): Promise<T | null>;
  /** Of `partitions`, those this node replays in the background now: it holds their lease (taking free ones first). */
  replays(instance: string, partitions: string[]): Promise<Set<string>>;
  /** Runs `fn` holding (instance, partition) across nodes, waiting for it (a resync's copy). */
  holding<T>(instance: string, partition: string, fn: () => Promise<T>): Promise<T>;
  /**
   * Right before a request to `instance` in `partition`: proves the lock is still held and
   * that no request of a holder gone before may still land (throws when either is not so).
   */
  beforeSend(instance: string, partition: string): Promise<void>;
  /** Runs `fn` outside the current lock's transaction (work that outlives it). */
  detach<T>(fn: () => T): T;
}

/** Latency figures of replay, for /wal/status and the benchmark. */
export class ReplayStats {
  batches = 0;
  entriesApplied = 0;
  successfulSyncs = 0;
  failedSyncs = 0;
  syncCycles = 0;
  lastCycleMs = 0;
  /** Time spent sending batches that were applied: with entriesApplied, the average replay throughput. */
  appliedBatchMsTotal = 0;

  /** Entries replayed per second of time spent sending applied batches (0 before the first). */
  get avgThroughputEntriesPerSecond(): number {
    return this.appliedBatchMsTotal > 0 ? Math.round((this.entriesApplied / this.appliedBatchMsTotal) * 1000 * 10) / 10 : 0;
  }
  /** Time from append to applied on a replayed instance, last samples (ring buffer). */
  private lagSamplesMs: number[] = [];
  private lagCursor = 0;
  private readonly lagSamplesMax = 10_000;
  /** Told of every lag sample (metrics: the replay lag histogram); optional. */
  onLag: ((ms: number) => void) | null = null;

  recordLag(ms: number) {
    this.onLag?.(ms);
    if (this.lagSamplesMs.length < this.lagSamplesMax) this.lagSamplesMs.push(ms);
    else this.lagSamplesMs[this.lagCursor++ % this.lagSamplesMax] = ms;
  }

  lagPercentiles(): { p50: number; p99: number; max: number; samples: number } {
    const sorted = [...this.lagSamplesMs].sort((a, b) => a - b);
    const at = (q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : 0);
    return { p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? 0, samples: sorted.length };
  }

  resetLag() {
    this.lagSamplesMs = [];
    this.lagCursor = 0;
  }
}

/** An instance refused an entry another instance applied (see WriteAheadLog.markDiverged). */
export interface DivergedEvent {
  instance: Instance;
  entry: Pick<Entry, "seq" | "partition" | "op" | "collectionId">;
  error: string;
  /** False when the collection was already marked diverged on this instance. */
  first: boolean;
}

/** What the write path gets back from {@link Replayer.applyAsWriteTarget}. */
export type TargetOutcome = ApplyOutcome | { kind: "not_ready"; reason: string };

/** What one piece of a batch did: entries applied, or why replay stops there (and, when known, until when). */
type PieceResult = { applied: number; reason?: string; retryAtMs?: number };

interface Backoff {
  untilMs: number;
  delayMs: number;
}

export class Replayer {
  readonly locks = new KeyedMutex();
  readonly stats = new ReplayStats();
  private readonly backoff = new Map<string, Backoff>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly again = new Set<string>();
  private readonly divergedListeners: Array<(event: DivergedEvent) => void> = [];
  private stopped = false;
  /** Set when several nodes share the log (server.ts wires it with LOG_STORE=postgres). */
  crossNode: CrossNode | null = null;
  /** While paused (see pause), no replay pass starts and no batch is sent. */
  private paused = false;

  constructor(
    private readonly wal: WriteAheadLog,
    private readonly collections: CollectionStore,
    private readonly registry: InstanceRegistry,
    private readonly sizer: BatchSizer,
    private readonly config: Pick<Config, "walMaxWorkers" | "walMaxBatchBytes" | "replayStepEntriesMax" | "requestTimeoutMs" | "healthCheckTimeoutMs">,
    private readonly log: Logger,
  ) {}

  stop() {
    this.stopped = true;
  }

  /** Called whenever an instance's copy of a collection is marked diverged (alerts, and repair once it exists). */
  onDiverged(listener: (event: DivergedEvent) => void) {
    this.divergedListeners.push(listener);
  }

  /**
   * Stops replay and waits for every pass in flight to end, so that nothing reaches an
   * instance until `resume` (reset clears the instances and the log in between).
   */
  async pause(): Promise<void> {
    this.paused = true;
    await this.idle();
  }

  resume() {
    this.paused = false;
    this.backoff.clear();
  }

  /**
   * Runs `fn` while nothing is replayed or written to `instance` in `partition` (repair copies
   * a collection meanwhile; the entries it misses are replayed after, in order).
   */
  holdPartition<T>(instance: Instance, partition: string, fn: () => Promise<T>): Promise<T> {
    const crossNode = this.crossNode;
    return this.locks.run(Replayer.lockKey(instance.name, partition), () => (crossNode ? crossNode.holding(instance.name, partition, fn) : fn()));
  }

  private static lockKey(instance: string, partition: string) {
    return `${instance}\u0000${partition}`;
  }

  private limitsFor(instance: Instance): BatchLimits {
    return {
      entriesMax: Math.max(1, this.sizer.current),
      recordsMax: instance.maxBatchSize,
      bytesMax: this.config.walMaxBatchBytes,
    };
  }

  /**
   * The write path's way to apply new entries (one, or a merged group with `body`) on its
   * chosen write target: first everything they must follow (their barrier, then earlier
   * entries of their partition), then the entries themselves, under the same lock as
   * replay so that nothing reaches the instance out of order. On success the entries are
   * applied there and ready for every other instance, in one transaction.
   */
  async applyAsWriteTarget(
    instance: Instance,
    entries: Entry[],
    body: Uint8Array | null,
    options: { headers: Headers; deadlineMs: number },
  ): Promise<TargetOutcome> {
    const first = entries[0]!;
    let ready: DrainResult;
    try {
      ready = await this.prepareFor(instance, first, { deadlineMs: options.deadlineMs, urgent: true });
    } catch (error) {
      // Catching up failed on chroma-lb's side (its log could not record a replayed entry,
      // e.g. a full disk): the new entries were not sent, so this instance did not take them.
      return { kind: "not_ready", reason: `catching up failed: ${String((error as Error)?.message ?? error)}` };
    }
    if (!ready.ok) return { kind: "not_ready", reason: ready.reason };
    const held = await this.locks.run(Replayer.lockKey(instance.name, first.partition), () => this.exclusive(instance, first.partition, false, async (): Promise<TargetOutcome> => {
      try {
        await this.crossNode?.beforeSend(instance.name, first.partition);
      } catch (error) {
        return { kind: "not_ready", reason: `not sent: ${String((error as Error)?.message ?? error)}` };
      }
      const outcome = await applyEntries(instance, entries, body, this.collections, {
        headers: options.headers,
        timeoutMs: this.config.requestTimeoutMs,
        replay: false,
      });
      if (outcome.kind === "applied") {
        this.log.debug("entries applied", { instance: instance.name, partition: first.partition, positions: entries.map((e) => e.seq), by: "write" });
        // The entries are durable in the log and applied here, so the client is answered
        // with the instance's success even when their state cannot be recorded now (a full
        // disk, an unreachable store): the log keeps that change and records it later
        // (wal/unresolved.ts), holding back the partition until then; after a crash they
        // are replayed everywhere.
        const recorded = await this.wal.completeOnTarget(
          instance.name,
          first.partition,
          entries.map((e) => e.seq),
        );
        if (!recorded) {
          this.log.warn("applied entries could not be marked in the log yet; retried, their collection waits", {
            instance: instance.name,
            positions: entries.map((e) => e.seq),
          });
        }
      }
      return outcome;
    }));
    return held ?? { kind: "not_ready", reason: "another chroma-lb node is applying to this instance" };
  }

  /**
   * Right before a change sent to `instance` in `partition` inside `holdPartition`: with
   * several nodes, throws when the hold is lost (nothing may be sent then).
   */
  async beforeSend(instance: Instance, partition: string): Promise<void> {
    await this.crossNode?.beforeSend(instance.name, partition);
  }

  /** Runs `fn` holding (instance, partition) across nodes too, when there are several; null when another node holds it. */
  private exclusive<T>(instance: Instance, partition: string, fenced: boolean, fn: () => Promise<T>): Promise<T | null> {
    return this.crossNode ? this.crossNode.applying(instance.name, partition, fn, fenced) : fn();
  }

  /**
   * Applies what `instance` owes in `partition`, in order, up to `uptoSeq` (at most
   * `entriesMax` entries). Before each entry, the entries of other partitions it must follow
   * are applied (see order.ts), outside this partition's lock.
   */
  async drain(instance: Instance, partition: string, options: DrainOptions = {}): Promise<DrainResult> {
    let applied = 0;
    let previousBlocker = -1;
    for (let guard = 0; guard < 10_000; guard++) {
      const step =
        (await this.locks.run(Replayer.lockKey(instance.name, partition), () =>
          this.exclusive(instance, partition, options.fenced ?? false, () =>
            this.drainLocked(instance, partition, { ...options, entriesMax: (options.entriesMax ?? Number.MAX_SAFE_INTEGER) - applied }),
          ),
        )) ?? { ok: false as const, applied: 0, reason: "another chroma-lb node is applying to this instance" };
      applied += step.applied;
      if (!step.ok) return { ok: false, applied, reason: step.reason, retryAtMs: step.retryAtMs };
      if (!step.blockedBy) return { ok: true, applied };
      const { seq, partition: other } = step.blockedBy;
      // An earlier entry still being applied by its write target: give it a moment.
      if (seq === previousBlocker) await Bun.sleep(5);
      previousBlocker = seq;
      const result = await this.drain(instance, other, { ...options, uptoSeq: seq, entriesMax: undefined });
      if (!result.ok) return { ok: false, applied, reason: `waiting for entry ${seq}: ${result.reason}`, retryAtMs: result.retryAtMs };
    }
    return { ok: false, applied, reason: "drain made no progress" };
  }


  /** Applies every entry of other partitions that `entry` must follow (see order.ts). */
  private async satisfyBarrier(instance: Instance, entry: Pick<Entry, "seq" | "kind" | "op" | "partition">, options: DrainOptions): Promise<string | null> {
    let previous = -1;
    for (let guard = 0; guard < 1000; guard++) {
      const earlier = await blockerOf(this.wal, instance.name, entry);
      if (!earlier) return null;
      // An earlier entry still being applied by its write target: give it a moment.
      if (earlier.seq === previous) await Bun.sleep(5);
      previous = earlier.seq;
      const result = await this.drain(instance, earlier.partition, { ...options, uptoSeq: earlier.seq });
      if (!result.ok) return `waiting for entry ${earlier.seq}: ${result.reason}`;
    }
    return `entries ahead of entry ${entry.seq} did not finish`;
  }

  /**
   * Readies `instance` to apply `entry` directly (the write path): its barrier first, then
   * every earlier entry of its partition.
   */
  async prepareFor(instance: Instance, entry: Pick<Entry, "seq" | "kind" | "op" | "partition">, options: DrainOptions): Promise<DrainResult> {
    // The usual case, one store call: the instance is caught up on everything ahead.
    if (await nothingAhead(this.wal, instance.name, entry)) return { ok: true, applied: 0 };
    const reason = await this.satisfyBarrier(instance, entry, options);
    if (reason) return { ok: false, applied: 0, reason };
    const result = await this.drain(instance, entry.partition, { ...options, uptoSeq: entry.seq - 1 });
    if (!result.ok) return result;
    // Replay skips an entry that is not ready yet (and everything after it), so "nothing
    // more to replay" is not "caught up". A write applied here past such an entry would
    // reach this instance before it, and replay would later apply the older entry over the
    // newer (issue 14: a delete replayed after the upsert that followed it). So the
    // instance must owe nothing earlier of the partition, in any state.
    const owed = await this.wal.owesBefore(instance.name, entry.partition, entry.seq);
    if (owed) return { ok: false, applied: result.applied, reason: `entry ${owed.seq} of the same collection is not settled yet` };
    return result;
  }

  /** Applies every collection and meta entry the instance owes, so its lists and counts are current. */
  async drainCatalog(instance: Instance, options: DrainOptions): Promise<DrainResult> {
    let applied = 0;
    for (let guard = 0; guard < 1000; guard++) {
      const next = await this.wal.firstPendingBefore(instance.name, Number.MAX_SAFE_INTEGER, ["collection", "meta"]);
      if (!next) return { ok: true, applied };
      const result = await this.drain(instance, next.partition, { ...options, uptoSeq: next.seq });
      applied += result.applied;
      if (!result.ok) return result;
      if (result.applied === 0) return { ok: false, applied, reason: `entry ${next.seq} is still being applied` };
    }
    return { ok: false, applied, reason: "catalog did not catch up" };
  }

  private async drainLocked(
    instance: Instance,
    partition: string,
    options: DrainOptions,
  ): Promise<{ ok: true; applied: number; blockedBy?: { seq: number; partition: string } } | { ok: false; applied: number; reason: string; retryAtMs?: number }> {
    let applied = 0;
    const key = Replayer.lockKey(instance.name, partition);
    const entriesMax = options.entriesMax ?? Number.MAX_SAFE_INTEGER;
    while (!this.stopped) {
      if (applied >= entriesMax) return { ok: true, applied };
      if (!instance.healthy) return { ok: false, applied, reason: `instance ${instance.name} is down` };
      if (options.deadlineMs !== undefined && Date.now() > options.deadlineMs) return { ok: false, applied, reason: "deadline passed" };
      const wait = this.backoff.get(key);
      if (wait && wait.untilMs > Date.now() && !options.urgent) {
        return { ok: false, applied, reason: `retrying after backoff (${wait.delayMs} ms)` };
      }
      const next = await nextStep(this.wal, instance.name, partition, {
        limit: Math.min(Math.max(1, this.sizer.current), entriesMax - applied),
        uptoSeq: options.uptoSeq,
        bytesMax: this.config.walMaxBatchBytes,
      });
      if (next.kind === "none") return { ok: true, applied };
      // An entry behind an unmet barrier must wait: drain() applies the blocker first.
      if (next.kind === "blocked") return { ok: true, applied, blockedBy: next.by };
      const batch = takeBatch(next.entries, this.limitsFor(instance));
      const step = await applyBisecting(batch.entries, batch.body, (entries, body) => this.applyPiece(instance, entries, body));
      const stop = step.results.find((r) => r.reason !== undefined);
      applied += step.results.reduce((n, r) => n + r.applied, 0);
      if (stop) return this.fail(key, applied, stop.reason!, stop.retryAtMs);
      this.backoff.delete(key);
    }
    return { ok: false, applied, reason: "stopped" };
  }

  /** Backs the key off: until `retryAtMs` when the stop said when (nothing failed then), else doubling from 100 ms. */
  private fail(key: string, applied: number, reason: string, retryAtMs?: number) {
    const previous = this.backoff.get(key);
    if (retryAtMs !== undefined) {
      this.backoff.set(key, { untilMs: retryAtMs, delayMs: Math.max(0, retryAtMs - Date.now()) });
      return { ok: false as const, applied, reason, retryAtMs };
    }
    const delayMs = Math.min(30_000, previous ? previous.delayMs * 2 : 100);
    this.backoff.set(key, { untilMs: Date.now() + delayMs, delayMs });
    this.stats.failedSyncs += 1;
    return { ok: false as const, applied, reason };
  }

  /** Applies one piece of a batch (see order.ts's applyBisecting) and records the outcome in the log. */
  private async applyPiece(instance: Instance, entries: Entry[], body: Uint8Array | null): Promise<PieceOutcome<PieceResult>> {
    const stop = (reason: string, retryAtMs?: number): PieceOutcome<PieceResult> => ({ kind: "stop", results: [{ applied: 0, reason, retryAtMs }] });
    if (this.paused || this.stopped) return stop("replay is paused");
    try {
      await this.crossNode?.beforeSend(instance.name, entries[0]!.partition);
    } catch (error) {
      return stop(`not sent: ${String((error as Error)?.message ?? error)}`, error instanceof SendNotBefore ? error.untilMs : undefined);
    }
    const startedMs = performance.now();
    const outcome = await applyEntries(instance, entries, body, this.collections, {
      timeoutMs: this.config.requestTimeoutMs,
      replay: true,
    });
    switch (outcome.kind) {
      case "applied": {
        this.log.debug("entries applied", { instance: instance.name, partition: entries[0]!.partition, positions: entries.map((e) => e.seq), by: "replay" });
        await this.wal.markApplied(instance.name, entries);
        this.registry.reportSuccess(instance);
        this.stats.batches += 1;
        this.stats.successfulSyncs += 1;
        this.stats.entriesApplied += entries.length;
        this.stats.appliedBatchMsTotal += performance.now() - startedMs;
        const now = Date.now();
        for (const entry of entries) this.stats.recordLag(now - entry.createdAtMs);
        return { kind: "done", results: [{ applied: entries.length }] };
      }
      case "transport":
        // A batch that timed out under heavy load is not an outage while the heartbeat answers.
        await blameTransportFailure(this.registry, this.log, instance, outcome.failure, outcome.reason, this.config.healthCheckTimeoutMs);
        return stop(outcome.reason);
      case "refused": {
        this.registry.reportSuccess(instance);
        if (entries.length > 1) return { kind: "split" };
        const entry = entries[0]!;
        if (await this.wal.appliedNowhere(entry.seq)) {
          // No instance applied this entry (it was logged while every instance was down, or
          // left unanswered by a crash). It is dropped only once every instance has refused
          // it: this one may be the one that lost its copy, and another may apply it.
          await this.wal.recordRefusal(instance.name, entry, outcome.reason);
          if (!(await this.wal.refusedEverywhere(entry.seq))) return stop(`refused; waiting for the other instances: ${outcome.reason}`);
          this.log.warn("log entry refused by every instance; rejected", { seq: entry.seq, reason: outcome.reason });
          await this.wal.reject(entry);
          return { kind: "done", results: [{ applied: 1 }] };
        }
        // Another instance applied what this one refuses: this copy of the collection is no
        // longer the same. It is marked, reads avoid it, and replay goes on past the entry.
        const { first } = await this.wal.markDiverged(instance.name, entry, outcome.reason);
        this.log.error("instance refused an entry another instance applied; collection marked diverged", {
          instance: instance.name,
          seq: entry.seq,
          partition: entry.partition,
          reason: outcome.reason,
        });
        for (const listener of this.divergedListeners) listener({ instance, entry, error: outcome.reason, first });
        return { kind: "done", results: [{ applied: 1 }] };
      }
      case "failed":
        if (entries.length > 1) return { kind: "split" };
        await this.wal.recordFailure(instance.name, entries[0]!, outcome.reason);
        this.log.warn("replay failed", { instance: instance.name, seq: entries[0]!.seq, reason: outcome.reason });
        return stop(outcome.reason);
    }
  }

  /**
   * One bounded replay step for one instance: drains up to WAL_MAX_WORKERS partitions at a
   * time, oldest first, and applies at most REPLAY_STEP_ENTRIES_MAX entries in all. `more`
   * says the bound was reached with entries still owed (the caller steps again).
   */
  async replayOnce(instance: Instance): Promise<{ applied: number; blocked: number; more: boolean }> {
    let applied = 0;
    let blocked = 0;
    if (!instance.healthy || this.paused) return { applied, blocked, more: false };
    this.stats.syncCycles += 1;
    const started = Date.now();
    const budget = this.config.replayStepEntriesMax;
    const owed = await this.wal.pendingPartitions(instance.name, 1000);
    // With several nodes, each (instance, collection) is replayed by the node holding its lease.
    const crossNode = this.crossNode;
    const mine = crossNode ? await crossNode.replays(instance.name, owed.map((p) => p.partition)) : null;
    const partitions = mine ? owed.filter((p) => mine.has(p.partition)) : owed;
    let next = 0;
    const worker = async () => {
      while (next < partitions.length && applied < budget && instance.healthy && !this.stopped) {
        const { partition } = partitions[next++]!;
        const result = await this.drain(instance, partition, { entriesMax: budget - applied, fenced: crossNode !== null });
        applied += result.applied;
        if (!result.ok) blocked += 1;
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.config.walMaxWorkers, partitions.length) }, worker));
    this.stats.lastCycleMs = Date.now() - started;
    return { applied, blocked, more: applied >= budget || owed.length >= 1000 };
  }

  /**
   * Steps replay for the instance until nothing is owed (or everything left waits for a
   * retry), unless it is stepping already: a kick meanwhile makes it step once more, so no
   * kick is lost.
   */
  kick(instance: Instance): Promise<void> {
    // While the log store cannot be reached nothing can be read or recorded; its probe kicks again.
    if (this.stopped || this.paused || this.wal.storeUnreachable) return Promise.resolve();
    const current = this.running.get(instance.name);
    if (current) {
      this.again.add(instance.name);
      return current;
    }
    const pass = async () => {
      try {
        for (;;) {
          this.again.delete(instance.name);
          const result = await this.replayOnce(instance);
          this.registry.updateCatchingUp(instance, this.wal.pendingCount(instance.name));
          if (result.applied === 0 && result.blocked > 0) break;
          if (this.stopped || !(this.again.has(instance.name) || (result.more && result.applied > 0))) break;
        }
      } catch (error) {
        this.log.error("replay pass failed", { instance: instance.name, error: String(error) });
      } finally {
        this.running.delete(instance.name);
      }
    };
    // A kick from inside a lock's transaction (a write just recorded) must not run in it.
    const run = this.crossNode ? this.crossNode.detach(pass) : pass();
    this.running.set(instance.name, run);
    return run;
  }

  kickAll() {
    for (const instance of this.registry.all) if (instance.healthy && this.wal.pendingCount(instance.name) > 0) void this.kick(instance);
  }

  isReplaying(): boolean {
    return this.running.size > 0;
  }

  async idle(): Promise<void> {
    while (this.running.size) await Promise.all(this.running.values());
  }
}
