/**
 * The bound on request bodies held in memory (MAX_INFLIGHT_MB) and on one body (MAX_BODY_MB):
 * waiters are admitted in arrival order as soon as bytes are released, a request that finds
 * no room in time is answered 503 with Retry-After and its body unread, and bytes are given
 * back however the request ends.
 */
import { describe, expect, test } from "bun:test";
import { InflightBudget, withBody, type BodyLease } from "../../src/proxy/inflight";

const url = "http://lb.test/api/v2/tenants/t/databases/d/collections/c/add";

/** A request as Bun.serve hands it over: with the Content-Length its client sent. */
function post(bytes: number): Request {
  return new Request(url, {
    method: "POST",
    headers: { "content-type": "application/json", "content-length": String(bytes) },
    body: new Uint8Array(bytes),
  });
}

/** A request whose body has no Content-Length: it arrives in `chunks` pieces of `chunkBytes`. */
function chunked(chunks: number, chunkBytes: number): Request {
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent++ === chunks) controller.close();
      else controller.enqueue(new Uint8Array(chunkBytes));
    },
  });
  return new Request(url, { method: "POST", body, headers: { "content-type": "application/json" } });
}

const ok = async () => new Response("{}", { status: 200 });

describe("InflightBudget", () => {
  test("admits at once while the bytes fit, and counts them until released", async () => {
    const budget = new InflightBudget(100, 1_000);
    const a = (await budget.acquire(60))!;
    const b = (await budget.acquire(40))!;
    expect([a.bytes, b.bytes, budget.bytes, budget.waiting]).toEqual([60, 40, 100, 0]);
    a.release();
    a.release();
    expect(budget.bytes).toBe(40);
    b.release();
    expect(budget.bytes).toBe(0);
  });

  test("waiters are woken in arrival order when bytes are released, and none overtakes another", async () => {
    const budget = new InflightBudget(100, 5_000);
    const first = (await budget.acquire(90))!;
    const order: string[] = [];
    const leases = new Map<string, BodyLease>();
    const wait = (name: string, bytes: number) =>
      budget.acquire(bytes).then((lease) => {
        order.push(name);
        leases.set(name, lease!);
      });
    // `small` would fit now (90 + 10 <= 100) but arrived after `big`, which does not.
    const waits = [wait("big", 50), wait("small", 10), wait("last", 50)];
    await Bun.sleep(5);
    expect({ order, waiting: budget.waiting, bytes: budget.bytes }).toEqual({ order: [], waiting: 3, bytes: 90 });

    const releasedAt = performance.now();
    first.release();
    await Promise.all(waits.slice(0, 2));
    // Woken by the release itself, not by a timer (the wait bound is 5 s).
    expect(performance.now() - releasedAt).toBeLessThan(100);
    expect({ order, waiting: budget.waiting, bytes: budget.bytes }).toEqual({ order: ["big", "small"], waiting: 1, bytes: 60 });

    leases.get("big")!.release();
    await waits[2];
    expect({ order, waiting: budget.waiting, bytes: budget.bytes }).toEqual({ order: ["big", "small", "last"], waiting: 0, bytes: 60 });
  });

  test("a waiter that gets no room within the wait bound gets null", async () => {
    const budget = new InflightBudget(100, 50);
    const held = (await budget.acquire(80))!;
    const started = performance.now();
    const timedOut = await budget.acquire(30);
    expect(timedOut).toBeNull();
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
    expect({ bytes: budget.bytes, waiting: budget.waiting, refused: budget.refusedRequests }).toEqual({ bytes: 80, waiting: 0, refused: 1 });
    held.release();
  });

  test("when the oldest waiter gives up, the one behind it is admitted if it fits", async () => {
    const budget = new InflightBudget(100, 60);
    const held = (await budget.acquire(60))!;
    const big = budget.acquire(50);
    await Bun.sleep(20);
    // Fits beside `held`, but waits behind `big` until `big` gives up.
    const small = budget.acquire(30);
    expect(await big).toBeNull();
    const admitted = await Promise.race([small, Bun.sleep(30).then(() => "still waiting" as const)]);
    expect(admitted).not.toBe("still waiting");
    expect(budget.bytes).toBe(90);
    (admitted as BodyLease).release();
    held.release();
  });

  test("a waiter whose client goes away leaves the queue", async () => {
    const budget = new InflightBudget(100, 5_000);
    const held = (await budget.acquire(100))!;
    const abort = new AbortController();
    const waiting = budget.acquire(10, abort.signal);
    abort.abort();
    expect(await waiting).toBeNull();
    expect(budget.waiting).toBe(0);
    held.release();
  });

  test("once 32 MiB of bodies were released, one collection runs after the current answer", async () => {
    let collections = 0;
    const budget = new InflightBudget(100 * 1024 * 1024, 100, () => collections++);
    const mb = 1024 * 1024;
    for (let i = 0; i < 31; i++) (await budget.acquire(mb))!.release();
    await Bun.sleep(1);
    expect(collections).toBe(0);
    const leases = await Promise.all([budget.acquire(mb), budget.acquire(40 * mb)]);
    for (const lease of leases) lease!.release();
    // Scheduled, not run inside release: the releasing request still references its body.
    expect(collections).toBe(0);
    await Bun.sleep(1);
    expect(collections).toBe(1);
    (await budget.acquire(mb))!.release();
    await Bun.sleep(1);
    expect(collections).toBe(1);
  });

  test("a body of unknown size is admitted while any room is left, and grows as it arrives", async () => {
    const budget = new InflightBudget(100, 20);
    const lease = (await budget.acquire(0))!;
    lease.grow(70);
    expect(budget.bytes).toBe(70);
    lease.grow(30);
    expect(await budget.acquire(0)).toBeNull();
    lease.release();
    expect(budget.bytes).toBe(0);
  });
});

