/**
 * A private Postgres server for tests that kill, restart or cut it: a fresh cluster made by
 * `initdb` in a temp dir, run as the `postgres` user on a free port of 127.0.0.1, from the
 * installed binaries (`pg_config --bindir`). The machine's shared Postgres is never touched.
 *
 * The server is started through `setpriv` (exec, no fork), so the tracked pid is the
 * postmaster itself: SIGKILL reaches it, as a crash would. `setpriv --pdeathsig` is applied
 * again after the switch to the postgres user (a change of user clears it), so the kernel
 * still ends the server when the test runner dies.
 */
import { spawnSync } from "bun";
import fs from "node:fs";
import path from "node:path";
import postgres from "postgres";
import { freePort, portIsFree } from "./ports";
import { isRunning, killProcess, logTail, makeTempDir, removeTempDir, spawnTracked, type TrackedProcess } from "./processes";
import { waitFor } from "./wait";

/** A server started by {@link startPgServer}. */
export interface PgServer extends AsyncDisposable {
  readonly port: number;
  readonly dataDir: string;
  readonly logPath: string;
  /** `postgres://postgres@127.0.0.1:<port>/<database>` (trust auth). */
  url(database?: string): string;
  /** Creates a database of its own (`<prefix>_<random>`) on it and answers its URL. */
  freshDatabase(prefix?: string): Promise<string>;
  /** Whether the postmaster is running. */
  readonly running: boolean;
  /** Sends `signal` to the postmaster and waits for it to exit (SIGKILL: a crash; Postgres recovers at the next start). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and data dir, once it answers. */
  restart(): Promise<void>;
  /** Stops the server and removes its dir. */
  stop(): Promise<void>;
}

const bindir = (() => {
  const out = spawnSync(["pg_config", "--bindir"]);
  if (out.exitCode !== 0) throw new Error("pg_config not found: the PostgreSQL server binaries are needed");
  return out.stdout.toString().trim();
})();

const startTimeoutMs = 30_000;

function run(cmd: string[], label: string): void {
  const out = spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (out.exitCode !== 0) throw new Error(`${label} failed (${out.exitCode}): ${out.stderr.toString().slice(-2000)}`);
}

/** Whether the server at `port` answers a query. */
async function answers(port: number): Promise<boolean> {
  const sql = postgres({ host: "127.0.0.1", port, user: "postgres", database: "postgres", max: 1, connect_timeout: 1, onnotice: () => {} });
  try {
    await sql`select 1`;
    return true;
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}

/** initdb in a new temp dir and start the server; `settings` become `-c name=value` flags. */
export async function startPgServer(opts: { settings?: Record<string, string> } = {}): Promise<PgServer> {
  const dir = makeTempDir();
  const dataDir = path.join(dir, "data");
  const logPath = path.join(dir, "postgres.log");
  fs.chmodSync(dir, 0o755);
  run(["chown", "postgres:postgres", dir], "chown");
  run(
    ["runuser", "-u", "postgres", "--", path.join(bindir, "initdb"), "-D", dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
    "initdb",
  );
  // Durability across a machine crash is not what these tests are about; a SIGKILL of the
  // server keeps what it wrote in the page cache, so recovery still works with fsync off.
  const settings: Record<string, string> = {
    listen_addresses: "127.0.0.1",
    unix_socket_directories: dir,
    fsync: "off",
    full_page_writes: "off",
    shared_buffers: "16MB",
    max_connections: "60",
    ...opts.settings,
  };
  const port = await freePort();
  let proc: TrackedProcess | null = null;

  const launch = () =>
    spawnTracked(
      [
        "setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups", "--",
        "setpriv", "--pdeathsig", "KILL", "--",
        path.join(bindir, "postgres"), "-D", dataDir, "-p", String(port),
        ...Object.entries(settings).flatMap(([k, v]) => ["-c", `${k}=${v}`]),
      ],
      { label: `postgres:${port}`, cwd: dir, env: { PATH: process.env.PATH, LANG: "C" }, logPath },
    );

  /**
   * Starts the postmaster and waits until it answers. After a SIGKILL the old server's
   * backends may still hold its shared memory for a moment, and the new postmaster then
   * refuses to start; it is started again until it runs.
   */
  const start = async () => {
    await waitFor(
      async () => {
        if (proc && isRunning(proc)) return answers(port);
        if (!portIsFree(port)) return false;
        proc = launch();
        return false;
      },
      { timeoutMs: startTimeoutMs, intervalMs: 100, message: `postgres on port ${port} answering` },
    ).catch((error) => {
      throw new Error(`${(error as Error).message}\n--- postgres log ---\n${logTail(logPath)}`);
    });
  };

  await start();

  const server: PgServer = {
    port,
    dataDir,
    logPath,
    url: (database = "postgres") => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async freshDatabase(prefix = "test") {
      const name = `${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
      const sql = postgres(server.url(), { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`create database ${name}`);
      } finally {
        await sql.end({ timeout: 2 });
      }
      return server.url(name);
    },
    get running() {
      return proc !== null && isRunning(proc);
    },
    async kill(signal = "SIGKILL") {
      if (proc) await killProcess(proc, signal);
    },
    async restart() {
      if (proc && isRunning(proc)) throw new Error("postgres is still running; kill it first");
      await start();
    },
    async stop() {
      // SIGINT is Postgres's fast shutdown: it ends open sessions instead of waiting for them.
      if (proc) await killProcess(proc, "SIGINT").catch(() => killProcess(proc!, "SIGKILL"));
      removeTempDir(dir);
    },
    [Symbol.asyncDispose]() {
      return server.stop();
    },
  };
  return server;
}
