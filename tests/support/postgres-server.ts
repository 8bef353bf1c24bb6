/**
 * A Postgres server of a test's own, in a temp folder, from the installed binaries
 * (`pg_config --bindir`), run as the `postgres` user on a free port, so a test can SIGKILL
 * and restart it without touching the machine's shared server.
 */
import fs from "node:fs";
import path from "node:path";
import postgres from "postgres";
import { freePort } from "./ports";
import { isRunning, makeTempDir, removeTempDir, spawnTracked, stopProcess, type TrackedProcess } from "./processes";
import { waitFor } from "./wait";

export interface PostgresServer {
  readonly port: number;
  /** A URL for `database` on this server (created by `createDatabase`). */
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  /** SIGKILLs the postmaster (its backends die with it): a crash of the server. */
  kill(): Promise<void>;
  /** Starts it again on the same folder and port; resolves once it takes connections. */
  start(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const bindir = () => Bun.spawnSync(["pg_config", "--bindir"]).stdout.toString().trim();
const asPostgres = (cmd: string[]) => ["runuser", "-u", "postgres", "--", ...cmd];

export async function startPostgresServer(): Promise<PostgresServer> {
  const tempDir = makeTempDir();
  fs.chmodSync(tempDir, 0o777);
  const dataDir = path.join(tempDir, "pgdata");
  const logPath = path.join(tempDir, "postgres.log");
  const port = await freePort();
  const init = Bun.spawnSync(asPostgres([path.join(bindir(), "initdb"), "-D", dataDir, "-A", "trust", "-U", "postgres", "--no-sync"]));
  if (init.exitCode !== 0) throw new Error(`initdb failed: ${init.stderr.toString().slice(0, 500)}`);
  let proc: TrackedProcess | null = null;

  const ready = async () => {
    await waitFor(
      async () => {
        const sql = postgres(`postgres://postgres@127.0.0.1:${port}/postgres`, { max: 1, connect_timeout: 1, onnotice: () => {} });
        try {
          await sql`SELECT 1`;
          return true;
        } catch {
          return false;
        } finally {
          await sql.end({ timeout: 1 }).catch(() => {});
        }
      },
      { timeoutMs: 20_000, message: `postgres on port ${port} taking connections` },
    );
  };
  const start = async () => {
    proc = spawnTracked(
      asPostgres([path.join(bindir(), "postgres"), "-D", dataDir, "-p", String(port), "-k", tempDir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"]),
      { label: `postgres :${port}`, cwd: tempDir, env: { ...process.env }, logPath },
    );
    await ready();
  };
  const postmasterPid = () => Number(fs.readFileSync(path.join(dataDir, "postmaster.pid"), "utf8").split("\n")[0]);
  await start();

  return {
    port,
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async createDatabase(name) {
      const sql = postgres(`postgres://postgres@127.0.0.1:${port}/postgres`, { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`CREATE DATABASE ${name}`);
      } finally {
        await sql.end({ timeout: 2 });
      }
    },
    async kill() {
      process.kill(postmasterPid(), "SIGKILL");
      if (proc) await proc.exited;
      // Its backends notice the postmaster is gone and exit; the port is free once they have.
      await waitFor(async () => Bun.spawnSync(["sh", "-c", `ss -ltn | grep -q ':${port} '`]).exitCode !== 0, { timeoutMs: 10_000, message: "postgres port closed" });
    },
    start,
    async [Symbol.asyncDispose]() {
      if (proc && isRunning(proc)) {
        Bun.spawnSync(asPostgres([path.join(bindir(), "pg_ctl"), "-D", dataDir, "stop", "-m", "immediate"]));
        await stopProcess(proc, 5_000);
      }
      removeTempDir(tempDir);
    },
  };
}