describe("withBody", () => {
  const limits = (bytesMax: number, waitMs: number, maxBodyBytes = bytesMax) => ({ budget: new InflightBudget(bytesMax, waitMs), maxBodyBytes });

  test("reads the body, hands it over, and holds its bytes until the answer is ready", async () => {
    const l = limits(1_000, 100);
    let heldWhileHandling = -1;
    const response = await withBody(post(300), l, async (body) => {
      heldWhileHandling = l.budget.bytes;
      return new Response(String(body.byteLength));
    });
    expect({ status: response.status, text: await response.text(), heldWhileHandling, after: l.budget.bytes }).toEqual({
      status: 200,
      text: "300",
      heldWhileHandling: 300,
      after: 0,
    });
  });

  test("past the bound a request waits, then answers 503 with Retry-After in Chroma's error shape, its body unread", async () => {
    const l = limits(1_000, 30);
    const held = (await l.budget.acquire(800))!;
    const request = post(300);
    let handled = false;
    const response = await withBody(request, l, async () => {
      handled = true;
      return ok();
    });
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("1");
    expect(response.headers.get("content-type")).toBe("application/json");
    const body = (await response.json()) as { error: string; message: string };
    expect(body.error).toBe("ServiceUnavailable");
    expect(body.message).toContain("MAX_INFLIGHT_MB");
    expect({ handled, bodyUsed: request.bodyUsed, bytes: l.budget.bytes }).toEqual({ handled: false, bodyUsed: false, bytes: 800 });
    held.release();
  });

  test("a waiting request is served once bytes are released within the wait bound", async () => {
    const l = limits(1_000, 2_000);
    const held = (await l.budget.acquire(800))!;
    const answer = withBody(post(300), l, ok);
    await Bun.sleep(10);
    expect(l.budget.waiting).toBe(1);
    held.release();
    expect((await answer).status).toBe(200);
    expect(l.budget.bytes).toBe(0);
  });

  test("bytes are released when handling fails, and the next waiter gets them", async () => {
    const l = limits(1_000, 2_000);
    const failing = withBody(post(700), l, async () => {
      await Bun.sleep(20);
      throw new Error("validation failed");
    });
    const next = withBody(post(700), l, ok);
    await Bun.sleep(5);
    expect(l.budget.waiting).toBe(1);
    await expect(failing).rejects.toThrow("validation failed");
    expect((await next).status).toBe(200);
    expect(l.budget.bytes).toBe(0);
  });

  test("a body over MAX_BODY_MB by its Content-Length is answered 413 in Chroma's error shape before any of it is read", async () => {
    const l = limits(10_000, 100, 1_000);
    const request = post(1_001);
    const response = await withBody(request, l, ok);
    expect(response.status).toBe(413);
    expect(response.headers.get("content-type")).toBe("application/json");
    const body = (await response.json()) as { error: string; message: string };
    expect(body.error).toBe("ChromaError");
    expect(body.message).toContain("1001 bytes");
    expect(body.message).toContain("MAX_BODY_MB");
    expect({ bodyUsed: request.bodyUsed, bytes: l.budget.bytes }).toEqual({ bodyUsed: false, bytes: 0 });
    expect((await withBody(post(1_000), l, ok)).status).toBe(200);
  });

  test("a body without Content-Length is counted as it arrives and answered 413 once it passes MAX_BODY_MB", async () => {
    const l = limits(10_000, 100, 1_000);
    let seen = -1;
    const fits = await withBody(chunked(4, 250), l, async (body) => {
      seen = body.byteLength;
      return ok();
    });
    expect({ status: fits.status, seen, bytes: l.budget.bytes }).toEqual({ status: 200, seen: 1_000, bytes: 0 });
    const over = await withBody(chunked(5, 250), l, ok);
    expect(over.status).toBe(413);
    expect(((await over.json()) as { error: string }).error).toBe("ChromaError");
    expect(l.budget.bytes).toBe(0);
  });

  /** A request that declares `declared` bytes and sends what the test tells it to, when it tells it. */
  function fed(declared: number, sent = 0): { request: Request; send: (bytes: number) => void; end: () => void } {
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        if (sent > 0) c.enqueue(new Uint8Array(sent));
      },
    });
    const request = new Request(url, { method: "POST", body, headers: { "content-type": "application/json", "content-length": String(declared) } });
    return { request, send: (bytes) => controller.enqueue(new Uint8Array(bytes)), end: () => controller.close() };
  }

  test("a body that declares more than it sends holds only the bytes that arrived, so other requests are admitted", async () => {
    const l = { ...limits(1_000, 50), minBytesPerS: 0 };
    const slow = [fed(900, 1), fed(900, 1), fed(900, 1), fed(900, 1)];
    const answers = slow.map(({ request }) => withBody(request, l, ok));
    await Bun.sleep(5);
    expect(l.budget.bytes).toBe(4);
    expect((await withBody(post(500), l, ok)).status).toBe(200);
    for (const { end } of slow) end();
    await Promise.all(answers);
    expect(l.budget.bytes).toBe(0);
  });

  test("a body that stops arriving is cut off with 408 after one rate window, its bytes released, and nothing handled", async () => {
    const l = { ...limits(1_000, 50), minBytesPerS: 1_000, rateWindowMs: 100 };
    const { request } = fed(900, 600);
    let handled = false;
    const startedAt = performance.now();
    const answer = withBody(request, l, async () => {
      handled = true;
      return ok();
    });
    await Bun.sleep(20);
    expect(l.budget.bytes).toBe(600);
    const response = await answer;
    expect(performance.now() - startedAt).toBeLessThan(1_000);
    expect({ status: response.status, connection: response.headers.get("connection"), body: await response.json(), handled, bytes: l.budget.bytes }).toEqual({
      status: 408,
      connection: "close",
      body: { error: "RequestTimeout", message: expect.stringContaining("BODY_MIN_KIB_PER_SECOND") },
      handled: false,
      bytes: 0,
    });
  });

  test("a body that keeps the minimum rate is read whole, however long it takes", async () => {
    const l = { ...limits(10_000, 50), minBytesPerS: 1_000, rateWindowMs: 50 };
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await Bun.sleep(10);
        if (sent++ === 20) controller.close();
        else controller.enqueue(new Uint8Array(50));
      },
    });
    const request = new Request(url, { method: "POST", body, headers: { "content-type": "application/json", "content-length": "1000" } });
    let seen = -1;
    const response = await withBody(request, l, async (bytes) => {
      seen = bytes.byteLength;
      return ok();
    });
    expect({ status: response.status, seen }).toEqual({ status: 200, seen: 1_000 });
  });

  test("bodies admitted together that need more than the room wait for it; when every one waits, the newest gives up (503) at once and the other finishes", async () => {
    const l = { ...limits(1_000, 5_000), minBytesPerS: 0 };
    // Both admitted while nothing is held; then each sends half, then the other half.
    const a = fed(800);
    const b = fed(800);
    const answers = [withBody(a.request, l, ok), withBody(b.request, l, ok)];
    a.send(400);
    b.send(400);
    await Bun.sleep(5);
    expect(l.budget.bytes).toBe(800);
    const startedAt = performance.now();
    a.send(400);
    await Bun.sleep(5);
    expect(l.budget.waiting).toBe(1);
    b.send(400);
    a.end();
    b.end();
    const [first, second] = await Promise.all(answers);
    // Not the wait bound (5 s): the standstill is ended as soon as it exists.
    expect(performance.now() - startedAt).toBeLessThan(1_000);
    expect([first!.status, second!.status, l.budget.bytes]).toEqual([200, 503, 0]);
  });
});
