/**
 * An error the Postgres driver throws from its own timers (a connection cut mid-write) costs
 * the mirror its connection, not the process; any other uncaught error is not excused.
 */
import { expect, test } from "bun:test";
import { isMirrorDriverError } from "../../src/collections/mirror";

const withStack = (stack: string) => Object.assign(new TypeError("null is not an object (evaluating 'socket.write')"), { stack });

test("errors thrown from the postgres driver's files are the mirror's", () => {
  expect(isMirrorDriverError(withStack("TypeError: x\n    at nextWrite (/app/node_modules/postgres/src/connection.js:255:15)"))).toBe(true);
});

test("any other error is not", () => {
  expect(isMirrorDriverError(withStack("TypeError: x\n    at apply (/app/src/replay/apply.ts:10:3)"))).toBe(false);
  expect(isMirrorDriverError(withStack("Error: x\n    at f (/app/node_modules/postgres-array/index.js:1:1)"))).toBe(false);
  expect(isMirrorDriverError("a string")).toBe(false);
});
