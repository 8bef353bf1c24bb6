/**
 * Who may apply entries, across nodes: two kinds of transaction-scoped advisory locks, each
 * held by an open transaction on a client of their own (not the log store's pool, so a
 * holder waiting for the store never waits for a connection another holder keeps).
 *
 * - The write lock of a partition (a collection, or `meta`): a node holds it from before it
 *   appends a write of the partition until the write's outcome is recorded. Writers of one
 *   collection on different nodes therefore take turns, so the order of the log is the
 *   order in which the write target applied them; and a `new` entry found while holding the
 *   lock was left by a writer that is gone (recovered as ready, replayed everywhere).
 * - The apply lock of (instance, partition): held by whoever sends entries of the partition
 *   to the instance, replay or write path. Replay tries it and moves on when it is taken.
 *
 * What a holder records (applied, failed, ready) runs in the lock's own transaction (the
 * log store joins it, wal/postgres/tx-scope.ts), with the replay lease checked in it
 * (fenceInTx): a holder whose transaction was ended records nothing, and the next holder
 * starts from the first entry not recorded.
 *
 * A node cut from Postgres must not go on applying: each transaction sets
 * `idle_in_transaction_session_timeout` to REQUEST_TIMEOUT + a margin, and before each
 * request to an instance the holder runs one statement in the transaction (`beforeSend`).
 * The server cannot end the transaction, and another node cannot take the lock, until that
 * request has had its full timeout. Transaction-scoped locks work behind PgBouncer in
 * transaction mode (the transaction keeps its server connection); session locks would not.
 */
import type postgres from "postgres";
import { LbError, OutcomeUnknownError, storageRetryAfterSeconds } from "../errors";
import type { TxScope } from "../wal/postgres/tx-scope";
import { fenceInTx, type Lease, type LeaseKey } from "./leases";
import { hintPayload, wakeupChannel } from "./wakeups";

/** First half of each two-key advisory lock: which kind of lock ("clw1", "cla1"). */
const writeLockSpace = 0x636c7731;
const applyLockSpace = 0x636c6131;

export interface ApplyLocksOptions {
  nodeId: string;
  /** REQUEST_TIMEOUT in ms: the longest a request to an instance may take. */
  requestTimeoutMs: number;
  /** Added to requestTimeoutMs for the transaction's idle bound (default 5 000 ms). */
  marginMs?: number;
  /** Leases this node holds now (lease-driven replay is fenced with them). */
  leaseOf: (key: LeaseKey) => Lease | null;
}

/** Postgres's error for a lock wait past lock_timeout. */
const lockTimeoutCode = "55P03";

/** A write lock could not be taken in time, or Postgres could not be reached for it. */
export class WriteLockUnavailable extends Error {
  constructor(readonly reason: string) {
    super(`the collection's write lock could not be taken (${reason})`);
    this.name = "WriteLockUnavailable";
  }

  /** As the client is answered: 503 with Retry-After; `kept` when the write may have been logged (and will then be applied). */
  toLbError(kept = false): LbError {
    const outcome = kept ? "it may have been logged, and is then applied; retrying it is safe" : "nothing was kept, retry shortly";
    return new (kept ? OutcomeUnknownError : LbError)(503, "ServiceUnavailable", `chroma-lb cannot order this write now (${this.reason}); ${outcome}`, {
      "retry-after": String(storageRetryAfterSeconds),
    });
  }
}

/** Runs what waited for a commit; one failing does not stop the others. */
function runAll(changes: Array<() => void>) {
  for (const change of changes) {
    try {
      change();
    } catch {
      // A view update that throws is fixed by the next reload.
    }
  }
}

export class ApplyLocks {
  private readonly idleMs: number;
  /** Counters for /metrics and tests. */
  readonly stats = { writeLocks: 0, applyLocks: 0, applyLocksBusy: 0, fenced: 0, orphansRecovered: 0 };

  constructor(
    /** A client of its own; each open lock holds one of its connections. */
    private readonly sql: postgres.Sql,
    private readonly scope: TxScope,
    private readonly options: ApplyLocksOptions,
  ) {
    this.idleMs = options.requestTimeoutMs + (options.marginMs ?? 5_000);
  }

  private async bound(tx: postgres.TransactionSql) {
    await tx`select set_config('idle_in_transaction_session_timeout', ${String(this.idleMs)}, true),
                    set_config('lock_timeout', ${String(this.options.requestTimeoutMs)}, true)`;
  }

