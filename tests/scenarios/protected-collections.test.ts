/**
 * Protection follows the instances' collections, not the names chroma-lb's mappings give
 * them: no mapping may point at a protected collection's UUIDs under another name, nor
 * replace them, and a rename or delete is refused when its target is, on any instance, a
 * protected collection (even through a mapping made before this rule).
 */
import { Database } from "bun:sqlite";
import path from "node:path";
import { afterAll, expect, test } from "bun:test";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json, post } from "../support/http";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const token = "s3cret";
const admin = { authorization: `Bearer ${token}`, "content-type": "application/json" };

interface Mapping {
  collection_name: string;
  collection_id: string;
  instances: Record<string, string>;
}

async function mappings(lbUrl: string): Promise<Mapping[]> {
  return (await json<{ mappings: Mapping[] }>(`${lbUrl}/collection/mappings`, { headers: admin })).mappings;
}

const createMapping = (lbUrl: string, body: Record<string, string | undefined>) => fetch(`${lbUrl}/admin/create_mapping`, { method: "POST", headers: admin, body: JSON.stringify(body) });
const rename = (lbUrl: string, ref: string, newName: string) =>
  fetch(`${lbUrl}${T}/collections/${ref}`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ new_name: newName }) });
const drop = (lbUrl: string, ref: string) => fetch(`${lbUrl}${T}/collections/${ref}`, { method: "DELETE" });

/** Names and record counts of every collection on an instance, read directly. */
async function contents(url: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const c of await json<Array<{ id: string; name: string }>>(`${url}${T}/collections`)) {
    out[c.name] = await json<number>(`${url}${T}/collections/${c.id}/count`);
  }
  return out;
}

test("no mapping reaches a protected collection under another name, and renames and deletes check what their target is on each instance", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  const env = { CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, ADMIN_TOKEN: token, PROTECTED_COLLECTIONS: "global,vault" };
  await using lb = await startLbInProcess(env);
  for (const name of ["global", "scratch"]) expect((await post(`${lb.url}${T}/collections`, { name, configuration: {} })).status).toBe(200);
  const add = await post(`${lb.url}${T}/collections/global/add`, { ids: ["g1", "g2"], embeddings: [[1, 2], [3, 4]] });
  expect(add.status).toBe(201);
  await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "global on both instances" });
  const before = await mappings(lb.url);
  const global = before.find((m) => m.collection_name === "global")!;
  const scratch = before.find((m) => m.collection_name === "scratch")!;
  const expected = { global: 2, scratch: 0 };
  expect([await contents(primary!.url), await contents(replica!.url)]).toEqual([expected, expected]);

  // An alias of global's UUIDs, of either one alone, and global's own UUIDs replaced: all 403.
  const attempts = [
    { collection_name: "alias_g", primary_id: global.instances.primary!, replica_id: global.instances.replica! },
    { collection_name: "alias_p", primary_id: global.instances.primary! },
    { collection_name: "alias_r", replica_id: global.instances.replica! },
    { collection_name: "scratch", primary_id: global.instances.primary! },
    { collection_name: "global", primary_id: scratch.instances.primary!, replica_id: scratch.instances.replica! },
    { collection_name: "global", replica_id: scratch.instances.replica! },
  ];
  const answers = [];
  for (const attempt of attempts) {
    const res = await createMapping(lb.url, attempt);
    answers.push({ attempt: attempt.collection_name, status: res.status, error: ((await res.json()) as { error: string }).error });
  }
  expect(answers).toEqual(attempts.map((a) => ({ attempt: a.collection_name, status: 403, error: "Forbidden" })));
  // Repairing global's mapping with its own UUIDs is still allowed.
  expect((await createMapping(lb.url, { collection_name: "global", primary_id: global.instances.primary!, replica_id: global.instances.replica! })).status).toBe(200);
  expect(await mappings(lb.url)).toEqual(before.map((m) => ({ ...m, updated_at: expect.any(String) })));

  // A protected collection chroma-lb has not mapped yet, found on the instances by its name.
  const vaultUuids: string[] = [];
  for (const server of [primary!, replica!]) {
    const res = await post(`${server.url}${T}/collections`, { name: "vault", configuration: {} });
    vaultUuids.push(((await res.json()) as { id: string }).id);
  }
  const vaultAlias = await createMapping(lb.url, { collection_name: "alias_v", primary_id: vaultUuids[0]!, replica_id: vaultUuids[1]! });
  expect(vaultAlias.status).toBe(403);

  // A mapping made before this rule: alias_g points at global's UUIDs in chroma-lb's own store.
  await lb.stop();
  const store = new Database(path.join(lb.dataDir, "chroma-lb.sqlite"));
  const now = Date.now();
  const aliasId = crypto.randomUUID();
  store.run("INSERT INTO collections (id, tenant, database, name, status, created_at_ms, updated_at_ms) VALUES (?, 'default_tenant', 'default_database', 'alias_g', 'active', ?, ?)", [aliasId, now, now]);
  for (const instance of ["primary", "replica"]) {
    store.run("INSERT INTO collection_instances (collection_id, instance, instance_uuid, updated_at_ms) VALUES (?, ?, ?, ?)", [aliasId, instance, global.instances[instance]!, now]);
  }
  store.close();
  await using restarted = await startLbInProcess({ ...env, DATA_DIR: lb.dataDir });

  const refusals = [];
  for (const [what, res] of [
    ["rename alias_g", await rename(restarted.url, "alias_g", "alias_moved")],
    ["rename by alias id", await rename(restarted.url, aliasId, "alias_moved")],
    ["delete alias_g", await drop(restarted.url, "alias_g")],
    ["rename global", await rename(restarted.url, "global", "global_moved")],
    ["delete global", await drop(restarted.url, "global")],
    ["delete vault", await drop(restarted.url, "vault")],
  ] as const) {
    refusals.push({ what, status: res.status, error: ((await res.json()) as { error: string }).error });
  }
  expect(refusals).toEqual(refusals.map(({ what }) => ({ what, status: 403, error: "Forbidden" })));
  // Other collections are still renamed and deleted.
  expect((await rename(restarted.url, "scratch", "scratch_moved")).status).toBe(200);
  expect((await drop(restarted.url, "scratch_moved")).status).toBe(200);
  await waitFor(async () => (await json(`${restarted.url}/wal/status`)).pending_writes === 0, { message: "the allowed changes on both instances" });
  const after = { global: 2, vault: 0 };
  expect([await contents(primary!.url), await contents(replica!.url)]).toEqual([after, after]);
});
