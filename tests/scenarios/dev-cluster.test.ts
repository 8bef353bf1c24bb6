/**
 * `bun run dev:cluster` starts a private Postgres, two Chroma servers and two chroma-lb
 * nodes, prints their addresses; both nodes answer, a write through one is read through the
 * other, and Ctrl-C stops every process it started and removes its folder.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { existsSync } from "node:fs";
import path from "node:path";
import { freePort, killAll, waitFor } from "../support";
import { json } from "../support/http";

afterAll(() => killAll());

const projectRoot = path.resolve(import.meta.dir, "../..");

/** Pids of processes whose command line mentions `needle`. */
async function processesMentioning(needle: string): Promise<number[]> {
  const out = await new Response(Bun.spawn(["ps", "-eo", "pid=,args="]).stdout).text();
  return out
    .split("\n")
    .filter((line) => line.includes(needle) && !line.includes("ps -eo"))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
}

test("bun run dev:cluster starts two nodes on one Postgres; a write through one is read through the other; Ctrl-C stops everything", async () => {
  const port = await freePort();
  const env: Record<string, string> = { ...(process.env as Record<string, string>), PORT: String(port), LOG_LEVEL: "warn" };
  for (const name of ["CHROMA_PRIMARY_URL", "CHROMA_REPLICA_URL", "CHROMA_INSTANCES", "DATABASE_URL", "LOG_STORE", "NODE_ID", "DATA_DIR"]) delete env[name];
  const dev = Bun.spawn([process.execPath, "run", "src/dev-cluster.ts"], { cwd: projectRoot, env, stdout: "pipe", stderr: "pipe" });
  let printed = "";
  const reader = (async () => {
    for await (const chunk of dev.stdout) printed += new TextDecoder().decode(chunk);
  })();
  let folder = "";
  try {
    await waitFor(() => printed.includes("Press Ctrl-C"), { timeoutMs: 60_000, message: "dev:cluster prints that it is ready" });
    folder = printed.match(/everything in (\S+)\)/)![1]!;
    const nodes = [...printed.matchAll(/^ {2}(node-\d) +(http:\/\/127\.0\.0\.1:(\d+)) +\(pid (\d+)/gm)].map((m) => ({ id: m[1]!, url: m[2]!, port: Number(m[3]), pid: Number(m[4]) }));
    expect(nodes.map((n) => n.id)).toEqual(["node-1", "node-2"]);
    expect(nodes[0]!.port).toBe(port);
    expect(printed).toMatch(/Postgres postgres:\/\/postgres@127\.0\.0\.1:\d+\/chroma_lb/);

    for (const node of nodes) {
      expect((await json(`${node.url}/health`)).healthy_instances).toBe("2/2");
      const status = await waitFor(async () => {
        const s = await json<{ nodes: Array<{ id: string; address: string }> }>(`${node.url}/status`);
        return s.nodes.length === 2 ? s : null;
      });
      expect(status.nodes.map((n) => `${n.id} ${n.address}`)).toEqual(nodes.map((n) => `${n.id} ${n.url}`));
    }

    const [first, second] = nodes;
    const viaFirst = new ChromaClient({ host: "127.0.0.1", port: first!.port });
    const docs = await viaFirst.createCollection({ name: "cluster_docs", embeddingFunction: null });
    await docs.add({ ids: ["a", "b"], embeddings: [[1, 2], [3, 4]], documents: ["hello", "world"] });
    const viaSecond = new ChromaClient({ host: "127.0.0.1", port: second!.port });
    const read = await waitFor(async () => {
      const collection = await viaSecond.getCollection({ name: "cluster_docs" });
      const got = await collection.get({ ids: ["a", "b"] });
      return got.ids.length === 2 ? got : null;
    }, { message: "the write through node-1 is read through node-2" });
    expect(read.documents).toEqual(["hello", "world"]);

    dev.kill("SIGINT");
    expect(await dev.exited).toBe(0);
    expect(await processesMentioning(folder)).toEqual([]);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    expect(nodes.filter((n) => alive(n.pid)).map((n) => n.id)).toEqual([]);
    expect(existsSync(folder)).toBe(false);
  } finally {
    if (dev.exitCode === null) dev.kill("SIGKILL");
    if (folder) for (const pid of await processesMentioning(folder)) process.kill(pid, "SIGKILL");
    await reader.catch(() => {});
  }
}, 120_000);
