/**
 * `TEST_LOG_STORE=postgres bun test <scenarios>` runs scenarios with the Postgres log store:
 * each chroma-lb a test starts keeps its log and mappings in a database of its own on the
 * shared Postgres (127.0.0.1:5432), named after its DATA_DIR, so a restart on the same
 * DATA_DIR finds its log again. A test that sets LOG_STORE itself is left alone.
 */
import { createHash } from "node:crypto";
import postgres from "postgres";

const adminUrl = "postgres://postgres@127.0.0.1:5432/test";
const created = new Set<string>();

/** The variables that point chroma-lb at its database (empty unless TEST_LOG_STORE=postgres). */
export async function logStoreEnv(dataDir: string, env: Record<string, string>): Promise<Record<string, string>> {
  if (process.env.TEST_LOG_STORE !== "postgres" || env.LOG_STORE !== undefined) return {};
  const name = `lbs_${createHash("sha1").update(dataDir).digest("hex").slice(0, 20)}`;
  if (!created.has(name)) {
    const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
    try {
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
  const name = `lbs_${createHash("sha1").update(dataDir).digest("hex").slice(0, 20)}`;
  if (!created.delete(name)) return;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    // FORCE: a chroma-lb killed by the test may still hold a connection.
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end({ timeout: 2 });
  }
}
