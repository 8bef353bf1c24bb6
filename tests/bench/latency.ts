/**
 * Per-request latency, one request at a time: what chroma-lb adds to a `get`, a `query` and
 * a one-record `add`, next to a plain passthrough proxy (the least any proxy adds).
 *
 *   bun run bench:latency      (BENCH_LATENCY_N=400 requests per kind and path by default)
 *
 * Three paths to the same primary: direct; a 10-line Bun passthrough proxy; chroma-lb (a
 * child process, replica attached). Prints p50 and p99 in ms and what chroma-lb adds over
 * the passthrough at p50. `bun run bench` prints the same table after its throughput figures.
 */
import { startChromaServers, startLbProcess } from "../support";

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const dim = 384;

function passthroughProxy(target: string) {
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (request) => {
      const url = new URL(request.url);
      return fetch(target + url.pathname + url.search, { method: request.method, headers: request.headers, body: request.body });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, stop: () => server.stop(true) };
}

const vector = (seed: number) => Array.from({ length: dim }, (_, i) => Math.sin(seed * 31 + i));

async function timed(n: number, send: (i: number) => Promise<Response>, label = ""): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    const res = await send(i);
    const text = await res.text();
    if (res.status >= 300) throw new Error(`${label} answered ${res.status}: ${text.slice(0, 300)}`);
    samples.push(performance.now() - started);
  }
  samples.sort((a, b) => a - b);
  return { p50: samples[Math.floor(n * 0.5)]!, p99: samples[Math.min(n - 1, Math.floor(n * 0.99))]! };
}

export interface LatencyRow {
  kind: string;
  path: string;
  p50: number;
  p99: number;
}

/** Measures every kind on every path; servers are started and stopped here. */
export async function measureLatency(n = Number(process.env.BENCH_LATENCY_N ?? 400), lbEnv: Record<string, string> = {}): Promise<LatencyRow[]> {
  await using servers = await startChromaServers(2);
  const primary = servers[0]!;
  const replica = servers[1]!;
  // Reads stay on the primary, as they do direct and through the passthrough: the figures compare
  // proxies, not instances (a replica still indexing what it replayed answers slower).
  await using lb = await startLbProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, LOG_LEVEL: "warn", READ_REPLICA_RATIO: "0", ...lbEnv });
  const proxy = passthroughProxy(primary.url);
  try {
    const post = (base: string, path: string, body: unknown) =>
      fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const created = (await (await post(lb.url, `${T}/collections`, { name: "latency", configuration: {} })).json()) as { id: string };
    const seed = Array.from({ length: 1000 }, (_, i) => `seed-${i}`);
    for (let k = 0; k < seed.length; k += 250) {
      const ids = seed.slice(k, k + 250);
      await post(lb.url, `${T}/collections/${created.id}/add`, { ids, embeddings: ids.map((_, i) => vector(k + i)), documents: ids });
    }
    const mappings = (await (await fetch(`${lb.url}/collection/mappings`)).json()) as { mappings: Array<{ instances: Record<string, string> }> };
    const primaryUuid = mappings.mappings[0]!.instances.primary!;
    const paths = [
      { path: "direct", base: primary.url, id: primaryUuid },
      { path: "passthrough", base: proxy.url, id: primaryUuid },
      { path: "chroma-lb", base: lb.url, id: created.id },
    ];
    const rows: LatencyRow[] = [];
    const kinds: Array<[string, (base: string, id: string, i: number, path: string) => Promise<Response>]> = [
      ["get 10 by id", (base, id, i) => post(base, `${T}/collections/${id}/get`, { ids: seed.slice(i % 990, (i % 990) + 10), include: ["documents", "metadatas"] })],
      ["query n=10", (base, id, i) => post(base, `${T}/collections/${id}/query`, { query_embeddings: [vector(i)], n_results: 10, include: ["documents", "distances"] })],
      ["add 1 record", (base, id, i, path) => post(base, `${T}/collections/${id}/add`, { ids: [`${path}-${i}`], embeddings: [vector(5000 + i)], documents: ["one"] })],
    ];
    for (const [kind, send] of kinds) {
      // A short warm-up so connection set-up is not measured.
      for (const p of paths) await timed(20, (i) => send(p.base, p.id, 100_000 + i, `warm-${p.path}`), `${kind} (${p.path}, warm-up)`);
      // The paths take turns, one request each, so that what else the machine does weighs on
      // all three alike (on a shared machine, figures taken one path after the other drift).
      const samples = new Map(paths.map((p) => [p.path, [] as number[]]));
      for (let i = 0; i < n; i++) {
        for (const p of paths) {
          const { p50 } = await timed(1, () => send(p.base, p.id, i, p.path), `${kind} (${p.path})`);
          samples.get(p.path)!.push(p50);
        }
      }
      for (const p of paths) {
        const sorted = samples.get(p.path)!.sort((x, y) => x - y);
        rows.push({ kind, path: p.path, p50: sorted[Math.floor(n * 0.5)]!, p99: sorted[Math.min(n - 1, Math.floor(n * 0.99))]! });
      }
    }
    return rows;
  } finally {
    proxy.stop();
  }
}

export function latencyTable(rows: LatencyRow[]): string {
  const lines = ["| request | direct p50 / p99 | passthrough p50 / p99 | chroma-lb p50 / p99 | chroma-lb adds over passthrough (p50) |", "|---|---|---|---|---|"];
  const f = (x: number) => x.toFixed(2);
  for (const kind of [...new Set(rows.map((r) => r.kind))]) {
    const at = (path: string) => rows.find((r) => r.kind === kind && r.path === path)!;
    const [d, p, l] = [at("direct"), at("passthrough"), at("chroma-lb")];
    lines.push(`| ${kind} | ${f(d.p50)} / ${f(d.p99)} ms | ${f(p.p50)} / ${f(p.p99)} ms | ${f(l.p50)} / ${f(l.p99)} ms | ${f(l.p50 - p.p50)} ms |`);
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const rows = await measureLatency();
  console.log(latencyTable(rows));
}
