/**
 * Issue 14, without filling a disk: a log entry whose state change fails after its durable
 * append, and an entry left in its first state by any cause, against real Chroma servers.
 * The failure is injected with a trigger on chroma-lb's SQLite file (a second connection),
 * raising SQLite's own "database or disk is full" text where a full disk would.
 *
 * What must hold: the write is answered (it is durable and applied), the entry is kept and
 * retried and shown in /wal/status, no later write of its collection overtakes it on any
 * instance, and an instance never takes a write past an entry of the collection it still
 * owes (the bug: a delete replayed after the upsert that followed it, losing the upsert).
 */
import { Database } from "bun:sqlite";
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { killAll, startChromaServers, startLbInProcess, waitFor } from "../support";
import { json } from "../support/http";
import { postRaw } from "../support/raw";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";

async function createCollection(lbUrl: string, name: string): Promise<string> {
  const created = await postRaw(`${lbUrl}${T}/collections`, JSON.stringify({ name, configuration: {} }));
  expect(created.status).toBe(200);
  return (JSON.parse(created.text) as { id: string }).id;
}

const upsertBody = (id: string, value: string) => JSON.stringify({ ids: [id], embeddings: [[1, 2]], documents: [value] });

async function write(lbUrl: string, collectionId: string, op: "upsert" | "delete", body: string) {
  const res = await fetch(`${lbUrl}${T}/collections/${collectionId}/${op}`, { method: "POST", headers: { "content-type": "application/json" }, body });
  return { status: res.status, instance: res.headers.get("x-chroma-lb-instance"), retryAfter: res.headers.get("retry-after"), text: await res.text() };
}

/** The document of record `id` on each instance, read from the instances directly (null: no such record). */
async function documentsOnInstances(lbUrl: string, name: string, id: string, urls: Record<string, string>): Promise<Record<string, string | null>> {
  const { mappings } = await json(`${lbUrl}/collection/mappings`);
  const uuids = mappings.find((m: { collection_name: string }) => m.collection_name === name).instances as Record<string, string>;
  const out: Record<string, string | null> = {};
  for (const [instance, url] of Object.entries(urls)) {
    const got = await json<{ ids: string[]; documents: Array<string | null> }>(`${url}${T}/collections/${uuids[instance]}/get`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ids: [id], include: ["documents"] }),
    });
    out[instance] = got.ids.length ? (got.documents[0] ?? null) : null;
  }
  return out;
}

async function setHealth(lbUrl: string, instance: string, healthy: boolean) {
  const res = await fetch(`${lbUrl}/admin/instances/${instance}/health`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ healthy, duration_seconds: 120 }),
  });
  expect(res.status).toBe(200);
}

const drained = (lbUrl: string) =>
  waitFor(async () => (await json(`${lbUrl}/wal/status`)).pending_writes === 0, { timeoutMs: 30_000, message: "both instances applied the whole log" });

/** A second connection to chroma-lb's SQLite file, for injecting faults. */
function openSide(dataDir: string): Database {
  const side = new Database(join(dataDir, "chroma-lb.sqlite"));
  side.run("PRAGMA busy_timeout = 5000");
  return side;
}

