/**
 * The embedded default (`bun run dev`): with no instances configured it starts two real
 * Chroma servers and chroma-lb, answers a chromadb client, and Ctrl-C stops everything.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import path from "node:path";
import { freePort, killAll, makeTempDir, removeTempDir, waitFor } from "../support";
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

test("bun run dev starts two Chroma servers and chroma-lb, serves a client, and Ctrl-C stops all of them", async () => {
  const dataDir = makeTempDir();
  const port = await freePort();
  const env: Record<string, string> = { ...(process.env as Record<string, string>), PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: "warn" };
  delete env.CHROMA_PRIMARY_URL;
  delete env.CHROMA_REPLICA_URL;
  delete env.CHROMA_INSTANCES;
  const dev = Bun.spawn([process.execPath, "run", "src/dev.ts"], { cwd: projectRoot, env, stdout: "pipe", stderr: "pipe" });
  let printed = "";
  const reader = (async () => {
    for await (const chunk of dev.stdout) printed += new TextDecoder().decode(chunk);
  })();
  try {
    await waitFor(() => printed.includes("chroma-lb is ready"), { timeoutMs: 30_000, message: "dev prints that it is ready" });
    expect(printed).toContain(`http://127.0.0.1:${port}/swagger`);
    const health = await json(`http://127.0.0.1:${port}/health`);
    expect(health.healthy_instances).toBe("2/2");
    expect((await fetch(`http://127.0.0.1:${port}/swagger`)).status).toBe(200);

    const client = new ChromaClient({ host: "127.0.0.1", port });
    expect(typeof (await client.heartbeat())).toBe("number");
    const docs = await client.createCollection({ name: "dev_docs", embeddingFunction: null });
    await docs.add({ ids: ["a"], embeddings: [[1, 2]], documents: ["hello"] });
    expect(await docs.count()).toBe(1);
    expect((await processesMentioning(dataDir)).length).toBe(2);

    dev.kill("SIGINT");
    expect(await dev.exited).toBe(0);
    await waitFor(async () => (await processesMentioning(dataDir)).length === 0, { message: "both Chroma servers stop with dev" });
  } finally {
    if (dev.exitCode === null) dev.kill("SIGKILL");
    for (const pid of await processesMentioning(dataDir)) process.kill(pid, "SIGKILL");
    await reader.catch(() => {});
    removeTempDir(dataDir);
  }
});
