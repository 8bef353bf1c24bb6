/**
 * `TEST_LOG_STORE=postgres bun test <scenarios>` runs scenarios with the Postgres log store:
 * each chroma-lb a test starts keeps its log and mappings in a database of its own on the
 * shared Postgres (127.0.0.1:5432), named after the test process and its DATA_DIR, so a
 * restart on the same DATA_DIR finds its log again. It is dropped with its temp dir; what a
 * run leaves behind (a test that never disposed its chroma-lb, a killed run) is dropped by
 * the next run, once the process that made it is gone. A test that sets LOG_STORE itself is
 * left alone.
 */
import { createHash } from "node:crypto";
import postgres from "postgres";

const adminUrl = "postgres://postgres@127.0.0.1:5432/test";
const created = new Set<string>();
let staleDropped = false;

const nameOf = (dataDir: string) => `lbs_${process.pid}_${createHash("sha1").update(dataDir).digest("hex").slice(0, 16)}`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Drops the databases of test processes that are gone. */
async function dropStale(admin: postgres.Sql) {
  const rows = await admin<Array<{ datname: string }>>`SELECT datname FROM pg_database WHERE datname LIKE 'lbs\_%'`;
  for (const { datname } of rows) {
    const pid = Number(datname.split("_")[1]);
    if (Number.isInteger(pid) && pid !== process.pid && !alive(pid)) await admin.unsafe(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
  }
}

/** The variables that point chroma-lb at its database (empty unless TEST_LOG_STORE=postgres). */
export async function logStoreEnv(dataDir: string, env: Record<string, string>): Promise<Record<string, string>> {
  if (process.env.TEST_LOG_STORE !== "postgres" || env.LOG_STORE !== undefined) return {};
  const name = nameOf(dataDir);
  if (!created.has(name)) {
    const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
    try {
      if (!staleDropped) {
        staleDropped = true;
        await dropStale(admin);
      }
      const exists = await admin`SELECT 1 FROM pg_database WHERE datname = ${name}`;
      if (exists.length === 0) await admin.unsafe(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end({ timeout: 2 });
    }
    created.add(name);
  }
  return { LOG_STORE: "postgres", DATABASE_URL: `postgres://postgres@127.0.0.1:5432/${name}` };
}

/** Drops the database of a DATA_DIR that is gone for good (its temp dir removed). */
export async function dropLogStore(dataDir: string): Promise<void> {
  const name = nameOf(dataDir);
  if (!created.delete(name)) return;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    // FORCE: a chroma-lb killed by the test may still hold a connection.
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end({ timeout: 2 });
  }
}
