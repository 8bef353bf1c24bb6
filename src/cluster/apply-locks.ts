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
 * request to an instance the holder runs one statement in the transaction (`beforeSend`):
 * nothing is sent once the lock is lost. But a lock is freed as soon as its session ends,
 * and a session ends at once when its connection does (a node killed, a cut that resets the
 * connection, Postgres restarted), while a request the holder sent a moment before may
 * still be on its way to the instance, or inside it. So before its first request under an
 * apply lock, a holder writes, outside its transaction, until when its requests may still
 * land (`chroma_lb_apply_sends`: REQUEST_TIMEOUT and a margin ahead, extended while it
 * goes on); and a holder sends nothing while such a row of a transaction that did not
 * commit (a vanished holder) still runs. Without this, a write applied by the next holder
 * could be overtaken on the instance by an older one (an update landing after a later
 * upsert of the same record). Transaction-scoped locks work behind PgBouncer in
 * transaction mode (the transaction keeps its server connection); session locks would not.
 */
import type postgres from "postgres";
import { LbError, OutcomeUnknownError, SendNotBefore, storageRetryAfterSeconds } from "../errors";
import type { TxScope } from "../wal/postgres/tx-scope";
import type { Divergence } from "../wal/types";
import { bounded, StatementTimeout } from "./bounded";
import { fenceInTx, type Lease, type LeaseKey } from "./leases";
import { clusterTables } from "./schema";
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
  /** Added to requestTimeoutMs before a lock not taken is reported stuck (default 10 000 ms). */
  acquireMarginMs?: number;
  /** Leases this node holds now (lease-driven replay is fenced with them). */
  leaseOf: (key: LeaseKey) => Lease | null;
  /** A copy was marked in doubt (see `settleVanished`): called once the mark has committed. */
  onDoubt?: (mark: Divergence) => void;
  /**
   * A client stopped answering: a lock not taken within its bound, or a send row not written
   * within it. postgres.js can leave a query waiting for good on a connection closed during
   * start-up (porsager/postgres#1193, #1214); the caller replaces that client (renewable.ts),
   * which fails what waited on it.
   */
  onStuck?: (client: "locks" | "send rows", what: string) => void;
}

/** The mark of a copy a vanished holder may have applied entries to that it never recorded. */
export const doubtOp = "doubt";

/** Postgres's error for a lock wait past lock_timeout. */
const lockTimeoutCode = "55P03";

/** Added to REQUEST_TIMEOUT for how long a request sent may still land (a pause between the check and the send). */
const sendMarginMs = 2_000;
/** How long a send row covers beyond that: requests sent within it need no new row. */
const sendCoverMs = 1_000;
/** Added to lock_timeout before a lock not taken is taken for a client that stopped answering (a connect, and slack). */
const acquireMarginMs = 10_000;
/** A send row not written within this is taken for a client that stopped answering; nothing is sent then. */
const sendRowBoundMs = 5_000;

/** The key of an apply lock, as locked and as written in `chroma_lb_apply_sends`. */
export function applyLockKey(instance: string, partition: string): string {
  return JSON.stringify([instance, partition]);
}

/**
 * The lock is held, but a holder that vanished (its transaction ended without committing)
 * may still have requests on the way to the instance: nothing is sent until `untilMs`.
 */
export class VanishedHolderRequests extends SendNotBefore {
  constructor(
    readonly lockKey: string,
    untilMs: number,
  ) {
    super(`a node that held this apply lock before is gone, and a request it sent may still land until ${new Date(untilMs).toISOString()}; nothing is sent to this copy before then`, untilMs);
    this.name = "VanishedHolderRequests";
  }
}

