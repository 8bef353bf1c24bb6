/**
 * Cost of access control on the hot path: one decision (hash of the secret, look-up, rules
 * from the path) per request, and one reload of every token from SQLite per second, with
 * 1000 tokens. Prints one JSON line. `bun run tests/bench/auth.ts`
 */
import { AccessControl } from "../../src/auth/access";
import { SqliteTokenStore } from "../../src/auth/token-store";
import { openLocalStore } from "../../src/db";
import { RecentEvents } from "../../src/observability/events";
import { createLogger } from "../../src/observability/log";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
const dir = mkdtempSync(join(tmpdir(), "chroma-lb-authbench-"));
const local = openLocalStore(dir);
const store = new SqliteTokenStore(local);
const access = new AccessControl({ config: { adminToken: "x", authRequired: false, declaredTokens: [] }, log: createLogger("error"), events: new RecentEvents(), collections: { resolve: () => undefined }, tokens: store });
let secret = "";
for (let i = 0; i < 1000; i++) { const r = await access.createToken({ name: `p${i}`, role: "write" }, "b"); if (i === 500) secret = r.secret; }
const path = "/api/v2/tenants/default_tenant/databases/default_database/collections/docs/query";
const n = 200_000;
let t = performance.now();
for (let i = 0; i < n; i++) access.check(new Request("http://x" + path, { method: "POST", headers: { authorization: `Bearer ${secret}` } }), path);
const withCheck = (performance.now() - t) / n;
t = performance.now();
for (let i = 0; i < n; i++) new Request("http://x" + path, { method: "POST", headers: { authorization: `Bearer ${secret}` } });
const requestOnly = (performance.now() - t) / n;
t = performance.now();
for (let i = 0; i < 50; i++) await access.refreshOnce();
const refresh = (performance.now() - t) / 50;
console.log(JSON.stringify({ tokens: 1000, checkUs: +((withCheck - requestOnly) * 1000).toFixed(2), refreshMs: +refresh.toFixed(2) }));
local.close();
rmSync(dir, { recursive: true, force: true });
