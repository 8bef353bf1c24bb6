/**
 * Whether the log store answers: every call's outcome is watched, so the first failure that
 * says the store cannot be reached (the store's `isUnreachableError`) marks it unreachable and
 * the next success clears it. While unreachable, appends are refused at once (503) instead of
 * each waiting for a connect timeout; `probe` is the way back.
 */
import type { LogStore } from "./store";

/** An append refused because the store cannot be reached: nothing was kept (503, Retry-After). */
export class LogStoreUnreachableError extends Error {
  constructor(reason: string) {
    super(`chroma-lb's log store cannot be reached (${reason})`);
    this.name = "LogStoreUnreachableError";
  }
}

export class Reachability {
  /** Since when, and why, the store cannot be reached; null while it answers. */
  state: { sinceMs: number; error: string } | null = null;
  /** The store, every call watched. */
  readonly store: LogStore;

  constructor(store: LogStore) {
    this.store = new Proxy(store, {
      get: (target, key, receiver) => {
        const value = Reflect.get(target, key, receiver);
        if (typeof value !== "function" || key === "isUnreachableError") return value;
        return (...args: unknown[]) =>
          (value as (...a: unknown[]) => Promise<unknown>).apply(target, args).then(
            (result) => {
              this.state = null;
              return result;
            },
            (error: unknown) => {
              if (target.isUnreachableError(error)) this.state ??= { sinceMs: Date.now(), error: String((error as Error)?.message ?? error).slice(0, 500) };
              throw error;
            },
          );
      },
    });
  }

  /** One round trip while unreachable; true once the store answers. */
  async probe(): Promise<boolean> {
    if (!this.state) return true;
    try {
      await this.store.ping();
      return true;
    } catch {
      return false;
    }
  }
}
