/**
 * A Postgres transaction that the log's state changes join while it is open.
 *
 * With several chroma-lb nodes, a node applies entries to an instance only while it holds a
 * transaction-scoped advisory lock on (instance, collection) (cluster/apply-locks.ts). What
 * it records meanwhile (applied, failed, diverged) must commit in that same transaction:
 * when the transaction is lost (the node was cut from Postgres and the server ended the
 * transaction), nothing it recorded stands, and the next holder starts from the first entry
 * not recorded. The scope carries the transaction through the async calls in between
 * (AsyncLocalStorage), so log.ts and the replayer need not pass it along.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type postgres from "postgres";

interface ScopeState {
  tx: postgres.TransactionSql;
  open: boolean;
  /** Run once the transaction has committed (see afterCommit). */
  onCommit: Array<() => void>;
}

export class TxScope {
  private readonly storage = new AsyncLocalStorage<ScopeState>();

  /** The transaction of the scope this call runs in, while it is open; null otherwise. */
  current(): postgres.TransactionSql | null {
    const state = this.storage.getStore();
    return state?.open ? state.tx : null;
  }

  /**
   * Runs `fn` in a scope whose store calls go through `tx`; the scope closes when `fn`
   * settles. What `afterCommit` was given meanwhile goes into `onCommit`: the caller runs it
   * once the transaction committed, and drops it otherwise.
   */
  async run<T>(tx: postgres.TransactionSql, fn: () => Promise<T>, onCommit: Array<() => void> = []): Promise<T> {
    const state: ScopeState = { tx, open: true, onCommit };
    try {
      return await this.storage.run(state, fn);
    } finally {
      state.open = false;
    }
  }

  /** Runs `change` once the current scope's transaction commits; at once outside a scope. */
  afterCommit(change: () => void): void {
    const state = this.storage.getStore();
    if (state?.open) state.onCommit.push(change);
    else change();
  }

  /** Runs `fn` outside any scope (work started from inside one that outlives it, e.g. a replay pass). */
  detach<T>(fn: () => T): T {
    return this.storage.exit(fn);
  }
}
