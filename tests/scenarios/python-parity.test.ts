/**
 * What the official Python client (1.0.5) reads on the wire, through chroma-lb and from a
 * lone Chroma 1.0.5, compared raw (the Python client cannot be installed here: PyPI is
 * unreachable). The three places the Python client saw a difference:
 * - `GET /api/v2` is Chroma's alias of the heartbeat (the async client's `heartbeat()`);
 * - an error chroma-lb writes itself (a duplicate create, for one) carries
 *   `chroma-trace-id` as Chroma's errors do: the Python client builds its error message
 *   from the body and that header, and without it raised a different message;
 * - a missing collection deleted by name is "does not exists" without a period (Chroma's
 *   period is for the routes that take an id).
 * The lone Chroma is one of chroma-lb's instances asked directly.
 */
import { afterAll, expect, test } from "bun:test";
import { killAll, startChromaServers, startLbInProcess } from "../support";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";

/** What a client can observe of an answer: status, body and the headers that matter here. */
async function observe(res: Response) {
  return {
    status: res.status,
    body: await res.text(),
    contentType: res.headers.get("content-type"),
    traceId: res.headers.get("chroma-trace-id"),
  };
}

const call = async (base: string, method: string, path: string, body?: unknown) =>
  observe(
    await fetch(base + path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
  );

/**
 * The message the Python client 1.0.5 raises for an error answer (`_raise_chroma_error`):
 * a known error kind becomes its class with the message; any other (Chroma's "ChromaError")
 * becomes `Exception(text)`, with " (trace ID: ...)" when the answer carries the header.
 */
function pythonClientMessage(answer: { body: string; traceId: string | null }): string {
  const known = new Set(["NotFoundError", "InvalidArgumentError", "UniqueConstraintError", "InternalError"]);
  try {
    const json = JSON.parse(answer.body) as { error?: string; message?: string };
    if (json.error && known.has(json.error)) return `${json.error}: ${json.message}`;
  } catch {
    // not JSON: the text itself
  }
  return answer.traceId ? `${answer.body} (trace ID: ${answer.traceId})` : answer.body;
}

test("GET /api/v2, chroma-lb's own errors and a missing collection deleted by name answer as a lone Chroma does", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const lone = primary!.url;

  // 1. GET /api/v2: the heartbeat.
  const [rootLb, rootLone] = [await call(lb.url, "GET", "/api/v2"), await call(lone, "GET", "/api/v2")];
  const heartbeat = { status: 200, body: expect.stringMatching(/^\{"nanosecond heartbeat":\d+\}$/), contentType: "application/json", traceId: null };
  expect(rootLone).toEqual(heartbeat);
  expect(rootLb).toEqual(heartbeat);
  // With a trailing slash it is no route of Chroma's.
  const [slashLb, slashLone] = [await call(lb.url, "GET", "/api/v2/"), await call(lone, "GET", "/api/v2/")];
  expect(slashLone).toMatchObject({ status: 404, body: "" });
  expect(slashLb).toEqual(slashLone);

  // 2. A duplicate create: chroma-lb answers it itself (from its mappings), as Chroma does.
  expect((await call(lb.url, "POST", `${T}/collections`, { name: "dup" })).status).toBe(200);
  const [dupLb, dupLone] = [await call(lb.url, "POST", `${T}/collections`, { name: "dup" }), await call(lone, "POST", `${T}/collections`, { name: "dup" })];
  expect(dupLone).toEqual({ status: 409, body: '{"error":"ChromaError","message":"Collection [dup] already exists"}', contentType: "application/json", traceId: expect.stringMatching(/^[0-9a-f]{32}$/) });
  expect(dupLb).toEqual(dupLone);
  expect(pythonClientMessage(dupLb)).toBe(pythonClientMessage(dupLone));

  // Other errors chroma-lb writes itself carry it too: a bad name, an unknown route.
  const badName = await call(lb.url, "POST", `${T}/collections`, { name: "x" });
  expect({ status: badName.status, traceId: badName.traceId }).toEqual({ status: 400, traceId: dupLone.traceId });
  const [unknownLb, unknownLone] = [await call(lb.url, "GET", "/api/v2/no-such-route"), await call(lone, "GET", "/api/v2/no-such-route")];
  expect(unknownLb).toEqual(unknownLone);
  expect(unknownLone).toMatchObject({ status: 404, body: "" });

  // 3. A missing collection deleted by name: no period; a missing id on a record route: a period.
  const [delLb, delLone] = [await call(lb.url, "DELETE", `${T}/collections/missing_one`), await call(lone, "DELETE", `${T}/collections/missing_one`)];
  expect(delLone).toEqual({ status: 404, body: '{"error":"NotFoundError","message":"Collection [missing_one] does not exists"}', contentType: "application/json", traceId: dupLone.traceId });
  expect(delLb).toEqual(delLone);
  const missingId = "11111111-2222-3333-4444-555555555555";
  const [countLb, countLone] = [await call(lb.url, "GET", `${T}/collections/${missingId}/count`), await call(lone, "GET", `${T}/collections/${missingId}/count`)];
  expect(countLone.body).toBe(`{"error":"NotFoundError","message":"Collection [${missingId}] does not exists."}`);
  expect(countLb).toEqual(countLone);
  const [getLb, getLone] = [await call(lb.url, "GET", `${T}/collections/missing_one`), await call(lone, "GET", `${T}/collections/missing_one`)];
  expect(getLb).toEqual(getLone);

  // Every answer says who served it; chroma-lb's own say `none`.
  expect((await fetch(`${lb.url}/api/v2`)).headers.get("x-chroma-lb-instance")).toMatch(/^(primary|replica)$/);
  expect((await fetch(`${lb.url}${T}/collections/missing_one`, { method: "DELETE" })).headers.get("x-chroma-lb-instance")).toBe("none");
}, 60_000);
