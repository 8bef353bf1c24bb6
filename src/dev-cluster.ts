/**
 * `bun run dev:cluster`: several chroma-lb nodes on one machine, to try the cluster.
 * Starts, in one temporary folder, a private Postgres (initdb and postgres from the installed
 * PostgreSQL binaries, `pg_config --bindir`; as the `postgres` user when run as root), two
 * local Chroma servers and two chroma-lb nodes (`LOG_STORE=postgres`, one `DATABASE_URL`),
 * each node a process of its own (`bun run src/index.ts`) so that one can be killed.
 * Prints every address and pid; Ctrl-C stops everything and removes the folder.
 * PORT (8000) is the first node's port, the next ones follow when free; NODES (2) sets how
 * many nodes.
 */
import { spawnSync, type Subprocess } from "bun";
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { freePort, startChroma } from "./dev-chroma";

const projectRoot = join(import.meta.dir, "..");
const readyTimeoutMs = 30_000;
const isRoot = process.getuid?.() === 0;
/** As root, Postgres refuses to run: its commands run as the `postgres` user. */
const asPostgres = (cmd: string[]) => (isRoot ? ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--clear-groups", "--", ...cmd] : cmd);
/** The server dies with this script even when it is killed (a change of user clears the flag, so it is set after). */
const dyingWithUs = (cmd: string[]) => ["setpriv", "--pdeathsig", "KILL", "--", ...cmd];

const children: Array<{ name: string; process: Subprocess }> = [];
let folder: string | null = null;

function run(cmd: string[], what: string) {
  const out = spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (out.exitCode !== 0) throw new Error(`${what} failed: ${out.stderr.toString().slice(-1000)}`);
  return out.stdout.toString();
}

async function until(what: string, check: () => Promise<boolean>, child?: Subprocess): Promise<void> {
  const deadline = Date.now() + readyTimeoutMs;
  while (Date.now() < deadline) {
    if (child && child.exitCode !== null) break;
    if (await check().catch(() => false)) return;
    await Bun.sleep(100);
  }
  throw new Error(`${what} did not start within ${readyTimeoutMs / 1000} s`);
}

/** initdb in `dir`, then the postmaster on a free port of 127.0.0.1; returns the URL of database `chroma_lb`. */
async function startPostgres(dir: string): Promise<string> {
  const bindir = run(["pg_config", "--bindir"], "pg_config --bindir (are the PostgreSQL server binaries installed?)").trim();
  const dataDir = join(dir, "data");
  if (isRoot) run(["chown", "postgres:postgres", dir], "chown");
  run(asPostgres([join(bindir, "initdb"), "-D", dataDir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions"]), "initdb");
  const port = await freePort();
  const child = Bun.spawn(
    asPostgres(dyingWithUs([join(bindir, "postgres"), "-D", dataDir, "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-c", `unix_socket_directories=${dir}`])),
    { stdout: Bun.file(join(dir, "postgres.log")), stderr: Bun.file(join(dir, "postgres.err.log")), env: { PATH: process.env.PATH, LANG: "C" } },
  );
  children.push({ name: "postgres", process: child });
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  await until(
    "Postgres",
    async () => {
      const sql = postgres(admin, { max: 1, connect_timeout: 1, onnotice: () => {} });
      try {
        await sql`select 1`;
        return true;
      } finally {
        await sql.end({ timeout: 0 });
      }
    },
    child,
  );
  const sql = postgres(admin, { max: 1, onnotice: () => {} });
  await sql.unsafe("create database chroma_lb");
  await sql.end();
  return `postgres://postgres@127.0.0.1:${port}/chroma_lb`;
}

/** One chroma-lb node as a child process; resolves once its /health answers. */
async function startNode(index: number, port: number, env: Record<string, string | undefined>, dir: string): Promise<{ id: string; url: string; pid: number }> {
  const id = `node-${index}`;
  const dataDir = join(dir, id);
  mkdirSync(dataDir, { recursive: true });
  const child = Bun.spawn([process.execPath, "run", "src/index.ts"], {
    cwd: projectRoot,
    env: { ...env, PORT: String(port), HOST: "127.0.0.1", NODE_ID: id, DATA_DIR: dataDir },
    stdout: Bun.file(join(dir, `${id}.log`)),
    stderr: Bun.file(join(dir, `${id}.err.log`)),
  });
  children.push({ name: id, process: child });
  const url = `http://127.0.0.1:${port}`;
  await until(`chroma-lb ${id} (log: ${join(dir, `${id}.err.log`)})`, async () => (await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) })).status < 500, child);
  return { id, url, pid: child.pid };
}

/** Stops the nodes first (they leave the cluster cleanly), then Chroma, then Postgres; removes the folder. */
async function stopAll(): Promise<void> {
  const order = [...children].sort((a, b) => rank(a.name) - rank(b.name));
  for (const group of [0, 1, 2]) {
    const members = order.filter((c) => rank(c.name) === group);
    // SIGINT is Postgres's fast shutdown; the others stop on SIGTERM.
    for (const c of members) if (c.process.exitCode === null) c.process.kill(c.name === "postgres" ? "SIGINT" : "SIGTERM");
    await Promise.race([Promise.all(members.map((c) => c.process.exited)), Bun.sleep(10_000)]);
    for (const c of members) if (c.process.exitCode === null) c.process.kill("SIGKILL");
  }
  if (folder) rmSync(folder, { recursive: true, force: true });
}
const rank = (name: string) => (name.startsWith("node-") ? 0 : name === "postgres" ? 2 : 1);

let stopping = false;
const shutdown = async (code: number) => {
  if (stopping) return;
  stopping = true;
  await stopAll();
  process.exit(code);
};
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));

