/**
 * A postgres.js client that can be replaced while the code holding it keeps its reference:
 * every call goes to the client current at that moment.
 *
 * Why: after Postgres was SIGKILLed and restarted, a node's cluster client was seen to never
 * answer again (every statement past its bound for as long as the run lasted) while the log
 * store's clients, on the same server, worked. postgres.js has open defects of that kind
 * (porsager/postgres#1193, #1214: a connection closed during start-up can leave a query
 * waiting for good). A client that stops answering while a new one would is thrown away.
 */
import type postgres from "postgres";

export interface RenewableClient {
  /** Forwards every call and property to the current client. */
  readonly sql: postgres.Sql;
  /** Makes a new client for later calls and ends the old one (its statements fail). */
  renew(): void;
  /** Clients made so far, the first one included. */
  readonly made: number;
}

export function renewableClient(make: () => postgres.Sql): RenewableClient {
  let current = make();
  let made = 1;
  const target = function () {} as unknown as postgres.Sql;
  const sql = new Proxy(target, {
    apply: (_target, _this, args: unknown[]) => (current as unknown as (...a: unknown[]) => unknown)(...args),
    get: (_target, property) => {
      const value = (current as unknown as Record<PropertyKey, unknown>)[property];
      return typeof value === "function" ? value.bind(current) : value;
    },
  });
  return {
    sql,
    renew() {
      const old = current;
      current = make();
      made += 1;
      void old.end({ timeout: 0 }).catch(() => {});
    },
    get made() {
      return made;
    },
  };
}