  /**
   * Runs `fn` (append, apply, record) holding the partition's write lock; `recover` runs
   * first, under the lock, to make ready what a gone writer left `new`. A wake-up hint for
   * the partition goes out when the transaction commits. When the lock cannot be taken,
   * nothing ran: WriteLockUnavailable. When `fn` finished but the commit failed, its result
   * stands (the entry is durable; what was not recorded is recovered as after a crash).
   */
  async writing<T>(partition: string, recover: () => Promise<unknown>, fn: () => Promise<T>): Promise<T> {
    let done: { value: T } | null = null;
    let failure: { error: unknown } | null = null;
    let started = false;
    const onCommit: Array<() => void> = [];
    try {
      await this.sql.begin(async (tx) => {
        // One round trip: the bounds, the lock, and the hint (Postgres sends it at commit).
        await tx`select set_config('idle_in_transaction_session_timeout', ${String(this.idleMs)}, true),
                        set_config('lock_timeout', ${String(this.options.requestTimeoutMs)}, true),
                        pg_advisory_xact_lock(${writeLockSpace}, hashtext(${partition})),
                        pg_notify(${wakeupChannel}, ${hintPayload(this.options.nodeId, { kind: "entry", collection: partition })})`;
        started = true;
        this.stats.writeLocks += 1;
        await this.scope.run(tx, async () => {
          const recovered = await recover();
          if (Array.isArray(recovered)) this.stats.orphansRecovered += recovered.length;
          // What `fn` recorded before it failed (a rejected entry, one kept for replay) commits too.
          try {
            done = { value: await fn() };
          } catch (error) {
            failure = { error };
          }
        }, onCommit);
      });
      runAll(onCommit);
    } catch (error) {
      if (failure) throw (failure as { error: unknown }).error;
      if (done) return (done as { value: T }).value;
      if (!started) {
        const code = String((error as { code?: unknown })?.code ?? "");
        throw new WriteLockUnavailable(code === lockTimeoutCode ? "another node is writing to it" : String((error as Error)?.message ?? error).slice(0, 200));
      }
      throw error;
    }
    if (failure) throw (failure as { error: unknown }).error;
    return (done as unknown as { value: T }).value;
  }

  /**
   * Runs `recover` holding the partition's write lock when no writer has it (a writer
   * recovers on its own); answers how many entries it recovered.
   */
  async recoverIfFree(partition: string, recover: () => Promise<number[]>): Promise<number> {
    let recovered = 0;
    const onCommit: Array<() => void> = [];
    await this.scope.detach(() =>
      this.sql.begin(async (tx) => {
        await this.bound(tx);
        const [row] = await tx<Array<{ got: boolean }>>`select pg_try_advisory_xact_lock(${writeLockSpace}, hashtext(${partition})) as got`;
        if (!row?.got) return;
        recovered = (await this.scope.run(tx, recover, onCommit)).length;
      }),
    );
    runAll(onCommit);
    this.stats.orphansRecovered += recovered;
    return recovered;
  }

  /**
   * Runs `fn` holding the apply lock of (instance, partition). Inside a write lock's
   * transaction the lock is taken there (waiting for it up to REQUEST_TIMEOUT; null when it
   * could not be had); otherwise in a transaction of its
   * own, only if free: null when another holder has it, or when `fenced` and this node does
   * not hold the lease (or the lease's token no longer matches in Postgres).
   */
  async applying<T>(instance: string, partition: string, fn: () => Promise<T>, fenced: boolean): Promise<T | null> {
    const key = JSON.stringify([instance, partition]);
    const current = this.scope.current();
    if (current) {
      // In a savepoint: a wait past lock_timeout (or a deadlock Postgres broke) fails this
      // step alone, not the write's transaction; a lock taken stays until that commits.
      try {
        await current.savepoint((sp) => sp`select pg_advisory_xact_lock(${applyLockSpace}, hashtext(${key}))`);
      } catch {
        this.stats.applyLocksBusy += 1;
        return null;
      }
      this.stats.applyLocks += 1;
      return fn();
    }
    const lease = fenced ? this.options.leaseOf({ instance, collection: partition }) : null;
    if (fenced && !lease) return null;
    let result: T | null = null;
    const onCommit: Array<() => void> = [];
    await this.scope.detach(() =>
      this.sql.begin(async (tx) => {
        await this.bound(tx);
        const [row] = await tx<Array<{ got: boolean }>>`select pg_try_advisory_xact_lock(${applyLockSpace}, hashtext(${key})) as got`;
        if (!row?.got) {
          this.stats.applyLocksBusy += 1;
          return;
        }
        if (lease && !(await fenceInTx(tx, this.options.nodeId, lease))) {
          this.stats.fenced += 1;
          return;
        }
        this.stats.applyLocks += 1;
        result = await this.scope.run(tx, fn, onCommit);
      }),
    );
    runAll(onCommit);
    return result;
  }

  /**
   * Runs `fn` (a resync's copy: long, many requests) holding the apply lock of (instance,
   * partition), waiting for it up to REQUEST_TIMEOUT. A statement every few seconds keeps
   * the transaction from its idle bound; if the transaction is lost meanwhile, what `fn`
   * records in it fails, and the copy is tried again (its copy stays marked under repair).
   */
  async holding<T>(instance: string, partition: string, fn: () => Promise<T>): Promise<T> {
    const key = JSON.stringify([instance, partition]);
    let result: { value: T } | null = null;
    const onCommit: Array<() => void> = [];
    await this.scope.detach(() =>
      this.sql.begin(async (tx) => {
        await this.bound(tx);
        await tx`select pg_advisory_xact_lock(${applyLockSpace}, hashtext(${key}))`;
        this.stats.applyLocks += 1;
        const keepalive = setInterval(() => void tx`select 1`.catch(() => {}), Math.max(500, Math.floor(this.idleMs / 4)));
        try {
          result = { value: await this.scope.run(tx, fn, onCommit) };
        } finally {
          clearInterval(keepalive);
        }
      }),
    );
    runAll(onCommit);
    return (result as unknown as { value: T }).value;
  }

  /**
   * Right before a request to an instance: one statement in the lock's transaction, so the
   * lock is known held now and cannot end before the request's own timeout has passed.
   * Throws when the transaction is gone (nothing is sent then).
   */
  async beforeSend(): Promise<void> {
    const tx = this.scope.current();
    if (tx) await tx`select 1`;
  }
}
