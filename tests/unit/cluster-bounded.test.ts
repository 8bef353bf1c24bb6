/**
 * bounded(): a statement given up at its bound is cancelled, and a cancel request that fails
 * (Postgres gone: postgres.js's cancel() answers a promise that rejects) is no unhandled
 * rejection. Seen once in a full run: an in-process node's statement timed out while its
 * Postgres was SIGKILLed, and the cancel's rejection failed the run.
 */
import { expect, test } from "bun:test";
import { StatementTimeout, bounded } from "../../src/cluster/bounded";

test("a statement past its bound rejects with StatementTimeout, and a failing cancel request is handled", async () => {
  let cancelled = 0;
  const never = Object.assign(new Promise<number>(() => {}), {
    cancel: () => {
      cancelled += 1;
      return Promise.reject(new Error("write CONNECTION_CLOSED 127.0.0.1:5432"));
    },
  });
  await expect(bounded("test statement", never, 20)).rejects.toBeInstanceOf(StatementTimeout);
  expect(cancelled).toBe(1);
  // Let the cancel's rejection settle inside this test: an unhandled one would fail it.
  await Bun.sleep(20);
});

test("an answer within the bound is returned and nothing is cancelled", async () => {
  let cancelled = 0;
  const quick = Object.assign(Promise.resolve(7), { cancel: () => (cancelled += 1) });
  expect(await bounded("test statement", quick, 1_000)).toBe(7);
  expect(cancelled).toBe(0);
});