test("a state change that fails after a durable append is answered, kept, shown and retried; nothing of its collection overtakes it", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  const urls = { primary: primary!.url, replica: replica!.url };
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url, WAL_DISK_RESERVE_MB: "1" });
  const id = await createCollection(lb.url, "unsettled");
  await drained(lb.url);

  using side = openSide(lb.dataDir);
  side.run(`CREATE TRIGGER test_state_change_fails BEFORE UPDATE OF state ON wal_entries WHEN NEW.state = 'ready'
              BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`);

  // Applied on the primary and durable in the log: answered as the primary answered.
  const first = await write(lb.url, id, "upsert", upsertBody("x", "v1"));
  expect({ status: first.status, instance: first.instance }).toEqual({ status: 200, instance: "primary" });
  const stuck = await json(`${lb.url}/wal/status`);
  expect(stuck.unresolved_changes).toEqual([{ positions: [stuck.head_position], partition: id, action: "applied by primary", error: "database or disk is full" }]);
  expect({ disk_full: stuck.disk_full, file_system_full: stuck.file_system_full }).toEqual({ disk_full: true, file_system_full: true });

  // Later writes of the collection are refused before they are logged, with Retry-After.
  const held = await write(lb.url, id, "delete", JSON.stringify({ ids: ["x"] }));
  expect({ status: held.status, retryAfter: held.retryAfter, error: JSON.parse(held.text).error }).toEqual({ status: 507, retryAfter: "5", error: "InsufficientStorage" });
  expect((await json(`${lb.url}/wal/status`)).head_position).toBe(stuck.head_position);
  expect(await documentsOnInstances(lb.url, "unsettled", "x", urls)).toEqual({ primary: "v1", replica: null });

  // Room again: the change is recorded, writes are taken, and the replica gets the entry.
  side.run("DROP TRIGGER test_state_change_fails");
  await waitFor(
    async () => {
      const s = await json(`${lb.url}/wal/status`);
      return s.unresolved_changes.length === 0 && !s.disk_full;
    },
    { timeoutMs: 10_000, message: "the unrecorded change recorded and the disk taken as free" },
  );
  await drained(lb.url);
  expect(await documentsOnInstances(lb.url, "unsettled", "x", urls)).toEqual({ primary: "v1", replica: "v1" });

  // The sequence from the issue ends with the upsert's value everywhere.
  expect((await write(lb.url, id, "delete", JSON.stringify({ ids: ["x"] }))).status).toBe(200);
  await setHealth(lb.url, "primary", false);
  const upsert = await write(lb.url, id, "upsert", upsertBody("x", "v2"));
  expect({ status: upsert.status, instance: upsert.instance }).toEqual({ status: 200, instance: "replica" });
  await setHealth(lb.url, "primary", true);
  await drained(lb.url);
  expect(await documentsOnInstances(lb.url, "unsettled", "x", urls)).toEqual({ primary: "v2", replica: "v2" });
}, 60_000);

test("an instance never takes a write past an entry of the collection it still owes, whatever that entry's state", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  const urls = { primary: primary!.url, replica: replica!.url };
  await using lb = await startLbInProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const id = await createCollection(lb.url, "owed");
  await drained(lb.url);

  // An entry left in its first state (`new`), owed by both instances: what a state change
  // lost before this fix left behind, only a restart readied it.
  using side = openSide(lb.dataDir);
  const body = upsertBody("x", "older");
  const { seq } = side
    .query(
      `INSERT INTO wal_entries (created_at_ms, partition, kind, op, tenant, database, collection_id, name, body_bytes, state, applied_by)
       VALUES (?, ?, 'records', 'upsert', 'default_tenant', 'default_database', ?, NULL, ?, 'new', NULL) RETURNING seq`,
    )
    .get(Date.now(), id, id, body.length) as { seq: number };
  side.run("INSERT INTO wal_bodies (seq, body) VALUES (?, ?)", [seq, Buffer.from(body)]);
  for (const instance of ["primary", "replica"]) {
    side.run("INSERT INTO wal_pending (instance, seq, partition, kind) VALUES (?, ?, ?, 'records')", [instance, seq, id]);
  }

  // The replica is the only write target and owes the older entry: the newer write must not
  // reach it first. It is kept in the log behind the older one (202) instead.
  await setHealth(lb.url, "primary", false);
  const newer = await write(lb.url, id, "upsert", upsertBody("x", "newer"));
  expect(newer.status).toBe(202);
  expect(await documentsOnInstances(lb.url, "owed", "x", urls)).toEqual({ primary: null, replica: null });

  // Once the older entry is ready (as a restart makes it), both reach both instances in log order.
  side.run("UPDATE wal_entries SET state = 'ready' WHERE seq = ?", [seq]);
  await setHealth(lb.url, "primary", true);
  await drained(lb.url);
  expect(await documentsOnInstances(lb.url, "owed", "x", urls)).toEqual({ primary: "newer", replica: "newer" });
}, 60_000);
