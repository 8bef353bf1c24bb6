/**
 * The short chaos run: the runner of `bun run chaos` (tests/chaos) for about 20 s, with each
 * kind of fault exactly once (SIGKILL and restart of the primary, of the replica and of
 * chroma-lb; lost disk of each instance; simulated outage of each; Postgres cut), 4 clients
 * churning on the same ids of shared collections, one more creating and dropping its own
 * collections while it writes to them, and the exact end-of-run checks. The seed is random
 * and printed; `SEED=<n> bun test tests/scenarios/chaos.test.ts` replays its choices.
 */
import { afterAll, expect, test } from "bun:test";
import { faultKinds, runChaos, summarize } from "../chaos/chaos";
import { seedFromEnv } from "../chaos/rng";
import { killAll } from "../support";

afterAll(() => killAll());

test("under every kind of fault, no acknowledged write is lost, nothing deleted comes back, and both instances end identical", async () => {
  const seed = seedFromEnv();
  console.log(`[chaos test] seed ${seed} (replay with SEED=${seed} bun test tests/scenarios/chaos.test.ts)`);
  const lines: string[] = [];
  const result = await runChaos({
    seed,
    durationMs: 20_000,
    faultKinds,
    catchUpWaitMs: 1_000,
    convergeTimeoutMs: 30_000,
    log: (line) => lines.push(line),
  });
  const report = summarize(result);
  if (result.violations.length) console.log([...lines, ...report].map((l) => `[chaos test] ${l}`).join("\n"));
  else console.log(report.map((l) => `[chaos test] ${l}`).join("\n"));
  expect({ seed, faults: [...new Set(result.faults.map((f) => f.kind))].sort(), violations: result.violations }).toEqual({
    seed,
    faults: [...faultKinds].sort(),
    violations: [],
  });
  expect(result.ops.ok).toBeGreaterThan(100);
  expect({ records: result.check!.recordsChecked, churnCollections: result.check!.churnCollectionsChecked }).toEqual({ records: 96, churnCollections: 2 });
}, 90_000);
