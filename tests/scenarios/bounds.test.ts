/**
 * Bounded resources, against real Chroma servers: a body over MAX_BODY_MB is refused in
 * Chroma's JSON error shape and logs nothing (and the default matches what Chroma 1.0.5
 * accepts); past MAX_INFLIGHT_MB a request is answered 503 with Retry-After while the others
 * succeed; at WAL_MAX_DISK_MB new writes are answered 507, with one alert, and every write
 * acknowledged before still reaches both instances.
 */
import { afterAll, expect, test } from "bun:test";
import net from "node:net";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json } from "../support/http";
import { postRaw } from "../support/raw";
import { alertReceiver } from "../support/alerts";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
/** What Chroma 1.0.5 accepts at most (measured: 41,943,041 bytes is answered 413). */
const chromaBodyBytesMax = 40 * 1024 * 1024;

/** An add of one record whose JSON text is exactly `bytes` long (padded with spaces, which JSON allows). */
function addOfSize(id: string, bytes: number): Uint8Array {
  const text = `{"ids":[${JSON.stringify(id)}],"embeddings":[[1.0,2.0]],"documents":["doc ${id}"]}`;
  const body = new Uint8Array(bytes).fill(0x20);
  body.set(new TextEncoder().encode(text));
  return body;
}

/** An add of one record whose document makes its body about `bytes` long. */
function addWithDocument(id: string, bytes: number): string {
  return JSON.stringify({ ids: [id], embeddings: [[1, 2]], documents: ["d".repeat(bytes - 80)] });
}

async function post(url: string, body: Uint8Array | string | ReadableStream<Uint8Array>) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

async function createCollection(lbUrl: string, name: string): Promise<string> {
  const created = await postRaw(`${lbUrl}${T}/collections`, JSON.stringify({ name, configuration: {} }));
  expect(created.status).toBe(200);
  return (JSON.parse(created.text) as { id: string }).id;
}

/** The ids each instance holds in the collection, read from the instances directly. */
async function idsOnInstances(lbUrl: string, name: string, urls: Record<string, string>): Promise<Record<string, string[]>> {
  const { mappings } = await json(`${lbUrl}/collection/mappings`);
  const uuids = mappings.find((m: { collection_name: string }) => m.collection_name === name).instances as Record<string, string>;
  const out: Record<string, string[]> = {};
  for (const [instance, url] of Object.entries(urls)) {
    const got = await json<{ ids: string[] }>(`${url}${T}/collections/${uuids[instance]}/get`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ include: [] }),
    });
    out[instance] = got.ids.sort();
  }
  return out;
}

/**
 * A client that sends its headers (with Content-Length) and all of its body but the last
 * KiB, then waits for `finish()`: the bytes sent are held in chroma-lb's budget meanwhile.
 */
function slowAdd(lbUrl: string, path: string, body: Uint8Array) {
  const { hostname, port } = new URL(lbUrl);
  const socket = net.connect(Number(port), hostname);
  const head =
    `POST ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${body.byteLength}\r\nConnection: close\r\n\r\n`;
  socket.write(head);
  socket.write(body.subarray(0, body.byteLength - 1024));
  const chunks: Buffer[] = [];
  const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(raw)?.[1] ?? 0);
      resolve({ status, text: raw.slice(raw.indexOf("\r\n\r\n") + 4) });
    });
  });
  return { answer, finish: () => socket.write(body.subarray(body.byteLength - 1024)) };
}

test("MAX_BODY_MB's default is what Chroma accepts: 40 MiB passes to both instances, one byte more is refused in Chroma's JSON shape and logs nothing", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  expect(lb.config.maxBodyBytes).toBe(chromaBodyBytesMax);
  const id = await createCollection(lb.url, "large_bodies");
  const head = (await json(`${lb.url}/wal/status`)).head_position;

  const largest = await post(`${lb.url}${T}/collections/${id}/add`, addOfSize("largest", chromaBodyBytesMax));
  expect(largest.status).toBe(201);

  const over = await post(`${lb.url}${T}/collections/${id}/add`, addOfSize("over", chromaBodyBytesMax + 1));
  expect(over.status).toBe(413);
  expect(over.headers.get("content-type")).toBe("application/json");
  const error = JSON.parse(over.text) as { error: string; message: string };
  expect(error.error).toBe("ChromaError");
  expect(error.message).toContain(`${chromaBodyBytesMax + 1} bytes`);
  expect(error.message).toContain("MAX_BODY_MB");

  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "the 40 MiB add reached the replica" });
  const wal = await json(`${lb.url}/wal/status`);
  expect({ head: wal.head_position, rejected: wal.rejected_entries }).toEqual({ head: head + 1, rejected: 0 });
  expect(await idsOnInstances(lb.url, "large_bodies", { primary: primary!.url, replica: replica!.url })).toEqual({
    primary: ["largest"],
    replica: ["largest"],
  });
}, 120_000);

