/**
 * The operator's pages in a real headless Chromium (Debian's `chromium`, driven by
 * playwright-core; no browser download): `/dashboard` shows both instances healthy, shows
 * the replica down within two seconds of its SIGKILL and healthy again after it returns;
 * `/swagger` renders its operation list with every request going to chroma-lb itself.
 * The browser may reach 127.0.0.1 only: any other request is aborted and recorded, and
 * the tests assert none was attempted.
 *
 * Screenshots of each stage go to DASHBOARD_SCREENSHOTS, or to a new folder in the OS
 * temp dir; the folder is printed and kept.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { killAll, startChromaServers, startLbInProcess, type ChromaServers, type LbInProcess } from "../support";

/** The most the page may take to show an instance down after its SIGKILL. */
const shownDownMsMax = 2000;
const T = "/api/v2/tenants/default_tenant/databases/default_database";
/** Embedding width of the demo collection: tiny, the load is there to move the counters. */
const dimensions = 4;

let servers: ChromaServers;
let lb: LbInProcess;
let browser: Browser;
let screenshotsDir: string;

beforeAll(async () => {
  screenshotsDir = process.env.DASHBOARD_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), "chroma-lb-dashboard-"));
  mkdirSync(screenshotsDir, { recursive: true });
  console.log(`dashboard screenshots: ${screenshotsDir}`);
  browser = await chromium.launch({ executablePath: chromiumPath(), headless: true, args: ["--no-sandbox"] });
  servers = await startChromaServers(2);
  lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: servers[0]!.url,
    CHROMA_REPLICA_URL: servers[1]!.url,
    HEALTH_CHECK_INTERVAL: "1",
    HEALTH_CHECK_TIMEOUT: "0.3",
  });
});

afterAll(async () => {
  await browser?.close();
  await lb?.[Symbol.asyncDispose]();
  await servers?.[Symbol.asyncDispose]();
});

// A safety net, after the orderly stop above: nothing the harness started outlives the file.
afterAll(() => killAll());

/** Debian's chromium: `command -v chromium`, else /usr/bin/chromium. `.ci/run` installs it. */
function chromiumPath(): string {
  const path = Bun.which("chromium") ?? "/usr/bin/chromium";
  if (!existsSync(path)) throw new Error(`no chromium at ${path}: apt-get install -y chromium (.ci/run does)`);
  return path;
}

/** A context whose pages reach 127.0.0.1 only; what else they ask for is aborted and listed. */
async function localOnlyContext(): Promise<{ context: BrowserContext; external: string[]; pageErrors: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, deviceScaleFactor: 1 });
  const external: string[] = [];
  const pageErrors: string[] = [];
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.hostname === "127.0.0.1" || url.protocol === "data:") return route.continue();
    external.push(url.href);
    return route.abort("blockedbyclient");
  });
  context.on("page", (page) => page.on("pageerror", (error) => pageErrors.push(String(error))));
  return { context, external, pageErrors };
}

const instanceCard = (name: string, state: string) => `[data-testid="instance-${name}"][data-state="${state}"]`;
/** An element whose count (data-value, never negative) is above zero. */
const positive = (testid: string) => `[data-testid="${testid}"][data-value]:not([data-value="0"])`;

