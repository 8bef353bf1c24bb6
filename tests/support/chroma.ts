/**
 * Real Chroma servers for tests, one child process each.
 *
 * The server comes from the `chromadb-js-bindings-linux-x64-gnu` package (pinned to 1.0.5,
 * see /work/shared/chroma-notes.md) and is configured with a YAML file. Each server gets a
 * temp dir holding its config, its log and, unless `dataDir` is given, its data.
 */
import fs from "node:fs";
import path from "node:path";
import { freePort, portIsFree } from "./ports";
import {
  isRunning,
  killProcess,
  logSince,
  logSize,
  makeTempDir,
  removeTempDir,
  spawnTracked,
  stopProcess,
  type TrackedProcess,
  waitUntilAnswering,
} from "./processes";

/** Options for {@link startChroma}. */
export interface StartChromaOptions {
  /** Writes `allow_reset: true`, so `POST /api/v2/reset` works. Default false. */
  allowReset?: boolean;
  /** Where Chroma persists its data; kept on dispose. Default: `data/` in a temp dir that is removed. */
  dataDir?: string;
  /** Port to listen on. Default: a free port (a new one is tried when another process takes it first). */
  port?: number;
  /** How long to wait for the first heartbeat. Default 20 000 ms. */
  readyTimeoutMs?: number;
}

/** A running (or stopped) Chroma server started by the harness. */
export interface ChromaServer {
  /** `http://127.0.0.1:PORT`, without a trailing slash. */
  readonly url: string;
  readonly port: number;
  /** Chroma's `persist_path`. */
  readonly dataDir: string;
  /** Pid of the current process; changes on {@link restart}. */
  readonly pid: number;
  /** Whether the current process has not exited. */
  readonly alive: boolean;
  /** File that receives the server's stdout and stderr, across restarts. */
  readonly logPath: string;
  /** The whole log so far. */
  logs(): string;
  /** SIGTERM, then SIGKILL after 2 s; resolves once the process has exited. */
  stop(): Promise<void>;
  /** Sends `signal` (default SIGKILL) and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and data dir (stopping it first if needed); resolves when ready. */
  restart(): Promise<void>;
  /** Stops the server and removes its temp dir; a caller's `dataDir` is kept. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** A group of servers that `await using` stops together. */
export type ChromaServers = ChromaServer[] & AsyncDisposable;

const projectRoot = path.resolve(import.meta.dir, "../..");
const readyTimeoutMsDefault = 20_000;
const stopGraceMs = 2_000;
/** Attempts with a fresh port when another process took the chosen one first. */
const portAttemptsMax = 3;
/** What Chroma 1.0 prints when it cannot bind its port. */
const portTakenPattern = /is not available|address already in use/i;

/** Starts one Chroma server and resolves when its heartbeat answers 200. */
export async function startChroma(opts: StartChromaOptions = {}): Promise<ChromaServer> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? readyTimeoutMsDefault;
  const tempDir = makeTempDir();
  const dataDir = opts.dataDir ?? path.join(tempDir, "data");
  const configPath = path.join(tempDir, "chroma.yaml");
  const logPath = path.join(tempDir, "chroma.log");

  let port = opts.port ?? (await freePort());
  let proc: TrackedProcess;

  /** Starts the process once on `port`; tells whether a failure was a port taken by another process. */
  const launch = async (): Promise<{ ok: true } | { ok: false; portTaken: boolean; error: Error }> => {
    writeConfig(configPath, { port, dataDir, allowReset: opts.allowReset ?? false });
    if (!portIsFree(port)) {
      return { ok: false, portTaken: true, error: new Error(`chroma: port ${port} is already in use`) };
    }
    const logOffset = logSize(logPath);
    proc = spawnTracked([process.execPath, "-e", cliScript(configPath)], {
      label: `chroma :${port}`,
      cwd: projectRoot,
      // Without a backtrace a panic fits in the log tail that errors quote, and the
      // process dies in milliseconds instead of a second.
      env: { ...process.env, RUST_BACKTRACE: "0" },
      logPath,
    });
    try {
      await waitUntilAnswering(proc, {
        probeUrl: `http://127.0.0.1:${port}/api/v2/heartbeat`,
        accept: (status) => status === 200,
        label: `chroma :${port}`,
        logPath,
        timeoutMs: readyTimeoutMs,
      });
      return { ok: true };
    } catch (error) {
      const portTaken = portTakenPattern.test(logSince(logPath, logOffset));
      return { ok: false, portTaken, error: error as Error };
    }
  };

  try {
    for (let attempt = 1; ; attempt++) {
      const result = await launch();
      if (result.ok) break;
      if (!result.portTaken || opts.port !== undefined || attempt >= portAttemptsMax) {
        throw result.error;
      }
      port = await freePort();
    }
  } catch (error) {
    removeTempDir(tempDir);
    throw error;
  }

  const server: ChromaServer = {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    dataDir,
    get pid() {
      return proc.pid;
    },
    get alive() {
      return isRunning(proc);
    },
    logPath,
    logs: () => fs.readFileSync(logPath, "utf8"),
    stop: () => stopProcess(proc, stopGraceMs),
    kill: (signal = "SIGKILL") => killProcess(proc, signal),
    async restart() {
      await stopProcess(proc, stopGraceMs);
      // The old socket may linger for a moment after a kill; Chroma then exits at once
      // with "not available", so keep trying the same port until the ready timeout.
      const deadline = performance.now() + readyTimeoutMs;
      while (true) {
        const result = await launch();
        if (result.ok) return;
        if (!result.portTaken || performance.now() > deadline) throw result.error;
        await Bun.sleep(100);
      }
    },
    async [Symbol.asyncDispose]() {
      await stopProcess(proc, stopGraceMs);
      removeTempDir(tempDir);
    },
  };
  return server;
}

/**
 * Starts `n` Chroma servers side by side. When one fails to start, the others are
 * stopped before the error is thrown.
 */
export async function startChromaServers(
  n: number,
  opts: Omit<StartChromaOptions, "port" | "dataDir"> = {},
): Promise<ChromaServers> {
  const results = await Promise.allSettled(
    Array.from({ length: n }, () => startChroma(opts)),
  );
  const started = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failure = results.find((r) => r.status === "rejected");
  if (failure) {
    await Promise.all(started.map((server) => server[Symbol.asyncDispose]()));
    throw failure.reason;
  }
  const servers = started as ChromaServers;
  servers[Symbol.asyncDispose] = async () => {
    await Promise.all(started.map((server) => server[Symbol.asyncDispose]()));
  };
  return servers;
}

function cliScript(configPath: string): string {
  const args = JSON.stringify(["chroma", "run", configPath]);
  return `require('chromadb-js-bindings-linux-x64-gnu').cli(${args})`;
}

function writeConfig(
  configPath: string,
  config: { port: number; dataDir: string; allowReset: boolean },
): void {
  // JSON strings are valid YAML scalars, which keeps odd characters in paths safe.
  const lines = [
    `port: ${config.port}`,
    "listen_address: 127.0.0.1",
    `persist_path: ${JSON.stringify(config.dataDir)}`,
  ];
  if (config.allowReset) lines.push("allow_reset: true");
  fs.writeFileSync(configPath, `${lines.join("\n")}\n`);
}
