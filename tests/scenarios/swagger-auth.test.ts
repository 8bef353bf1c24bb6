/**
 * The API document as it comes, over two real Chroma servers: its request examples succeed
 * unchanged on the default tenant and database (create, add, query, get, upsert, update,
 * delete); the dashboard says when the data API is open; and in a real headless Chromium
 * (Debian's `chromium`, driven by playwright-core) the Swagger UI's Authorize button takes
 * a token and "Try it out" runs a query with it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";
import { killAll, startChromaServers, startLbInProcess, waitFor, type ChromaServers, type LbInProcess } from "../support";

const adminToken = "swagger-admin-secret";

let servers: ChromaServers;
let lb: LbInProcess;
let browser: Browser;

beforeAll(async () => {
  browser = await chromium.launch({ executablePath: Bun.which("chromium") ?? "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
  servers = await startChromaServers(2);
  lb = await startLbInProcess({ CHROMA_PRIMARY_URL: servers[0]!.url, CHROMA_REPLICA_URL: servers[1]!.url, ADMIN_TOKEN: adminToken });
});

afterAll(async () => {
  await browser?.close();
  await lb?.[Symbol.asyncDispose]();
  await servers?.[Symbol.asyncDispose]();
});
afterAll(() => killAll());

interface Operation {
  parameters?: Array<{ name: string; in: string; schema?: { default?: string } }>;
  requestBody?: { content: { "application/json": { schema: { example?: unknown } } } };
}

let writeToken = "";

test("the dashboard says the data API is open until the first token exists", async () => {
  if (!existsSync(Bun.which("chromium") ?? "/usr/bin/chromium")) throw new Error("no chromium: apt-get install -y chromium (.ci/run does)");
  const page = await browser.newPage();
  try {
    await page.goto(`${lb.url}/dashboard`);
    await page.waitForSelector('[data-testid="auth-open"]:not([hidden])', { timeout: 10_000 });
    expect(await page.locator('[data-testid="summary-auth"]').textContent()).toBe("open");
    const made = await fetch(`${lb.url}/admin/tokens`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${adminToken}` },
      body: JSON.stringify({ name: "swagger-user", role: "write", tenants: ["default_tenant"] }),
    });
    expect(made.status).toBe(201);
    writeToken = ((await made.json()) as { token: string }).token;
    await page.waitForSelector('[data-testid="auth-open"][hidden]', { state: "attached", timeout: 10_000 });
    expect(await page.locator('[data-testid="summary-auth"]').textContent()).toBe("token required");
  } finally {
    await page.close();
  }
});

test("every request example succeeds unchanged, on the path parameters' defaults", async () => {
  expect(writeToken).not.toBe("");
  const document = (await (await fetch(`${lb.url}/swagger/json`)).json()) as { paths: Record<string, Record<string, Operation>> };
  /** Sends an operation's example to its path with every path parameter at its default. */
  const tryOut = async (method: string, template: string) => {
    const operation = document.paths[template]![method]!;
    const path = template.replace(/\{(\w+)\}/g, (_, name: string) => {
      const value = operation.parameters?.find((p) => p.in === "path" && p.name === name)?.schema?.default;
      if (value === undefined) throw new Error(`${method} ${template}: no default for ${name}`);
      return encodeURIComponent(value);
    });
    const example = operation.requestBody?.content["application/json"].schema.example;
    const res = await fetch(`${lb.url}${path}`, {
      method: method.toUpperCase(),
      headers: { "content-type": "application/json", authorization: `Bearer ${writeToken}` },
      body: example === undefined ? undefined : JSON.stringify(example),
    });
    return { operation: `${method} ${template}`, status: res.status, body: await res.text() };
  };
  const T = "/api/v2/tenants/{tenant}/databases/{database}";
  const C = `${T}/collections/{collection}`;
  const ok = (answer: { status: number }) => answer.status >= 200 && answer.status < 300;
  for (const [method, template] of [
    ["post", `${T}/collections`],
    ["post", `${T}/collections`],
    ["post", `${C}/add`],
    ["post", `${C}/query`],
    ["post", `${C}/get`],
    ["post", `${C}/upsert`],
    ["post", `${C}/update`],
    ["get", `${C}/count`],
    ["put", C],
    ["post", `${C}/delete`],
  ] as const) {
    const answer = await tryOut(method, template);
    expect({ ...answer, ok: ok(answer) }).toEqual({ ...answer, ok: true });
  }
  const query = await tryOut("post", `${C}/query`);
  expect(JSON.parse(query.body).ids).toEqual([["doc-1"]]);
});

test("the Swagger UI's Authorize takes a token and Try it out runs a query with it", async () => {
  expect(writeToken).not.toBe("");
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const sent: Array<{ path: string; authorization: string | undefined }> = [];
  try {
    const page = await context.newPage();
    page.on("request", (request) => {
      const url = new URL(request.url());
      if (url.pathname.startsWith("/api/")) sent.push({ path: url.pathname, authorization: request.headers().authorization });
    });
    await page.goto(`${lb.url}/swagger`);
    await page.waitForSelector(".btn.authorize", { timeout: 15_000 });
    await page.click(".btn.authorize");
    // The first scheme is the bearer one (its input takes the token alone).
    const bearerInput = page.locator(".modal-ux .auth-container input").first();
    await bearerInput.fill(writeToken);
    await page.locator(".modal-ux .auth-container").first().locator("button.authorize").click();
    await page.click(".modal-ux .btn-done");

    const query = page.locator('[id$="postApiV2TenantsByTenantDatabasesByDatabaseCollectionsByCollectionQuery"]');
    await query.locator(".opblock-summary").click();
    await query.locator(".try-out__btn").click();
    await query.locator(".execute").click();
    const status = query.locator(".live-responses-table .response .response-col_status").first();
    await waitFor(async () => (await status.textContent())?.trim(), { timeoutMs: 10_000, message: "the query's answer" });
    expect((await status.textContent())?.trim()).toBe("200");
    const queryPath = "/api/v2/tenants/default_tenant/databases/default_database/collections/swagger-demo/query";
    expect(sent.filter((s) => s.path === queryPath)).toEqual([{ path: queryPath, authorization: `Bearer ${writeToken}` }]);
  } finally {
    await context.close();
  }
}, 60_000);