async function screenshot(page: Page, name: string): Promise<string> {
  const path = join(screenshotsDir, name);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Writes and reads through chroma-lb a few times a second until stopped, so the page has
 * request rates, a growing log while the replica is down and replay when it returns.
 * The pause paces the load; nothing waits on it.
 */
function startLoad(collectionId: string) {
  let stopped = false;
  const statuses = new Map<number, number>();
  const count = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
  /** Sends one request; answers the position of a write (0 when it has none). */
  const call = async (path: string, body: unknown, headers: Record<string, string> = {}): Promise<number> => {
    try {
      const response = await fetch(`${lb.url}${T}/collections/${collectionId}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      });
      await response.arrayBuffer();
      count(response.status);
      return Number(response.headers.get("x-chroma-lb-position") ?? 0);
    } catch {
      count(0);
      return 0;
    }
  };
  const running = (async () => {
    let previous = { ids: [] as string[], position: 0 };
    for (let n = 0; !stopped; n++) {
      const ids = [0, 1, 2].map((i) => `doc-${n}-${i}`);
      const position = await call("/add", { ids, embeddings: ids.map((_, i) => Array.from({ length: dimensions }, (_, d) => ((n + i + d) % 7) / 7)), documents: ids });
      // Reads ask only for the previous write, so an instance still applying this one may serve them too.
      if (previous.position) await call("/get", { ids: previous.ids, include: ["documents"] }, { "X-Chroma-LB-Min-Position": String(previous.position) });
      previous = { ids, position };
      await Bun.sleep(100);
    }
  })();
  return {
    statuses,
    async stop() {
      stopped = true;
      await running;
    },
  };
}

test(
  "the dashboard shows both instances healthy, the replica down within two seconds of its SIGKILL, then healthy again",
  async () => {
    const replica = servers[1]!;
    const created = await fetch(`${lb.url}${T}/collections`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "dashboard_demo", get_or_create: true }),
    });
    expect(created.status).toBe(200);
    const load = startLoad(((await created.json()) as { id: string }).id);

    const { context, external, pageErrors } = await localOnlyContext();
    try {
      const page = await context.newPage();
      await page.goto(`${lb.url}/dashboard`);
      await page.waitForSelector(instanceCard("primary", "healthy"), { timeout: 15_000 });
      await page.waitForSelector(instanceCard("replica", "healthy"), { timeout: 15_000 });
      expect(await page.getAttribute('[data-testid="instance-primary"]', "data-role")).toBe("primary");
      expect(await page.getAttribute('[data-testid="instance-replica"]', "data-role")).toBe("replica");
      expect(await page.getAttribute('[data-testid="connection"]', "data-state")).toBe("live");
      // One node with SQLite: the nodes panel lists this node alone.
      expect(await page.$$eval('[data-testid="node"]', (rows) => rows.map((r) => r.getAttribute("data-node")))).toEqual([lb.config.nodeId]);
      // A few polls, so the charts have lines and the rates are measured.
      await page.waitForSelector('[data-testid="chart-requests"] path[data-series="replica"]', { state: "attached", timeout: 15_000 });
      await page.waitForSelector(positive("log-head"), { timeout: 15_000 });
      console.log(`healthy: ${await screenshot(page, "1-healthy.png")}`);

      const killedAt = performance.now();
      const killing = replica.kill("SIGKILL");
      await page.waitForSelector(instanceCard("replica", "down"), { timeout: 10_000 });
      const shownDownMs = Math.round(performance.now() - killedAt);
      await killing;
      // Writes go on while the replica is down: the page shows what it owes.
      await page.waitForSelector(positive("instance-replica-lag"), { timeout: 10_000 });
      expect(await page.getAttribute('[data-testid="instance-primary"]', "data-state")).toBe("healthy");
      expect(await page.textContent('[data-testid="instance-replica-last-error"]')).toBeTruthy();
      console.log(`replica down: ${await screenshot(page, "2-replica-down.png")}`);

      const restartedAt = performance.now();
      await replica.restart();
      const restartMs = Math.round(performance.now() - restartedAt);
      await page.waitForSelector(instanceCard("replica", "healthy"), { timeout: 30_000 });
      const shownHealthyMs = Math.round(performance.now() - restartedAt);
      // Caught up: the page shows the replica owes nothing.
      await page.waitForSelector('[data-testid="instance-replica-lag"][data-value="0"]', { timeout: 30_000 });
      // The error of the outage stays in view, faded: it is from before the replica recovered.
      await page.waitForSelector('[data-testid="instance-replica-last-error"][data-state="past"]', { timeout: 5_000 });
      expect(await page.textContent('[data-testid="instance-replica-last-error"]')).toContain("before it recovered");
      console.log(`healthy again: ${await screenshot(page, "3-healthy-again.png")}`);

      await load.stop();
      console.log(
        `dashboard: replica shown down ${shownDownMs} ms after its SIGKILL (at most ${shownDownMsMax}); ` +
          `restart took ${restartMs} ms, shown healthy ${shownHealthyMs} ms after it began; ` +
          `load answers by status: ${JSON.stringify(Object.fromEntries(load.statuses))}`,
      );
      expect({ external, pageErrors }).toEqual({ external: [], pageErrors: [] });
      expect(shownDownMs).toBeLessThanOrEqual(shownDownMsMax);
    } finally {
      await load.stop();
      await context.close();
    }
  },
  120_000,
);

/**
 * Runs `work` again and again until the page shows `selector`, and answers that element:
 * the page polls once a second, and work on a fast machine may end between two polls.
 */
async function whileRepeating(page: Page, selector: string, work: () => Promise<unknown>, timeoutMs = 60_000) {
  let shown = false;
  let runs = 0;
  const repeating = (async () => {
    while (!shown) {
      runs += 1;
      await work();
    }
  })();
  try {
    return await page.waitForSelector(selector, { timeout: timeoutMs });
  } finally {
    shown = true;
    await repeating;
    console.log(`${selector}: shown after ${runs} run(s) of the work`);
  }
}

test(
  "a resync and a consistency check in progress show records done of how many, rate and time left; a copy under resync is under repair, not diverged",
  async () => {
    // Enough records that a piece of work spans one of the page's one-second polls or more.
    const collectionsCount = 3;
    const recordsEach = 3_000;
    for (let c = 0; c < collectionsCount; c++) {
      const created = await fetch(`${lb.url}${T}/collections`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: `bulk_${c}` }),
      });
      const { id } = (await created.json()) as { id: string };
      const ids = Array.from({ length: recordsEach }, (_, i) => `r-${i}`);
      const added = await fetch(`${lb.url}${T}/collections/${id}/add`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ids, embeddings: ids.map((_, i) => Array.from({ length: dimensions }, (_, d) => ((i * (d + 1)) % 97) / 97)) }),
      });
      expect(added.status).toBe(201);
    }
    const settled = async () => ((await (await fetch(`${lb.url}/wal/status`)).json()) as { pending_writes: number }).pending_writes === 0;
    const deadline = performance.now() + 60_000;
    while (!(await settled())) {
      if (performance.now() > deadline) throw new Error("the bulk load did not reach the replica");
      await Bun.sleep(100);
    }
    // Every collection's record count (the first test's collection is there too).
    const collections = (await (await fetch(`${lb.url}${T}/collections`)).json()) as Array<{ id: string; name: string }>;
    const counts = new Map<string, number>();
    for (const c of collections) counts.set(c.name, Number(await (await fetch(`${lb.url}${T}/collections/${c.id}/count`)).text()));
    const recordsAll = [...counts.values()].reduce((a, b) => a + b, 0);
    const fmt = (n: number) => n.toLocaleString("en-US");

    const { context, external, pageErrors } = await localOnlyContext();
    try {
      const page = await context.newPage();
      await page.goto(`${lb.url}/dashboard`);
      await page.waitForSelector(instanceCard("replica", "healthy"), { timeout: 15_000 });
      expect(await page.isHidden('[data-testid="work-panel"]')).toBe(true);

      // A manual resync of bulk_0 on the replica, caught while it copies (total known). What
      // the page shows is read in one go from the render that first shows it, so the
      // progress and the marks judged below come from the same poll.
      const resync = { answer: null as { ok: boolean } | null };
      let shown = false;
      let runs = 0;
      const repeating = (async () => {
        while (!shown) {
          runs += 1;
          const res = await fetch(`${lb.url}/admin/instances/replica/resync`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ collection: "bulk_0" }),
          });
          resync.answer = (await res.json()) as { ok: boolean };
        }
      })();
      let seen: { total: string | null; text: string | null; repairing: Array<string | null>; repairCard: number; divergedCard: number; divergedCount: string | null };
      try {
        const handle = await page.waitForFunction(
          () => {
            // Runs in the page (no DOM types in this project's TypeScript setup).
            const document = (globalThis as unknown as { document: any }).document;
            const work = document.querySelector('[data-testid="work-resync"][data-instance="replica"][data-collection="bulk_0"][data-total][data-state="copying"]');
            if (!work) return null;
            return {
              total: work.getAttribute("data-total"),
              text: work.textContent,
              repairing: [...document.querySelectorAll('[data-testid="diverged-state"]')].map((c: any) => c.getAttribute("data-state") as string | null),
              repairCard: document.querySelectorAll('[data-testid="instance-replica-under-repair"]').length,
              divergedCard: document.querySelectorAll('[data-testid="instance-replica-diverged"]').length,
              divergedCount: document.querySelector('[data-testid="log-diverged-count"]')?.getAttribute("data-value") ?? null,
            };
          },
          undefined,
          { timeout: 60_000, polling: "raf" },
        );
        seen = (await handle.jsonValue())!;
      } finally {
        shown = true;
        await repeating;
        console.log(`resync shown copying after ${runs} run(s) of the work`);
      }
      expect(seen.total).toBe(String(recordsEach));
      expect(seen.text).toMatch(
        new RegExp(`^Resync of bulk_0 on replica from primary: copying[\\d,]+ of ${fmt(recordsEach)} records copied · [\\d.,]+ records/s · (.+ left|time left unknown)$`),
      );
      // The copy being rebuilt is under repair, never counted as diverged.
      expect({ repairing: seen.repairing, repairCard: seen.repairCard, divergedCard: seen.divergedCard, divergedCount: seen.divergedCount }).toEqual({
        repairing: ["under_repair"],
        repairCard: 1,
        divergedCard: 0,
        divergedCount: "0",
      });
      console.log(`resync: ${await screenshot(page, "6-resync.png")}`);
      await page.waitForSelector('[data-testid="work-panel"]', { state: "hidden", timeout: 30_000 });
      expect(resync.answer).toEqual(expect.objectContaining({ ok: true }));
      expect(await page.locator('[data-testid="instance-replica-under-repair"]').count()).toBe(0);

      // A consistency check of every collection: both copies of each are read.
      const outcome = { differing: null as number | null };
      const checking = await whileRepeating(page, '[data-testid="work-consistency"][data-total]', async () => {
        outcome.differing = ((await (await fetch(`${lb.url}/admin/consistency`)).json()) as { collections_differing: number }).collections_differing;
      });
      expect(await checking.getAttribute("data-total")).toBe(String(2 * recordsAll));
      expect(await checking.textContent()).toMatch(
        new RegExp(`^Consistency check: collection \\d+ of ${counts.size} \\(.+\\)[\\d,]+ of ${fmt(2 * recordsAll)} records read · [\\d.,]+ records/s · (.+ left|time left unknown)$`),
      );
      console.log(`consistency check: ${await screenshot(page, "7-consistency.png")}`);
      expect(outcome.differing).toBe(0);
      await page.waitForSelector('[data-testid="work-panel"]', { state: "hidden", timeout: 10_000 });
      expect({ external, pageErrors }).toEqual({ external: [], pageErrors: [] });
    } finally {
      await context.close();
    }
  },
  180_000,
);

test(
  "the Swagger UI renders its operations with every asset served by chroma-lb",
  async () => {
    const { context, external, pageErrors } = await localOnlyContext();
    try {
      const page = await context.newPage();
      const requested: string[] = [];
      page.on("request", (request) => requested.push(request.url()));
      await page.goto(`${lb.url}/swagger`);
      await page.waitForSelector('.opblock-summary-path[data-path="/wal/status"]', { timeout: 15_000 });
      const operations = await page.locator(".opblock").count();
      console.log(`swagger: ${operations} operations; ${await screenshot(page, "4-swagger.png")}`);
      expect(operations).toBeGreaterThan(30);
      expect({ external, pageErrors }).toEqual({ external: [], pageErrors: [] });
      expect(requested.map((url) => new URL(url).pathname).sort()).toEqual([
        "/swagger",
        "/swagger/assets/swagger-ui-bundle.js",
        "/swagger/assets/swagger-ui.css",
        "/swagger/json",
      ]);
    } finally {
      await context.close();
    }
  },
  60_000,
);

test(
  "the dashboard lists recent events and counts unresolved alerts, and says so when there are none",
  async () => {
    const { context, external, pageErrors } = await localOnlyContext();
    try {
      const page = await context.newPage();
      // The page reads GET /events; the answers here are fixed so the rendering is checked on its own.
      // null: answered 404, as by a chroma-lb without GET /events.
      let events: object[] | null = null;
      await page.route("**/events", (route) =>
        events === null ? route.fulfill({ status: 404, body: "" }) : route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify({ events }) }),
      );
      await page.goto(`${lb.url}/dashboard`);
      await page.waitForSelector('[data-testid="events-empty"]', { timeout: 10_000 });
      expect(await page.textContent('[data-testid="events-empty"]')).toContain("no events");
      expect(await page.isHidden('[data-testid="alerts-active"]')).toBe(true);

      const now = Date.now();
      events = [
        { at: new Date(now - 30_000).toISOString(), event: "instance_down", level: "error", instance: "replica", message: "instance replica is down: connection refused" },
        { at: new Date(now - 20_000).toISOString(), event: "instance_down", level: "info", instance: "replica", message: "instance replica is back", resolved: true },
        { at: new Date(now - 10_000).toISOString(), event: "replication_lag", level: "warn", instance: "replica", message: "replica is 42 s behind" },
        { at: new Date(now - 5_000).toISOString(), event: "collection_diverged", level: "error", instance: "replica", collection: "docs", message: "<b>not markup</b>" },
      ];
      await page.waitForSelector('[data-testid="alerts-active"][data-count="2"]', { timeout: 10_000 });
      const shown = await page.$$eval('[data-testid="event"]', (items) =>
        items.map((li) => ({ event: li.getAttribute("data-event"), level: li.getAttribute("data-level"), message: li.querySelector(".message")?.textContent })),
      );
      // Newest first; text is shown as text, never as markup. The alert resolved later is not active.
      expect(shown).toEqual([
        { event: "collection_diverged", level: "error", message: "<b>not markup</b>" },
        { event: "replication_lag", level: "warn", message: "replica is 42 s behind" },
        { event: "instance_down", level: "info", message: "instance replica is back" },
        { event: "instance_down", level: "error", message: "instance replica is down: connection refused" },
      ]);
      expect(await page.textContent('[data-testid="alerts-active"]')).toBe("2 active alerts");
      console.log(`events: ${await screenshot(page, "5-events.png")}`);
      expect({ external, pageErrors }).toEqual({ external: [], pageErrors: [] });
    } finally {
      await context.close();
    }
  },
  60_000,
);