test("a body far over MAX_BODY_MB, or sent without Content-Length, or to chroma-lb's own routes, is refused in Chroma's JSON shape too", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, MAX_BODY_MB: "1" });
  const id = await createCollection(lb.url, "chunked_bodies");
  const head = (await json(`${lb.url}/wal/status`)).head_position;
  const body = addOfSize("chunked", 1024 * 1024 + 64 * 1024);
  const stream = (bytes: Uint8Array) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.byteLength; at += 64 * 1024) controller.enqueue(bytes.slice(at, at + 64 * 1024));
        controller.close();
      },
    });
  const over = await post(`${lb.url}${T}/collections/${id}/add`, stream(body));
  expect({ status: over.status, error: (JSON.parse(over.text) as { error: string }).error }).toEqual({ status: 413, error: "ChromaError" });
  // Bun's own limit would answer these with an empty 413.
  for (const path of [`${T}/collections/${id}/add`, "/wal/cleanup"]) {
    const far = await post(`${lb.url}${path}`, addOfSize("far", 5 * 1024 * 1024));
    expect({ status: far.status, type: far.headers.get("content-type"), error: (JSON.parse(far.text) as { error: string }).error }).toEqual({
      status: 413,
      type: "application/json",
      error: "ChromaError",
    });
  }
  const fits = await post(`${lb.url}${T}/collections/${id}/add`, stream(addOfSize("fits", 512 * 1024)));
  expect(fits.status).toBe(201);
  expect((await json(`${lb.url}/wal/status`)).head_position).toBe(head + 1);
});

test("an instance's plain-text 413 reaches the client in Chroma's JSON error shape, and the write is replayed nowhere", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  // MAX_BODY_MB above what Chroma accepts: the instance refuses the body itself.
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, MAX_BODY_MB: "41" });
  const id = await createCollection(lb.url, "refused_large");
  const refused = await post(`${lb.url}${T}/collections/${id}/add`, addOfSize("too_large", chromaBodyBytesMax + 1));
  expect(refused.status).toBe(413);
  expect(refused.headers.get("content-type")).toBe("application/json");
  expect(JSON.parse(refused.text)).toEqual({ error: "ChromaError", message: "Payload too large" });
  const wal = await json(`${lb.url}/wal/status`);
  expect({ pending: wal.pending_writes, rejected: wal.rejected_entries }).toEqual({ pending: 0, rejected: 1 });
  expect(await idsOnInstances(lb.url, "refused_large", { primary: primary!.url, replica: replica!.url })).toEqual({ primary: [], replica: [] });
}, 120_000);

