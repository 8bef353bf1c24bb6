/**
 * The Postgres log store going away (LOG_STORE=postgres, a Postgres server of the test's own
 * that is SIGKILLed and restarted): writes answer 503 in Chroma's error shape with
 * Retry-After and nothing is acknowledged without a durable entry; reads go on from the
 * instances; `log_store_unreachable` fires; writes are taken again by themselves within 15 s
 * of the server's return, and every acknowledged write is on both instances.
 */
import { afterAll, expect, test } from "bun:test";
import { alertReceiver } from "../support/alerts";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { startPgServer } from "../support/pg-server";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";

async function post(url: string, body: unknown) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, retryAfter: res.headers.get("retry-after"), instance: res.headers.get("x-chroma-lb-instance"), json: (await res.json()) as any };
}

const addBody = (id: string) => ({ ids: [id], embeddings: [[id.length / 10, 0.5]], documents: [`doc ${id}`] });

test("Postgres SIGKILLed: writes answer 503 with Retry-After, reads go on, the alert fires, writes resume within 15 s of its return", async () => {
  await using pg = await startPgServer();
  const databaseUrl = await pg.freshDatabase("chroma_lb");
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  using hook = alertReceiver();
  await using lb = await startLbInProcess({
    CHROMA_PRIMARY_URL: primary!.url,
    CHROMA_REPLICA_URL: replica!.url,
    LOG_STORE: "postgres",
    DATABASE_URL: databaseUrl,
    ALERT_WEBHOOK_URL: hook.url,
    ALERT_CHECK_INTERVAL: "1",
  });

  const created = await post(`${lb.url}${T}/collections`, { name: "outage" });
  expect(created.status).toBe(200);
  const id = created.json.id as string;
  const acknowledged: string[] = [];
  for (const record of ["a", "b"]) {
    expect((await post(`${lb.url}${T}/collections/${id}/add`, addBody(record))).status).toBe(201);
    acknowledged.push(record);
  }
  await waitFor(async () => ((await (await fetch(`${lb.url}/wal/status`)).json()) as { pending_writes: number }).pending_writes === 0, { message: "both instances hold the first writes" });

  await pg.kill();

  // Writes: refused in Chroma's shape with Retry-After while the log cannot take them.
  const refused = await post(`${lb.url}${T}/collections/${id}/add`, addBody("lost"));
  expect({ status: refused.status, retryAfter: refused.retryAfter, error: refused.json.error }).toEqual({ status: 503, retryAfter: "5", error: "ServiceUnavailable" });
  expect(refused.json.message).toEqual(expect.any(String));
  const again = await post(`${lb.url}${T}/collections/${id}/add`, addBody("lost2"));
  expect(again.status).toBe(503);

  // Reads: from the instances, with everything acknowledged.
  const read = await post(`${lb.url}${T}/collections/${id}/get`, {});
  expect({ status: read.status, ids: [...read.json.ids].sort() }).toEqual({ status: 200, ids: acknowledged });

  await waitFor(() => hook.rows().includes("log_store_unreachable firing -"), { timeoutMs: 10_000, message: "log_store_unreachable alert" });

  // Back: writes are taken again by themselves within 15 s.
  await pg.restart();
  const backMs = performance.now();
  await waitFor(async () => (await post(`${lb.url}${T}/collections/${id}/add`, addBody("c"))).status === 201, {
    timeoutMs: 15_000,
    intervalMs: 200,
    message: "a write acknowledged after Postgres's return",
  });
  acknowledged.push("c");
  console.log(`log-store-outage: writes taken again ${Math.round(performance.now() - backMs)} ms after Postgres took connections`);
  await waitFor(() => hook.rows().includes("log_store_unreachable resolved -"), { timeoutMs: 10_000, message: "log_store_unreachable resolved" });

  // Every acknowledged write, and nothing refused, on both instances.
  await waitFor(async () => ((await (await fetch(`${lb.url}/wal/status`)).json()) as { pending_writes: number }).pending_writes === 0, { message: "both instances caught up" });
  for (const server of [primary!, replica!]) {
    const listed = (await (await fetch(`${server.url}${T}/collections/outage`)).json()) as { id: string };
    const got = await post(`${server.url}${T}/collections/${listed.id}/get`, {});
    expect([...got.json.ids].sort()).toEqual(acknowledged);
  }
}, 120_000);
