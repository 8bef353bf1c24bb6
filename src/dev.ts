/**
 * The embedded default (`bun run dev`): with no instances configured, starts two real
 * local Chroma servers with their data under DATA_DIR, then chroma-lb on PORT (8000),
 * SQLite only. Ctrl-C stops everything it started.
 */
import { mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { ConfigError, loadConfig } from "./config";
import { startServer } from "./server";

const chromaReadyTimeoutMs = 30_000;

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
}

async function startChroma(name: string, dataDir: string): Promise<{ url: string; process: Subprocess }> {
  const path = resolve(dataDir, `chroma-${name}`);
  mkdirSync(path, { recursive: true });
  const port = await freePort();
  const script = `require('chromadb-js-bindings-linux-x64-gnu').cli(['chroma','run','--path',${JSON.stringify(path)},'--port','${port}','--host','127.0.0.1'])`;
  const child = Bun.spawn([process.execPath, "-e", script], {
    cwd: join(import.meta.dir, ".."),
    stdout: Bun.file(join(path, "chroma.log")),
    stderr: Bun.file(join(path, "chroma.err.log")),
    env: { ...process.env, RUST_BACKTRACE: "0" },
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + chromaReadyTimeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      const response = await fetch(`${url}/api/v2/heartbeat`, { signal: AbortSignal.timeout(500) });
      if (response.ok) return { url, process: child };
    } catch {
      // not listening yet
    }
    await Bun.sleep(100);
  }
  child.kill("SIGKILL");
  throw new Error(`Chroma server "${name}" did not start; see ${join(path, "chroma.err.log")}`);
}

const children: Subprocess[] = [];
const stopChildren = () => {
  for (const child of children) child.kill("SIGTERM");
};

try {
  const env = { ...process.env };
  const configured = env.CHROMA_INSTANCES || env.CHROMA_PRIMARY_URL;
  if (!configured) {
    const dataDir = env.DATA_DIR?.trim() || "./data";
    console.log(`Starting two local Chroma servers (data in ${resolve(dataDir)}) ...`);
    const primary = await startChroma("primary", dataDir);
    children.push(primary.process);
    const replica = await startChroma("replica", dataDir);
    children.push(replica.process);
    env.CHROMA_PRIMARY_URL = primary.url;
    env.CHROMA_REPLICA_URL = replica.url;
    console.log(`  primary ${primary.url}\n  replica ${replica.url}`);
  }
  const config = loadConfig(env);
  const server = await startServer(config);
  console.log(`\nchroma-lb is ready.
  API (point a chromadb client here): ${server.url}
  Swagger UI:                         ${server.url}/swagger
  Dashboard:                          ${server.url}/dashboard
  Status:                             ${server.url}/status
Press Ctrl-C to stop.`);
  const shutdown = async () => {
    await server.stop();
    stopChildren();
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown());
  process.on("SIGTERM", () => void shutdown());
} catch (error) {
  stopChildren();
  if (error instanceof ConfigError) {
    console.error(`chroma-lb: bad configuration: ${error.message}`);
    process.exit(1);
  }
  console.error(`chroma-lb: ${(error as Error).message}`);
  process.exit(1);
}
