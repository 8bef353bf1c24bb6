/**
 * With LOG_STORE=postgres, tokens live beside the log in Postgres: two chroma-lb processes
 * sharing one database (each with its own DATA_DIR) see the same tokens, a revoke through
 * one holds on the other within 2 s, and `bun run token` writes where both read. Nothing of
 * a token reaches either DATA_DIR's SQLite file.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import postgres from "postgres";
import { killAll, startChromaServers, startLbInProcess, waitFor, type ChromaServers } from "../support";

const adminUrl = "postgres://postgres@127.0.0.1:5432/test";
const adminToken = "admin-secret-for-pg-tokens";
const projectRoot = join(import.meta.dir, "..", "..");
const T = "/api/v2/tenants/default_tenant/databases/default_database";
const name = `lbtok_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
const databaseUrl = `postgres://postgres@127.0.0.1:5432/${name}`;

let servers: ChromaServers;
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });

beforeAll(async () => {
  await admin.unsafe(`CREATE DATABASE ${name}`);
  servers = await startChromaServers(2);
});

afterAll(async () => {
  await servers?.[Symbol.asyncDispose]();
  // FORCE: a chroma-lb that failed to stop may still hold a connection.
  await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end({ timeout: 2 });
});
afterAll(() => killAll());

const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });
const statusOf = async (url: string, secret: string) => (await fetch(`${url}${T}/collections`, { headers: bearer(secret) })).status;

test("with LOG_STORE=postgres, every chroma-lb on the database and `bun run token` share one set of tokens", async () => {
  const env = { CHROMA_PRIMARY_URL: servers[0]!.url, CHROMA_REPLICA_URL: servers[1]!.url, ADMIN_TOKEN: adminToken, LOG_STORE: "postgres", DATABASE_URL: databaseUrl };
  await using one = await startLbInProcess(env);
  await using two = await startLbInProcess(env);

  const made = await fetch(`${one.url}/admin/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json", ...bearer(adminToken) },
    body: JSON.stringify({ name: "cms", role: "write", tenants: ["default_tenant"] }),
  });
  expect(made.status).toBe(201);
  const { id, token } = (await made.json()) as { id: string; token: string };
  expect(await statusOf(one.url, token)).toBe(200);
  // The other process learns of it from Postgres (reloaded every second): its data API closes
  // too (while open, any request passes), and the token works there.
  await waitFor(async () => (await statusOf(two.url, "not-a-token")) === 401, { timeoutMs: 2000, message: "the other closes its data API" });
  expect(await statusOf(two.url, token)).toBe(200);

  const revoked = await fetch(`${one.url}/admin/tokens/${id}`, { method: "DELETE", headers: bearer(adminToken) });
  expect(revoked.status).toBe(200);
  expect(await statusOf(one.url, token)).toBe(401);
  await waitFor(async () => (await statusOf(two.url, token)) === 401, { timeoutMs: 2000, message: "the token revoked on one is refused by the other" });

  // The command opens the same store from the same environment (its own DATA_DIR is irrelevant).
  const child = Bun.spawn(["bun", "run", "token", "create", "--name", "cli-made", "--role", "read"], {
    cwd: projectRoot,
    env: { ...process.env, ...env, DATA_DIR: one.dataDir, LOG_LEVEL: "error" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [code, out] = await Promise.all([child.exited, new Response(child.stdout).text()]);
  expect(code).toBe(0);
  const cliMade = JSON.parse(out) as { token: string };
  await waitFor(async () => (await statusOf(one.url, cliMade.token)) === 200 && (await statusOf(two.url, cliMade.token)) === 200, {
    timeoutMs: 2000,
    message: "the token made by the command works on both",
  });

  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql<Array<{ name: string }>>`SELECT name FROM chroma_lb_access_tokens ORDER BY name`;
    expect(rows.map((r) => r.name)).toEqual(["cli-made", "cms"]);
  } finally {
    await sql.end({ timeout: 2 });
  }
  for (const dataDir of [one.dataDir, two.dataDir]) {
    const local = new Database(join(dataDir, "chroma-lb.sqlite"), { readonly: true });
    try {
      expect(local.query("SELECT count(*) AS n FROM access_tokens").get()).toEqual({ n: 0 });
    } finally {
      local.close();
    }
  }
}, 60_000);