test("past MAX_INFLIGHT_MB requests wait, then answer 503 with Retry-After and log nothing; the others succeed", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    MAX_BODY_MB: "1",
    MAX_INFLIGHT_MB: "1",
    INFLIGHT_WAIT_TIMEOUT: "0.3",
    // The slow client pauses on purpose: no minimum rate here (the next test has one).
    BODY_MIN_KIB_PER_SECOND: "0",
  });
  const id = await createCollection(lb.url, "inflight");
  const addPath = `${T}/collections/${id}/add`;
  const head = (await json(`${lb.url}/wal/status`)).head_position;

  // A slow client holds the 800 KB it sent of the 1 MiB budget while its last KiB is missing.
  const slowBody = new TextEncoder().encode(addWithDocument("slow", 800 * 1024));
  const slow = slowAdd(lb.url, addPath, slowBody);
  const sentBytes = slowBody.byteLength - 1024;
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).inflight_body_bytes === sentBytes, { message: "the bytes sent are counted" });
  const held = await json(`${lb.url}/wal/status`);
  expect({ bytes: held.inflight_body_bytes, max: held.inflight_body_max_bytes }).toEqual({ bytes: sentBytes, max: 1024 * 1024 });
  expect(await (await fetch(`${lb.url}/metrics`)).text()).toContain(`chroma_lb_inflight_body_bytes ${sentBytes}`);

  // None of these fits beside it: each waits 0.3 s, then is refused unread.
  const started = performance.now();
  const excess = await Promise.all(Array.from({ length: 4 }, (_, i) => post(`${lb.url}${addPath}`, addWithDocument(`excess-${i}`, 300 * 1024))));
  expect(performance.now() - started).toBeGreaterThanOrEqual(250);
  for (const answer of excess) {
    expect(answer.status).toBe(503);
    expect(answer.headers.get("retry-after")).toBe("1");
    const error = JSON.parse(answer.text) as { error: string; message: string };
    expect(error.error).toBe("ServiceUnavailable");
    expect(error.message).toContain("MAX_INFLIGHT_MB");
  }

  slow.finish();
  expect((await slow.answer).status).toBe(201);
  // Retried together once the budget is free (and smaller, so all four fit at once), they succeed.
  const retried = await Promise.all(Array.from({ length: 4 }, (_, i) => post(`${lb.url}${addPath}`, addWithDocument(`excess-${i}`, 200 * 1024))));
  expect(retried.map((a) => a.status)).toEqual([201, 201, 201, 201]);

  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "every write reached the replica" });
  const after = await json(`${lb.url}/wal/status`);
  expect({ head: after.head_position, inflight: after.inflight_body_bytes, refused: after.inflight_refused_requests }).toEqual({
    head: head + 5,
    inflight: 0,
    refused: 4,
  });
  const ids = ["excess-0", "excess-1", "excess-2", "excess-3", "slow"];
  expect(await idsOnInstances(lb.url, "inflight", { primary: primary!.url, replica: replica!.url })).toEqual({ primary: ids, replica: ids });
}, 60_000);

/** A raw client that declares `declaredBytes` of body and sends `sentBytes` of it, then nothing; its answer, if any. */
function stalledSender(lbUrl: string, path: string, declaredBytes: number, sentBytes: number) {
  const { hostname, port } = new URL(lbUrl);
  const socket = net.connect(Number(port), hostname);
  socket.write(`POST ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nContent-Type: application/json\r\nContent-Length: ${declaredBytes}\r\n\r\n`);
  socket.write(new Uint8Array(sentBytes).fill(0x20));
  let raw = "";
  const answer = new Promise<number>((resolve) => {
    socket.on("data", (chunk: Buffer) => {
      raw += chunk.toString("utf8");
      const status = /^HTTP\/1\.1 (\d+)/.exec(raw)?.[1];
      if (status) resolve(Number(status));
    });
    socket.on("error", () => resolve(0));
    socket.on("close", () => resolve(0));
  });
  return { answer, close: () => socket.destroy() };
}

test("slow senders that declare large bodies and trickle cannot starve other clients' writes, and a stalled body is cut off and its bytes released", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    // The defaults (MAX_BODY_MB 40, MAX_INFLIGHT_MB 128, INFLIGHT_WAIT_TIMEOUT 2 s), with a
    // short rate window so that the test does not wait 5 s for the cut-off.
    BODY_RATE_WINDOW: "1",
  });
  const id = await createCollection(lb.url, "slow_senders");
  const addPath = `${T}/collections/${id}/add`;

  // Four clients each declare almost 40 MiB (160 MiB together, past MAX_INFLIGHT_MB) and send one byte.
  const declared = chromaBodyBytesMax - 1024;
  const slow = Array.from({ length: 4 }, () => stalledSender(lb.url, addPath, declared, 1));
  // A fifth sends 30 MiB at once, then stalls: those bytes are held until it is cut off.
  const stalled = stalledSender(lb.url, addPath, declared, 30 * 1024 * 1024);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).inflight_body_bytes >= 30 * 1024 * 1024, { message: "the stalled sender's bytes are counted" });

  // Every other client's write is taken at once, none answered 503.
  const started = performance.now();
  const others = await Promise.all(Array.from({ length: 8 }, (_, i) => post(`${lb.url}${addPath}`, addWithDocument(`other-${i}`, 64 * 1024))));
  expect({ statuses: others.map((a) => a.status), refused: (await json(`${lb.url}/wal/status`)).inflight_refused_requests }).toEqual({
    statuses: Array(8).fill(201),
    refused: 0,
  });
  expect(performance.now() - started).toBeLessThan(2_000);

  // The senders that stopped are cut off (408) within a window or two; nothing of theirs stays held or logged.
  expect(await Promise.all([stalled.answer, ...slow.map((s) => s.answer)])).toEqual([408, 408, 408, 408, 408]);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).inflight_body_bytes === 0, { message: "every byte released" });
  for (const s of [stalled, ...slow]) s.close();
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "every write reached the replica" });
  const ids = Array.from({ length: 8 }, (_, i) => `other-${i}`);
  expect(await idsOnInstances(lb.url, "slow_senders", { primary: primary!.url, replica: replica!.url })).toEqual({ primary: ids, replica: ids });
}, 60_000);

