/**
 * The embedded default (`bun run dev`): with no instances configured it starts two real
 * Chroma servers and chroma-lb, answers a chromadb client, and Ctrl-C stops everything.
 * It says how to choose the port, prints for each Chroma server the command that starts it
 * again on the same port (which brings a killed one back), and warns when a single
 * instance leaves no failover.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import path from "node:path";
import { freePort, killAll, makeTempDir, removeTempDir, startChroma, waitFor } from "../support";
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
    expect(printed).toContain("Another port: PORT=8001 bun run dev");
    expect(printed).not.toContain("WARNING");
    const health = await json(`http://127.0.0.1:${port}/health`);
    expect(health.healthy_instances).toBe("2/2");
    expect((await fetch(`http://127.0.0.1:${port}/swagger`)).status).toBe(200);

    const client = new ChromaClient({ host: "127.0.0.1", port });
    expect(typeof (await client.heartbeat())).toBe("number");
    const docs = await client.createCollection({ name: "dev_docs", embeddingFunction: null });
    await docs.add({ ids: ["a"], embeddings: [[1, 2]], documents: ["hello"] });
    expect(await docs.count()).toBe(1);
    expect((await processesMentioning(dataDir)).length).toBe(2);

    // The printed command brings a killed Chroma server back on its port.
    const restart = printed.match(/^ {2}replica +(http:\/\/127\.0\.0\.1:\d+) +after a kill, start it again on this port with: (.+)$/m);
    expect(restart?.[2]).toBe(`DATA_DIR=${JSON.stringify(dataDir)} bun run dev --chroma replica`);
    const replicaUrl = restart![1]!;
    const [replicaPid] = await processesMentioning(path.join(dataDir, "chroma-replica"));
    process.kill(replicaPid!, "SIGKILL");
    await waitFor(async () => (await json(`http://127.0.0.1:${port}/health`)).healthy_instances === "1/2", { message: "replica down after its SIGKILL" });
    const again = Bun.spawn(["sh", "-c", restart![2]!], { cwd: projectRoot, env, stdout: "ignore", stderr: "ignore" });
    try {
      await waitFor(async () => (await fetch(`${replicaUrl}/api/v2/heartbeat`)).status === 200, { timeoutMs: 30_000, message: "the replica answers on its old port" });
      await waitFor(async () => (await json(`http://127.0.0.1:${port}/health`)).healthy_instances === "2/2", { message: "chroma-lb sees the replica back" });
      expect(await docs.count()).toBe(1);
    } finally {
      for (const pid of await processesMentioning(path.join(dataDir, "chroma-replica"))) process.kill(pid, "SIGTERM");
      await again.exited;
    }

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

test("bun run dev with a single instance warns that there is no failover", async () => {
  await using chroma = await startChroma();
  const port = await freePort();
  const dataDir = makeTempDir();
  const env: Record<string, string> = { ...(process.env as Record<string, string>), PORT: String(port), DATA_DIR: dataDir, LOG_LEVEL: "warn", CHROMA_PRIMARY_URL: chroma.url };
  delete env.CHROMA_REPLICA_URL;
  delete env.CHROMA_INSTANCES;
  const dev = Bun.spawn([process.execPath, "run", "src/dev.ts"], { cwd: projectRoot, env, stdout: "pipe", stderr: "pipe" });
  let printed = "";
  let logged = "";
  const readers = [
    (async () => {
      for await (const chunk of dev.stdout) printed += new TextDecoder().decode(chunk);
    })(),
    (async () => {
      for await (const chunk of dev.stderr) logged += new TextDecoder().decode(chunk);
    })(),
  ];
  try {
    await waitFor(() => printed.includes("Press Ctrl-C"), { timeoutMs: 30_000, message: "dev prints that it is ready" });
    expect(printed).toContain("WARNING: only one Chroma instance (primary): there is no failover.");
    // The same warning reaches the log, for `bun start` in production.
    expect(logged).toContain("only one Chroma instance is configured: there is no failover");
    expect((await json(`http://127.0.0.1:${port}/health`)).healthy_instances).toBe("1/1");
    dev.kill("SIGINT");
    expect(await dev.exited).toBe(0);
  } finally {
    if (dev.exitCode === null) dev.kill("SIGKILL");
    await Promise.all(readers).catch(() => {});
    removeTempDir(dataDir);
  }
});
