/**
 * chroma-lb for tests: as a child process (the real binary path, signals, restarts) or
 * in this process (faster, and the test can reach the server's config).
 */
import { dropLogStore, logStoreEnv } from "./log-store-env";
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../../src/config";
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

/** Options for {@link startLbProcess}. Values in `env` win over these. */
export interface StartLbProcessOptions {
  /** Port when `env.PORT` is not set. Default: a free port (a new one is tried when another process takes it first). */
  port?: number;
  /** Data dir when `env.DATA_DIR` is not set; kept on dispose. Default: `data/` in a temp dir that is removed. */
  dataDir?: string;
  /** How long to wait for `/health` to answer. Default 20 000 ms. */
  readyTimeoutMs?: number;
}

/** chroma-lb running as a child process. */
export interface LbProcess {
  /** `http://127.0.0.1:PORT`, without a trailing slash. */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Pid of the current process; changes on {@link restart}. */
  readonly pid: number;
  /** Whether the current process has not exited. */
  readonly alive: boolean;
  /** File that receives stdout and stderr, across restarts. */
  readonly logPath: string;
  /** The whole log so far. */
  logs(): string;
  /** Sends `signal` (default SIGKILL) and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
  stop(): Promise<void>;
  /** Starts again with the same env, port and DATA_DIR (stopping first if needed); resolves when ready. */
  restart(): Promise<void>;
  /** Stops the process and removes its temp dir; a caller's DATA_DIR is kept. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** chroma-lb running inside the test process. */
export interface LbInProcess {
  /** As answered by `startServer`. */
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** The parsed config the server runs with. */
  readonly config: Config;
  /** The server's services, for a test that must hold one of them still (see its comment there). */
  readonly services: import("../../src/services").Services;
  /** Stops the server; calling it again does nothing more. */
  stop(): Promise<void>;
  /** Stops the server and removes its temp dir; a caller's DATA_DIR is kept. */
  [Symbol.asyncDispose](): Promise<void>;
}

const projectRoot = path.resolve(import.meta.dir, "../..");
const readyTimeoutMsDefault = 20_000;
/** chroma-lb flushes and closes its stores on SIGTERM; give it longer than a Chroma server. */
const stopGraceMs = 5_000;
const portAttemptsMax = 3;
/** What Bun prints when `Bun.serve` cannot bind its port. */
const portTakenPattern = /EADDRINUSE|address already in use|port \d+ in use/i;
/** Quiet by default; `LOG_LEVEL=debug bun test` shows more while debugging a test. */
const logLevelDefault = () => process.env.LOG_LEVEL ?? "warn";

/**
 * Starts `bun run src/index.ts` in the project root with `{...process.env, ...env}` and
 * resolves once `GET /health` answers with any HTTP status (200 or 503).
 */
export async function startLbProcess(
  env: Record<string, string>,
  opts: StartLbProcessOptions = {},
): Promise<LbProcess> {
  const readyTimeoutMs = opts.readyTimeoutMs ?? readyTimeoutMsDefault;
  const tempDir = makeTempDir();
  const logPath = path.join(tempDir, "chroma-lb.log");
  const dataDir = env.DATA_DIR ?? opts.dataDir ?? path.join(tempDir, "data");
  const portFixed = env.PORT !== undefined || opts.port !== undefined;
  let port = env.PORT !== undefined ? Number(env.PORT) : (opts.port ?? (await freePort()));
  let proc: TrackedProcess;
  const storeEnv = await logStoreEnv(dataDir, env);

  const childEnv = (): Record<string, string | undefined> => ({
    ...process.env,
    LOG_LEVEL: logLevelDefault(),
    ...storeEnv,
    ...env,
    // A PORT from the caller is passed verbatim, so a test can start chroma-lb with an invalid one.
    PORT: env.PORT ?? String(port),
    DATA_DIR: dataDir,
  });

  /** Starts the process once on `port`; tells whether a failure was a port taken by another process. */
  const launch = async (): Promise<{ ok: true } | { ok: false; portTaken: boolean; error: Error }> => {
    fs.mkdirSync(dataDir, { recursive: true });
    if (Number.isInteger(port) && port > 0 && !portIsFree(port)) {
      return { ok: false, portTaken: true, error: new Error(`chroma-lb: port ${port} is already in use`) };
    }
    const logOffset = logSize(logPath);
    proc = spawnTracked([process.execPath, "run", "src/index.ts"], {
      label: `chroma-lb :${port}`,
      cwd: projectRoot,
      env: childEnv(),
      logPath,
    });
    try {
      // Any status counts: 503 only says no Chroma instance is healthy yet.
      await waitUntilAnswering(proc, {
        probeUrl: `http://127.0.0.1:${port}/health`,
        accept: () => true,
        label: `chroma-lb :${port}`,
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
      if (!result.portTaken || portFixed || attempt >= portAttemptsMax) throw result.error;
      port = await freePort();
    }
  } catch (error) {
    removeTempDir(tempDir);
    throw error;
  }

  return {
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
    kill: (signal = "SIGKILL") => killProcess(proc, signal),
    stop: () => stopProcess(proc, stopGraceMs),
    async restart() {
      await stopProcess(proc, stopGraceMs);
      // The old listening socket may linger for a moment; keep trying the same port.
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
      if (dataDir.startsWith(tempDir)) await dropLogStore(dataDir);
    },
  };
}

/**
 * Starts chroma-lb inside this process through `loadConfig` and `startServer`.
 * Defaults: PORT a free port, DATA_DIR a temp dir, LOG_LEVEL warn (or the runner's LOG_LEVEL);
 * `env` wins over them.
 */
export async function startLbInProcess(env: Record<string, string>): Promise<LbInProcess> {
  const { loadConfig } = await import("../../src/config");
  const { startServer } = await import("../../src/server");

  const tempDir = makeTempDir();
  const dataDir = env.DATA_DIR ?? path.join(tempDir, "data");
  fs.mkdirSync(dataDir, { recursive: true });
  const defaults = {
    PORT: String(await freePort()),
    DATA_DIR: dataDir,
    LOG_LEVEL: logLevelDefault(),
  };

  let server: Awaited<ReturnType<typeof startServer>>;
  let config: Config;
  try {
    config = loadConfig({ ...defaults, ...(await logStoreEnv(dataDir, env)), ...env });
    server = await startServer(config);
  } catch (error) {
    removeTempDir(tempDir);
    throw error;
  }

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= server.stop();
    return stopping;
  };
  return {
    url: server.url,
    port: server.port,
    dataDir,
    config,
    services: server.services,
    stop,
    async [Symbol.asyncDispose]() {
      try {
        await stop();
      } finally {
        removeTempDir(tempDir);
        if (dataDir.startsWith(tempDir)) await dropLogStore(dataDir);
      }
    },
  };
}