test("at WAL_MAX_DISK_MB new writes answer 507 with one alert, and every write acknowledged before reaches both instances", async () => {
  using receiver = alertReceiver();
  const alerts = receiver.alerts;
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    WAL_MAX_DISK_MB: "1",
    ALERT_WEBHOOK_URL: receiver.url,
    // chroma-lb runs inside the test runner here, whose RSS the earlier 40 MiB bodies of this
    // file raise past the 400 MB default: the memory alert is not what this test judges.
    WAL_MAX_MEMORY_MB: "100000",
  });
  const id = await createCollection(lb.url, "disk_bound");
  const acknowledged: string[] = [];
  let refused: Awaited<ReturnType<typeof post>> | null = null;
  for (let i = 0; i < 60 && !refused; i++) {
    const answer = await post(`${lb.url}${T}/collections/${id}/add`, addWithDocument(`r${i}`, 100 * 1024));
    if (answer.status === 201) acknowledged.push(`r${i}`);
    else if (answer.status === 507) refused = answer;
    else throw new Error(`unexpected answer ${answer.status}: ${answer.text}`);
  }
  expect(refused).not.toBeNull();
  expect(acknowledged.length).toBeGreaterThan(0);
  expect(refused!.headers.get("content-type")).toBe("application/json");
  expect(refused!.headers.get("retry-after")).toBe("5");
  const error = JSON.parse(refused!.text) as { error: string; message: string };
  expect(error.error).toBe("InsufficientStorage");
  for (const hint of ["WAL_MAX_DISK_MB", "POST /wal/cleanup", "WAL_RETENTION_HOURS"]) expect(error.message).toContain(hint);

  // Every write is refused while the log is full, deletes included, and the alert is sent once.
  const again = await post(`${lb.url}${T}/collections/${id}/add`, addWithDocument("again", 1024));
  const deleted = await fetch(`${lb.url}${T}/collections/disk_bound`, { method: "DELETE" });
  expect([again.status, deleted.status]).toEqual([507, 507]);
  await waitFor(() => alerts.length > 0, { message: "the disk alert" });
  const status = await json(`${lb.url}/wal/status`);
  expect(status.disk_max_bytes).toBe(1024 * 1024);
  expect(status.disk_bytes).toBeGreaterThanOrEqual(1024 * 1024);
  expect(status.disk_full).toBe(true);
  expect(await (await fetch(`${lb.url}/metrics`)).text()).toMatch(/chroma_lb_wal_disk_bytes \d+/);
  expect(alerts.map((a) => a.event)).toEqual(["wal_disk_full"]);

  // Reads go on, and what was acknowledged reaches both instances.
  const count = await fetch(`${lb.url}${T}/collections/${id}/count`);
  expect(await count.json()).toBe(acknowledged.length);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "replay drained" });
  const sorted = [...acknowledged].sort();
  expect(await idsOnInstances(lb.url, "disk_bound", { primary: primary!.url, replica: replica!.url })).toEqual({ primary: sorted, replica: sorted });
  expect(alerts.map((a) => a.event)).toEqual(["wal_disk_full"]);

  // Once applied entries are removed, writes are taken again.
  const cleanup = await fetch(`${lb.url}/wal/cleanup`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ max_age_hours: 0 }) });
  expect(cleanup.status).toBe(200);
  // The freed pages no longer count (the size is sampled every 250 ms).
  await waitFor(async () => (await post(`${lb.url}${T}/collections/${id}/add`, addWithDocument("after_cleanup", 1024))).status === 201, {
    message: "writes taken after cleanup",
  });
  expect((await json(`${lb.url}/wal/status`)).disk_bytes).toBeLessThan(1024 * 1024);
}, 60_000);
