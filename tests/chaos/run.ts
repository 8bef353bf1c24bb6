/**
 * `bun run chaos`: one seeded, time-bounded chaos run against real Chroma servers and
 * chroma-lb (see chaos.ts). Prints the seed first, each fault with its time, the counts
 * checked and the time to converge; exits 1 on any violation, so a failure replays with
 * `SEED=<seed> bun run chaos`.
 *
 *   SEED            the seed (default: random, printed)
 *   CHAOS_SECONDS   how long clients write while faults are injected (default 120)
 *   CHAOS_CLIENTS   concurrent clients (default 4)
 *   CHAOS_KEEP_DIR  keep the logs, the history and the faults there even when the run passes
 *   CHAOS_POSTGRES_URL  where the mirror database is created (default postgres://postgres@127.0.0.1:5432/test)
 *   LOG_STORE       postgres: chroma-lb keeps its log in a Postgres server of the run's own, and
 *                   the Postgres lane also SIGKILLs and restarts it (default sqlite)
 *   NODES           chroma-lb nodes sharing that Postgres (needs LOG_STORE=postgres; default 1):
 *                   each operation goes to a node drawn at random, and a node lane SIGKILLs
 *                   one node and restarts it, or cuts one from Postgres and restores it
 */
import { runChaos, summarize } from "./chaos";
import { seedFromEnv } from "./rng";

function positiveNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    console.error(`${name} must be a positive number, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
}

const logStore = process.env.LOG_STORE === "postgres" ? "postgres" : "sqlite";
const nodes = Math.round(positiveNumber("NODES", 1));
if (nodes > 1 && logStore !== "postgres") {
  console.error("NODES above 1 needs LOG_STORE=postgres: the nodes share its log");
  process.exit(2);
}
const seed = seedFromEnv();
console.log(`[chaos] seed ${seed}`);
const result = await runChaos({
  seed,
  durationMs: Math.round(positiveNumber("CHAOS_SECONDS", 120) * 1000),
  clients: Math.round(positiveNumber("CHAOS_CLIENTS", 4)),
  keepDir: process.env.CHAOS_KEEP_DIR || undefined,
  logStore,
  nodes,
});
for (const line of summarize(result)) console.log(`[chaos] ${line}`);
process.exit(result.violations.length ? 1 : 0);
