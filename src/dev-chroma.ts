/**
 * Local Chroma servers for `bun run dev` and `bun run dev:cluster`: each keeps its data, its
 * logs and its port in a folder of its own, and is started from the npm bindings.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

const chromaReadyTimeoutMs = 30_000;
const projectRoot = join(import.meta.dir, "..");

/** A free port, or `wanted` when it is free. */
export function freePort(wanted = 0): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", (error: NodeJS.ErrnoException) => (wanted && error.code === "EADDRINUSE" ? resolvePort(freePort(0)) : reject(error)));
    server.listen(wanted, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** Where a local Chroma server keeps its data, log and port. */
export function chromaDir(dataDir: string, name: string): string {
  return resolve(dataDir, `chroma-${name}`);
}

/** The port the server had last time (when still free), else a free one; remembered for next time. */
export async function chromaPort(dataDir: string, name: string): Promise<number> {
  const file = join(chromaDir(dataDir, name), "port");
  const saved = existsSync(file) ? Number(readFileSync(file, "utf8").trim()) : 0;
  const port = await freePort(Number.isInteger(saved) && saved > 0 && saved < 65536 ? saved : 0);
  writeFileSync(file, `${port}\n`);
  return port;
}

export function spawnChroma(path: string, port: number, output: "files" | "inherit"): Subprocess {
  const script = `require('chromadb-js-bindings-linux-x64-gnu').cli(['chroma','run','--path',${JSON.stringify(path)},'--port','${port}','--host','127.0.0.1'])`;
  return Bun.spawn([process.execPath, "-e", script], {
    cwd: projectRoot,
    stdout: output === "files" ? Bun.file(join(path, "chroma.log")) : "inherit",
    stderr: output === "files" ? Bun.file(join(path, "chroma.err.log")) : "inherit",
    env: { ...process.env, RUST_BACKTRACE: "0" },
  });
}

export async function startChroma(name: string, dataDir: string): Promise<{ url: string; process: Subprocess }> {
  const path = chromaDir(dataDir, name);
  mkdirSync(path, { recursive: true });
  const port = await chromaPort(dataDir, name);
  const child = spawnChroma(path, port, "files");
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