try {
  const nodeCount = Number(process.env.NODES ?? "2");
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > 9) throw new Error(`NODES must be 1 to 9, got ${process.env.NODES}`);
  folder = mkdtempSync(join(tmpdir(), "chroma-lb-cluster-"));
  chmodSync(folder, 0o755);
  console.log(`Starting a private Postgres, two Chroma servers and ${nodeCount} chroma-lb nodes (everything in ${folder}) ...`);
  const pgDir = join(folder, "postgres");
  mkdirSync(pgDir);
  const [databaseUrl, primary, replica] = await Promise.all([startPostgres(pgDir), startChroma("primary", folder), startChroma("replica", folder)]);
  children.push({ name: "chroma-primary", process: primary.process }, { name: "chroma-replica", process: replica.process });
  const env: Record<string, string | undefined> = {
    ...process.env,
    LOG_STORE: "postgres",
    DATABASE_URL: databaseUrl,
    CHROMA_PRIMARY_URL: primary.url,
    CHROMA_REPLICA_URL: replica.url,
    LOG_LEVEL: process.env.LOG_LEVEL ?? "info",
  };
  delete env.CHROMA_INSTANCES;
  // Each node may have to create the cluster's tables; the first one does it alone.
  const nodes = [];
  let port = Number(process.env.PORT ?? "8000");
  for (let i = 1; i <= nodeCount; i++) {
    port = await freePort(port);
    nodes.push(await startNode(i, port, env, folder));
    port += 1;
  }
  console.log(`
chroma-lb cluster is ready: ${nodeCount} nodes sharing one Postgres (LOG_STORE=postgres).
${nodes.map((n) => `  ${n.id.padEnd(7)} ${n.url}   (pid ${n.pid}; dashboard ${n.url}/dashboard)`).join("\n")}
  Postgres ${databaseUrl}
  Chroma   primary ${primary.url}   replica ${replica.url}
  Logs     ${folder}/*.log
Point clients at any node (GET /status on any node lists them all); kill one (kill -9 <pid>) to see the others go on.
Press Ctrl-C to stop everything (the folder is removed).`);
} catch (error) {
  console.error(`chroma-lb dev:cluster: ${(error as Error).message}`);
  await shutdown(1);
}