/** What a holding transaction sent under: its id, and per apply key the local time its send row covers sends until. */
interface Sends {
  xid: string;
  coveredUntilMs: Map<string, number>;
}

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
  readonly stats = { writeLocks: 0, applyLocks: 0, applyLocksBusy: 0, fenced: 0, orphansRecovered: 0, sendRows: 0, vanishedHolderWaits: 0, copiesInDoubt: 0 };
  /** Per open holding transaction (the TransactionSql), what it sent under. */
  private readonly sends = new WeakMap<object, Sends>();

  constructor(
    /** A client of its own; each open lock holds one of its connections. */
    private readonly sql: postgres.Sql,
    private readonly scope: TxScope,
    private readonly options: ApplyLocksOptions,
    /**
     * Writes the send rows, outside the holders' transactions: a client none of them keeps a
     * connection of (the lock client's may all be held by holders about to send).
     */
    private readonly rowsSql: postgres.Sql = sql,
  ) {
    this.idleMs = options.requestTimeoutMs + (options.marginMs ?? 5_000);
  }

  /**
   * Runs a lock transaction whose lock must be taken within lock_timeout (REQUEST_TIMEOUT)
   * plus a connect and a margin: past that, the client is reported stuck (`onStuck`). `fn`
   * calls `taken()` once its lock statement answered.
   */
  private begin<T>(what: string, fn: (tx: postgres.TransactionSql, taken: () => void) => Promise<T>): Promise<T> {
    let taken = false;
    const watchdog = setTimeout(() => {
      if (!taken) this.options.onStuck?.("locks", `${what}: no lock within ${this.acquireBoundMs} ms`);
    }, this.acquireBoundMs);
    return (this.sql.begin((tx) => fn(tx, () => (taken = true))) as Promise<T>).finally(() => clearTimeout(watchdog));
  }

  /** How long taking a lock may take before its client is reported stuck. */
  private get acquireBoundMs(): number {
    return this.options.requestTimeoutMs + (this.options.acquireMarginMs ?? acquireMarginMs);
  }

  /** Remembers the holding transaction's id (read in its first statement), for its send rows. */
  private holdingTx(tx: object, xid: string) {
    if (!this.sends.has(tx)) this.sends.set(tx, { xid, coveredUntilMs: new Map() });
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
      await this.begin(`write lock of ${partition}`, async (tx, taken) => {
        // One round trip: the bounds, the lock, and the hint (Postgres sends it at commit).
        const [first] = await tx<Array<{ xid: string }>>`select set_config('idle_in_transaction_session_timeout', ${String(this.idleMs)}, true),
                        set_config('lock_timeout', ${String(this.options.requestTimeoutMs)}, true),
                        pg_advisory_xact_lock(${writeLockSpace}, hashtext(${partition})),
                        pg_notify(${wakeupChannel}, ${hintPayload(this.options.nodeId, { kind: "entry", collection: partition })}),
                        pg_current_xact_id()::text as xid`;
        this.holdingTx(tx, first!.xid);
        taken();
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
      this.begin(`write lock of ${partition} for recovery`, async (tx, taken) => {
        await this.bound(tx);
        const [row] = await tx<Array<{ got: boolean }>>`select pg_try_advisory_xact_lock(${writeLockSpace}, hashtext(${partition})) as got`;
        taken();
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
    const key = applyLockKey(instance, partition);
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
      this.begin(`apply lock of ${key}`, async (tx, taken) => {
        await this.bound(tx);
        const [row] = await tx<Array<{ got: boolean; xid: string }>>`select pg_try_advisory_xact_lock(${applyLockSpace}, hashtext(${key})) as got, pg_current_xact_id()::text as xid`;
        taken();
        if (!row?.got) {
          this.stats.applyLocksBusy += 1;
          return;
        }
        this.holdingTx(tx, row.xid);
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
    const key = applyLockKey(instance, partition);
    let result: { value: T } | null = null;
    const onCommit: Array<() => void> = [];
    await this.scope.detach(() =>
      this.begin(`apply lock of ${key} for a resync`, async (tx, taken) => {
        await this.bound(tx);
        const [row] = await tx<Array<{ xid: string }>>`select pg_advisory_xact_lock(${applyLockSpace}, hashtext(${key})), pg_current_xact_id()::text as xid`;
        taken();
        this.holdingTx(tx, row!.xid);
        this.stats.applyLocks += 1;
        // The copy's requests are many and not each checked: one send row, renewed with the
        // keepalive, covers them, and a vanished holder's requests are waited for first.
        const everyMs = Math.max(500, Math.floor(this.idleMs / 4));
        for (;;) {
          try {
            await this.sendsCovered(tx, instance, partition, everyMs);
            break;
          } catch (error) {
            if (!(error instanceof VanishedHolderRequests)) throw error;
            await Bun.sleep(Math.min(everyMs, Math.max(50, error.untilMs - Date.now())));
          }
        }
        // Stops once the transaction is gone: the copy's next change then fails its check.
        const keepalive = setInterval(() => void this.sendsCovered(tx, instance, partition, everyMs).catch(() => clearInterval(keepalive)), everyMs);
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
   * Right before a request to (instance, partition), one statement in the lock's
   * transaction (the lock is still held) and, before the transaction's first request under
   * that lock, its send row. Throws when the transaction is gone, or VanishedHolderRequests:
   * nothing is sent then.
   */
  async beforeSend(instance: string, partition: string): Promise<void> {
    const tx = this.scope.current();
    if (tx) await this.sendsCovered(tx, instance, partition, 0);
  }

  /**
   * Makes the transaction's requests to (instance, partition) covered for at least `aheadMs`
   * more. The first time: no vanished holder's requests may still land (checked under the
   * lock, so none can be added), and those that could have landed are settled
   * (`settleVanished`); then the send row; then one statement in the transaction proving
   * the lock was still held once the row could be seen (a holder gone before this statement
   * sends nothing; one gone after it left the row for the next holder). Later, while the row
   * covers enough: that last statement alone.
   */
  private async sendsCovered(tx: postgres.TransactionSql, instance: string, partition: string, aheadMs: number): Promise<void> {
    const key = applyLockKey(instance, partition);
    const sends = this.sends.get(tx);
    const coveredUntilMs = sends?.coveredUntilMs.get(key);
    if (!sends || (coveredUntilMs !== undefined && coveredUntilMs >= Date.now() + aheadMs)) {
      await tx`select 1`;
      return;
    }
    if (coveredUntilMs === undefined) {
      const [row] = await tx<Array<{ until_ms: number | null }>>`
        select (extract(epoch from max(until)) * 1000)::bigint as until_ms from ${tx(clusterTables.applySends)}
        where lock_key = ${key} and xid <> ${sends.xid} and until > clock_timestamp()
          and pg_xact_status(xid::xid8) is distinct from 'committed'`;
      if (row?.until_ms != null) {
        this.stats.vanishedHolderWaits += 1;
        throw new VanishedHolderRequests(key, Number(row.until_ms));
      }
      await this.settleVanished(tx, instance, partition, key, sends.xid);
    }
    const coverMs = sendCoverMs + aheadMs;
    const startedMs = Date.now();
    try {
      await this.scope.detach(() =>
        bounded(
          "send row",
          this.rowsSql`
            insert into ${this.rowsSql(clusterTables.applySends)} (lock_key, xid, node_id, until)
            values (${key}, ${sends.xid}, ${this.options.nodeId}, clock_timestamp() + make_interval(secs => ${(this.options.requestTimeoutMs + sendMarginMs + coverMs) / 1000}))
            on conflict (lock_key, xid) do update set until = excluded.until`,
          sendRowBoundMs,
        ),
      );
    } catch (error) {
      if (error instanceof StatementTimeout) this.options.onStuck?.("send rows", error.message);
      throw error;
    }
    this.stats.sendRows += 1;
    // Postgres's clock ran from at least `startedMs` when it wrote the row.
    sends.coveredUntilMs.set(key, startedMs + coverMs);
    await tx`select 1`;
  }

  /**
   * A vanished holder whose requests can no longer land may still have applied entries it
   * never recorded: they are owed still, and sent again. Applying a run of entries twice is
   * not always the same as once (an update of an id that did not exist yet, applied again
   * after the upsert that made it, merges into it), so the copy is marked in doubt (a
   * divergence mark: reads prefer the other copies, the consistency check takes another copy
   * as the reference, and the repair pass rebuilds it). The rows go, and the mark comes, in
   * the holder's transaction: if it is lost too, the next holder settles them.
   */
  private async settleVanished(tx: postgres.TransactionSql, instance: string, partition: string, key: string, xid: string): Promise<void> {
    const gone = await tx<Array<{ node_id: string }>>`
      delete from ${tx(clusterTables.applySends)}
      where lock_key = ${key} and xid <> ${xid} and pg_xact_status(xid::xid8) is distinct from 'committed'
      returning node_id`;
    if (gone.length === 0) return;
    const nodes = [...new Set(gone.map((r) => r.node_id))].join(", ");
    const error = `node ${nodes} was applying to this copy when it went (killed, or cut from Postgres): entries it may have applied without recording them were sent again`;
    const atMs = Date.now();
    const [mark] = await tx<Divergence[]>`
      insert into chroma_lb_wal_diverged (instance, partition, seq, op, error, refused_entries, at_ms)
      values (${instance}, ${partition}, 0, ${doubtOp}, ${error}, 0, ${atMs})
      on conflict (instance, partition) do update set at_ms = chroma_lb_wal_diverged.at_ms
      returning instance, partition, seq, op, error, refused_entries as "refusedEntries", at_ms as "atMs"`;
    this.stats.copiesInDoubt += 1;
    if (mark && this.options.onDoubt) {
      const onDoubt = this.options.onDoubt;
      this.scope.afterCommit(() => onDoubt(mark));
    }
  }

  /**
   * Removes send rows no request can need any more: those of holders that committed (their
   * entries are recorded), once every request they sent has timed out. A vanished holder's
   * rows stay until the next holder settles them.
   */
  async sweepSends(): Promise<number> {
    const rows = await this.rowsSql`
      delete from ${this.rowsSql(clusterTables.applySends)}
      where until < clock_timestamp() - interval '1 minute' and pg_xact_status(xid::xid8) = 'committed'`;
    return rows.count;
  }
}
