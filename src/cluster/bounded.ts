/**
 * A bound on one statement sent to Postgres. A cut connection can leave a query waiting for
 * a reconnect (postgres.js retries with backoff), and a renewal that waits past the lease
 * time is worth nothing, so every cluster statement is given up after its bound; the query
 * is cancelled on the server when it can still be reached.
 */

/** The answer did not come within the bound; the statement's effect is unknown. */
export class StatementTimeout extends Error {
  constructor(what: string, timeoutMs: number) {
    super(`${what}: no answer from Postgres within ${timeoutMs} ms`);
    this.name = "StatementTimeout";
  }
}

/** What postgres.js returns for a query: a promise that can be cancelled. */
interface Cancellable<T> extends PromiseLike<T> {
  /** postgres.js answers a promise: it rejects when the cancel request cannot reach the server. */
  cancel?: () => unknown;
}

/** Resolves with the query's answer, or rejects with StatementTimeout after `timeoutMs`. */
export async function bounded<T>(what: string, query: Cancellable<T>, timeoutMs: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expiry = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      try {
        // The cancel request opens a connection of its own; with Postgres gone it rejects
        // (refused, or closed mid-handshake), and that rejection is expected, not unhandled.
        Promise.resolve(query.cancel?.()).catch(() => {});
      } catch {
        // The connection is gone; nothing to cancel.
      }
      reject(new StatementTimeout(what, timeoutMs));
    }, timeoutMs);
  });
  // A query abandoned at the bound may still reject later; that rejection is expected.
  const answer = Promise.resolve(query);
  answer.catch(() => {});
  try {
    return await Promise.race([answer, expiry]);
  } finally {
    clearTimeout(timer);
  }
}

/** The message of an error, for status fields and logs (never a connection string: the driver's messages hold none). */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message || error.name : String(error);
}
