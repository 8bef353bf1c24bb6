/**
 * Memory of large request bodies: chroma-lb's peak RSS while `n` clients each send one
 * large add at the same time.
 *
 *   bun run tests/bench/body-memory.ts          (BENCH_BODY_MB=63 BENCH_CONCURRENCY=1,4 by default;
 *                                                BENCH_ENV='{"MAX_BODY_MB":"64"}' adds chroma-lb settings)
 *
 * Each run starts a fresh chroma-lb child process (so its peak RSS, VmHWM, covers that run
 * only) in front of two real Chroma servers shared by every run, sends the bodies together,
 * and prints the statuses they got, chroma-lb's RSS before and at its peak, and the time
 * the slowest answer took. A body is an add of 1000 records whose documents fill it.
 */
import fs from "node:fs";
import { startChromaServers, startLbProcess } from "../support";

const bodyMb = Number(process.env.BENCH_BODY_MB ?? 63);
const concurrencies = (process.env.BENCH_CONCURRENCY ?? "1,4").split(",").map(Number);
const extraEnv = JSON.parse(process.env.BENCH_ENV ?? "{}") as Record<string, string>;
const T = "/api/v2/tenants/default_tenant/databases/default_database";
const records = 1000;

function status(pid: number, field: "VmRSS" | "VmHWM"): number {
  const text = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

/** One add body of about `bodyMb` MB (decimal megabytes, as `ls` shows them), tagged so ids differ. */
function makeBody(tag: string): string {
  const docBytes = Math.floor((bodyMb * 1_000_000) / records) - 40;
  const filler = "x".repeat(docBytes);
  const ids = Array.from({ length: records }, (_, i) => `${tag}-${i}`);
  return JSON.stringify({
    ids,
    embeddings: ids.map((_, i) => [i, 1, 2, 3]),
    documents: ids.map(() => filler),
  });
}

await using servers = await startChromaServers(2);
const [primary, replica] = servers;
for (const n of concurrencies) {
  await using lb = await startLbProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, ...extraEnv });
  const created = await fetch(`${lb.url}${T}/collections`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: `bodies_${n}_${Date.now()}`, configuration: {} }),
  });
  const { id } = (await created.json()) as { id: string };
  const bodies = Array.from({ length: n }, (_, i) => makeBody(`c${n}-${i}`));
  const rssBeforeMb = status(lb.pid, "VmRSS");
  let sampledMaxMb = rssBeforeMb;
  const sampler = setInterval(() => (sampledMaxMb = Math.max(sampledMaxMb, status(lb.pid, "VmRSS"))), 20);
  const started = performance.now();
  const answers = await Promise.all(
    bodies.map(async (body) => {
      const res = await fetch(`${lb.url}${T}/collections/${id}/add`, { method: "POST", headers: { "content-type": "application/json" }, body });
      const text = await res.text();
      return { status: res.status, retryAfter: res.headers.get("retry-after"), text: text.slice(0, 160) };
    }),
  );
  const ms = Math.round(performance.now() - started);
  clearInterval(sampler);
  const peakMb = status(lb.pid, "VmHWM");
  const statuses: Record<string, number> = {};
  for (const a of answers) statuses[a.status] = (statuses[a.status] ?? 0) + 1;
  console.log(
    JSON.stringify({
      body_mb: bodyMb,
      body_bytes: bodies[0]!.length,
      concurrent: n,
      env: extraEnv,
      statuses,
      rss_before_mb: rssBeforeMb,
      rss_peak_mb: Math.max(peakMb, sampledMaxMb),
      slowest_answer_ms: ms,
      sample_answers: [...new Map(answers.map((a) => [a.status, a])).values()],
    }),
  );
}
