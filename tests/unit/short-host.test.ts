/**
 * Routing follows the request's path whatever its Host header: Elysia by default finds the
 * path by searching for "/" from a fixed offset of the URL, which a Host of three
 * characters or fewer puts past the path's first slash. And an admin path is refused for a
 * missing token before its body is read, whatever the Host.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import net from "node:net";
import { startLbInProcess, type LbInProcess } from "../support";

function fakeChroma() {
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(request) {
      const path = new URL(request.url).pathname;
      if (path === "/api/v2/heartbeat") return Response.json({ "nanosecond heartbeat": 1 });
      if (path === "/api/v2/version") return Response.json("1.0.5");
      if (path.endsWith("/collections")) return Response.json([]);
      if (path.endsWith("/databases")) return Response.json([{ id: "d", name: "default_database", tenant: "default_tenant" }]);
      return new Response(null, { status: 404 });
    },
  });
  return { server, url: `http://127.0.0.1:${server.port}` };
}

const primary = fakeChroma();
const replica = fakeChroma();
let lb: LbInProcess;

beforeAll(async () => {
  lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary.url, CHROMA_REPLICA_URL: replica.url, ADMIN_TOKEN: "s3cret" });
});

afterAll(async () => {
  await lb?.[Symbol.asyncDispose]();
  primary.server.stop(true);
  replica.server.stop(true);
});

/** Sends one request as raw bytes, with exactly the Host line given, and answers the status line and body. */
function rawRequest(port: number, head: string, body = ""): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(`${head}\r\nConnection: close\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    let out = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => (out += chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const [statusLine = "", ...rest] = out.split("\r\n");
      const bodyText = out.slice(out.indexOf("\r\n\r\n") + 4);
      resolve({ status: Number(statusLine.split(" ")[1]), body: rest.length ? bodyText : "" });
    });
  });
}

const hosts = ["a", "ab", "abc", "abcd", "127.0.0.1", ""];

test("API and status paths are routed by their real path whatever the Host header", async () => {
  const answers = [];
  for (const host of hosts) {
    const hostLine = host === "" ? "Host:" : `Host: ${host}`;
    const heartbeat = await rawRequest(lb.port, `GET /api/v2/heartbeat HTTP/1.1\r\n${hostLine}`);
    const version = await rawRequest(lb.port, `GET /api/v2/version HTTP/1.1\r\n${hostLine}`);
    const health = await rawRequest(lb.port, `GET /health HTTP/1.1\r\n${hostLine}`);
    answers.push({ host, heartbeat: heartbeat.status, version: [version.status, version.body], health: health.status });
  }
  expect(answers).toEqual(hosts.map((host) => ({ host, heartbeat: 200, version: [200, '"1.0.5"'], health: 200 })));
});

test("an admin request without the token is refused before its body is judged, whatever the Host header", async () => {
  const answers = [];
  for (const host of hosts) {
    const hostLine = host === "" ? "Host:" : `Host: ${host}`;
    const mapping = await rawRequest(lb.port, `POST /admin/create_mapping HTTP/1.1\r\n${hostLine}\r\nContent-Type: application/json`, '{"bad":');
    const cleanup = await rawRequest(lb.port, `POST /wal/cleanup HTTP/1.1\r\n${hostLine}\r\nContent-Type: application/json`, '{"max_age_hours":"x"}');
    const authorized = await rawRequest(lb.port, `GET /admin/instances HTTP/1.1\r\n${hostLine}\r\nAuthorization: Bearer s3cret`);
    // With the token, the body arrives whole and is judged.
    const judged = await rawRequest(lb.port, `POST /wal/cleanup HTTP/1.1\r\n${hostLine}\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json`, '{"max_age_hours":"x"}');
    const cleaned = await rawRequest(lb.port, `POST /wal/cleanup HTTP/1.1\r\n${hostLine}\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json`, '{"max_age_hours":1}');
    answers.push({ host, mapping: mapping.status, cleanup: cleanup.status, authorized: authorized.status, judged: judged.status, cleaned: [cleaned.status, cleaned.body] });
  }
  expect(answers).toEqual(
    hosts.map((host) => ({ host, mapping: 401, cleanup: 401, authorized: 200, judged: 422, cleaned: [200, '{"deleted_entries":0,"reset_entries":0,"cleaned":0}'] })),
  );
});
