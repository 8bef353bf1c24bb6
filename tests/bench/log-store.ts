/**
 * The log stores alone, without Chroma: the latency of one append (sequential, one entry per
 * group) and of the bookkeeping of a one-record write on its write target (catching-up
 * checks and completeOnTarget), and the throughput of concurrent appends (group commit).
 *
 *   bun run tests/bench/log-store.ts     (LOG_STORE=sqlite,postgres; BENCH_N=500)
 */
import { nextStep, blockerOf } from "../../src/replay/order";
import type { NewEntry } from "../../src/wal/log";
import { postgresFixture, sqliteFixture } from "../support/log-stores";

const n = Number(process.env.BENCH_N ?? 500);
const stores = (process.env.LOG_STORE ?? "sqlite,postgres").split(",");
const body = new TextEncoder().encode(JSON.stringify({ ids: ["a"], embeddings: [Array.from({ length: 384 }, (_, i) => Math.sin(i))], documents: ["one"] }));
const entry: NewEntry = { partition: "c", kind: "records", op: "add", tenant: "t", database: "d", collectionId: "c", name: null, body };
const pct = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;

for (const store of stores) {
  const fixture = store === "postgres" ? await postgresFixture() : sqliteFixture();
  try {
    const { wal, close } = await fixture.open(["primary", "replica"]);
    const append: number[] = [];
    const write: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const e = await wal.append(entry);
      const t1 = performance.now();
      // What the write path does around the instance's answer (see replay/replayer.ts applyAsWriteTarget).
      await blockerOf(wal, "primary", e);
      await nextStep(wal, "primary", "c", { limit: 50, uptoSeq: e.seq - 1 });
      await wal.owesBefore("primary", "c", e.seq);
      await wal.completeOnTarget("primary", "c", [e.seq]);
      const t2 = performance.now();
      await wal.markApplied("replica", [e]);
      append.push(t1 - t0);
      write.push(t2 - t0);
    }
    const started = performance.now();
    const concurrent = 4000;
    await Promise.all(Array.from({ length: concurrent }, () => wal.append(entry)));
    const perSecond = (concurrent / (performance.now() - started)) * 1000;
    console.log(
      `${store}: one append p50 ${pct(append, 0.5).toFixed(2)} / p99 ${pct(append, 0.99).toFixed(2)} ms; ` +
        `append + write-target bookkeeping p50 ${pct(write, 0.5).toFixed(2)} / p99 ${pct(write, 0.99).toFixed(2)} ms; ` +
        `${concurrent} concurrent appends: ${Math.round(perSecond)} entries/s (${wal.commitStats.transactions} transactions)`,
    );
    await close();
  } finally {
    await fixture.destroy();
  }
}
