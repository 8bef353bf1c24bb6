/**
 * How the workload classifies a request that fails, against a real server process: a request
 * in flight when the server is SIGKILLed may have taken effect (indeterminate), and only a
 * connection refused before anything was sent is failed. Bun's fetch retries a request whose
 * pooled connection the server closed, and reports that retry's ECONNREFUSED (seed 701998937
 * with LOG_STORE=postgres); the workload's own connection per request must keep a request
 * in flight from ever looking refused.
 */
import { afterEach, expect, test } from "bun:test";
import { freePort, waitFor } from "../support";
import { classifyError, requestInit } from "./workload";

/** Holds every /slow request (after reading its body) and counts them at /arrived. */
const serverCode = `
let arrived = 0;
Bun.serve({ port: Number(process.env.PORT), hostname: "127.0.0.1", async fetch(req) {
  const path = new URL(req.url).pathname;
  if (path === "/arrived") return new Response(String(arrived));
  await req.text();
  if (path === "/slow") { arrived += 1; await Bun.sleep(60_000); }
  return new Response("ok");
} });
`;

let server: ReturnType<typeof Bun.spawn> | null = null;
afterEach(() => {
  server?.kill("SIGKILL");
  server = null;
});

const outcomeOf = (promise: Promise<Response>) => promise.then((res) => ({ outcome: "answered", status: res.status }), (error) => classifyError(error));

test("a request in flight on a SIGKILLed server is indeterminate; a refused connect is failed", async () => {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  server = Bun.spawn([process.execPath, "-e", serverCode], { env: { ...process.env, PORT: String(port) }, stdout: "ignore", stderr: "inherit" });
  await waitFor(async () => (await fetch(`${url}/arrived`, requestInit)).ok, { message: "the server answers" });
  // Earlier requests, as a client of the run has made, so pooled connections would be reused.
  for (let i = 0; i < 5; i++) expect((await fetch(`${url}/fast`, { method: "POST", body: "w", ...requestInit })).status).toBe(200);

  const inFlight = Array.from({ length: 3 }, () => outcomeOf(fetch(`${url}/slow`, { method: "DELETE", signal: AbortSignal.timeout(15_000), ...requestInit })));
  await waitFor(async () => (await (await fetch(`${url}/arrived`, requestInit)).text()) === "3", { message: "three requests in flight" });
  server.kill("SIGKILL");
  await server.exited;

  for (const result of await Promise.all(inFlight)) expect(result).toMatchObject({ outcome: "indeterminate" });
  expect(await outcomeOf(fetch(`${url}/slow`, { method: "DELETE", ...requestInit }))).toEqual({ outcome: "failed", error: "connection refused" });
});
