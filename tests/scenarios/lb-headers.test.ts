/**
 * What README says of chroma-lb's headers holds: every answer carries
 * `X-Chroma-LB-Instance` (the instance that served it, `none` when chroma-lb answered
 * itself), and every write answer carries `X-Chroma-LB-Position`, logged (202) ones included.
 */
import { afterAll, expect, test } from "bun:test";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const served = /^(primary|replica)$/;

const headersOf = async (res: Response) => {
  await res.arrayBuffer();
  return { status: res.status, instance: res.headers.get("x-chroma-lb-instance"), position: res.headers.get("x-chroma-lb-position") };
};

test("every answer names who served it, and every write answer its log position", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, HEALTH_CHECK_TIMEOUT: "0.3" });
  const position = expect.stringMatching(/^\d+$/);

  // Served by an instance.
  const created = await post(`${lb.url}${T}/collections`, { name: "docs" });
  const id = ((await created.clone().json()) as { id: string }).id;
  expect(await headersOf(created)).toEqual({ status: 200, instance: "primary", position });
  expect(await headersOf(await post(`${lb.url}${T}/collections/${id}/add`, { ids: ["a"], embeddings: [[1, 2]] }))).toEqual({ status: 201, instance: "primary", position });
  expect(await headersOf(await post(`${lb.url}${T}/collections/${id}/get`, {}))).toEqual({ status: 200, instance: expect.stringMatching(served), position: null });
  expect(await headersOf(await fetch(`${lb.url}/api/v2/heartbeat`))).toEqual({ status: 200, instance: expect.stringMatching(served), position: null });

  // Answered by chroma-lb itself.
  expect(await headersOf(await post(`${lb.url}${T}/collections`, { name: "docs" }))).toEqual({ status: 409, instance: "none", position: null });
  expect(await headersOf(await post(`${lb.url}${T}/collections/nope/add`, { ids: ["a"], embeddings: [[1, 2]] }))).toEqual({ status: 404, instance: "none", position: null });
  for (const path of ["/health", "/status", "/wal/status", "/metrics", "/events", "/dashboard", "/swagger", "/no-such-page"]) {
    expect({ path, ...(await headersOf(await fetch(`${lb.url}${path}`))) }).toEqual({ path, status: path === "/no-such-page" ? 404 : 200, instance: "none", position: null });
  }

  // Every instance down: a logged write (202) and a refused read, both chroma-lb's own.
  await Promise.all([primary!.kill("SIGKILL"), replica!.kill("SIGKILL")]);
  await waitFor(async () => (await json(`${lb.url}/health`)).healthy_instances === "0/2", { message: "both down" });
  expect(await headersOf(await post(`${lb.url}${T}/collections/${id}/add`, { ids: ["b"], embeddings: [[3, 4]] }))).toEqual({ status: 202, instance: "none", position });
  expect(await headersOf(await post(`${lb.url}${T}/collections/${id}/get`, {}))).toEqual({ status: 503, instance: "none", position: null });
}, 60_000);
