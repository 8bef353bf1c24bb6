/**
 * Issue 14: DATA_DIR on a small file system that fills before WAL_MAX_DISK_MB (left at its
 * default), under concurrent writers. The test mounts its own tmpfs (as root) and fills most
 * of it with a ballast file, so chroma-lb's log fills the rest; later it deletes the ballast.
 *
 * What must hold: no write is answered 500; a write refused for lack of room is answered 507
 * with Retry-After, `wal_disk_full` is alerted and /wal/status says the file system is full;
 * POST /wal/cleanup works while it is full; writes are taken again once there is room; every
 * acknowledged write is on both instances, both answering the same bytes; and the sequence
 * from the issue (delete X, SIGKILL the primary, upsert X, restart chroma-lb) ends with the
 * upsert's value on both instances.
 */
import { afterAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { killAll, startChromaServers, startLbProcess, waitFor, type ChromaServer, type LbProcess } from "../support";
import { alertReceiver } from "../support/alerts";
import { json } from "../support/http";
import { canonicalGet, postRaw } from "../support/raw";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const WRITERS = 8;
const BATCH = 5;
const DOCUMENT_BYTES = 400;
const FS_MB = 16;
/** Room the ballast leaves for chroma-lb's log to fill. */
const ROOM_LEFT_BYTES = 3 * 1024 * 1024;

/** Mounts a tmpfs of `sizeMb` at a new folder, or answers why it cannot. */
function mountTmpfs(sizeMb: number): { dir: string; unmount(): void } | { reason: string } {
  const dir = mkdtempSync(join(tmpdir(), "chroma-lb-full-disk-"));
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${sizeMb}m`, "tmpfs", dir], { encoding: "utf8" });
  if (mounted.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return { reason: `mount -t tmpfs failed (${(mounted.stderr || mounted.error?.message || "").trim()}); needs root or CAP_SYS_ADMIN` };
  }
  return {
    dir,
    unmount() {
      // Lazy: a process that still holds a file there must not make the test fail.
      spawnSync("umount", ["-l", dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const probe = mountTmpfs(1);
const mountable = "dir" in probe;
if ("dir" in probe) probe.unmount();
else console.log(`[full-disk] skipped: ${probe.reason}`);

const freeBytes = (dir: string) => {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
};

const batchBody = (ids: string[]) =>
  JSON.stringify({
    ids,
    embeddings: ids.map((_, i) => [i, 1]),
    documents: ids.map((id) => `${id} `.padEnd(DOCUMENT_BYTES, "d")),
  });

/** Chroma's raw `get` answer of the whole collection, from an instance directly, in canonical form. */
async function rawRecords(instanceUrl: string, uuid: string): Promise<string> {
  const res = await fetch(`${instanceUrl}${T}/collections/${uuid}/get`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ include: ["documents", "embeddings", "metadatas"], limit: 100_000 }),
  });
  expect(res.status).toBe(200);
  return canonicalGet(new Uint8Array(await res.arrayBuffer()));
}

async function instanceUuids(lbUrl: string, name: string): Promise<Record<string, string>> {
  const { mappings } = await json(`${lbUrl}/collection/mappings`);
  return mappings.find((m: { collection_name: string }) => m.collection_name === name).instances;
}

interface FillOptions {
  /** WAL_DISK_RESERVE_MB. */
  reserveMb: number;
  /** Whether cleanup must succeed while the file system is full (it needs the spare file's room). */
  cleanupWhileFull: boolean;
  /** Runs after the checks, with chroma-lb and the instances still up. */
  then?: (context: { lb: LbProcess; primary: ChromaServer; replica: ChromaServer; id: string; uuids: Record<string, string> }) => Promise<void>;
}

/**
 * Fills the file system under DATA_DIR with WRITERS concurrent writers, then frees it, and
 * checks what every run must show (see the file's comment).
 */
async function fillAndFree(options: FillOptions) {
  const mount = mountTmpfs(FS_MB);
  if (!("dir" in mount)) throw new Error(mount.reason);
  try {
    using receiver = alertReceiver();
    await using servers = await startChromaServers(2);
    const [primary, replica] = servers;
    const dataDir = join(mount.dir, "data");
    mkdirSync(dataDir);
    await using lb = await startLbProcess({
      CHROMA_PRIMARY_URL: primary!.url,
      CHROMA_REPLICA_URL: replica!.url,
      DATA_DIR: dataDir,
      WAL_DISK_RESERVE_MB: String(options.reserveMb),
      ALERT_WEBHOOK_URL: receiver.url,
      ALERT_CHECK_INTERVAL: "1",
    });
    const created = await postRaw(`${lb.url}${T}/collections`, JSON.stringify({ name: "filling", configuration: {} }));
    expect(created.status).toBe(200);
    const id = (JSON.parse(created.text) as { id: string }).id;

    // Everything but a few MiB goes to the ballast: the log fills the rest.
    const ballast = join(mount.dir, "ballast");
    writeFileSync(ballast, Buffer.alloc(Math.max(0, freeBytes(mount.dir) - ROOM_LEFT_BYTES), 1));

    const acknowledged = new Set<string>();
    const unexpected: string[] = [];
    let refused = 0;
    let refusedWithoutRetryAfter = 0;
    let acknowledgedAfterFree = 0;
    let freed = false;
    let stop = false;
    const writer = async (w: number) => {
      for (let b = 0; !stop; b++) {
        const ids = Array.from({ length: BATCH }, (_, k) => `w${w}-b${b}-r${k}`);
        const res = await fetch(`${lb.url}${T}/collections/${id}/add`, { method: "POST", headers: { "content-type": "application/json" }, body: batchBody(ids) });
        const text = await res.text();
        if (res.status === 201 || res.status === 202) {
          for (const i of ids) acknowledged.add(i);
          if (freed) acknowledgedAfterFree += 1;
        } else if (res.status === 507) {
          refused += 1;
          if (res.headers.get("retry-after") === null) refusedWithoutRetryAfter += 1;
          // A client's pause before its next try (load pacing, not a test wait).
          await Bun.sleep(20);
        } else {
          unexpected.push(`${res.status} ${text.slice(0, 200)}`);
        }
      }
    };
    const writers = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    try {
      await waitFor(async () => refused >= 50 && (await json(`${lb.url}/wal/status`)).file_system_full, {
        timeoutMs: 60_000,
        message: "writes refused with 507 as the file system filled",
      });
      const full = await json(`${lb.url}/wal/status`);
      expect({ disk_full: full.disk_full, file_system_full: full.file_system_full }).toEqual({ disk_full: true, file_system_full: true });
      await waitFor(() => receiver.alerts.some((a) => a.event === "wal_disk_full" && a.status === "firing"), { message: "the wal_disk_full alert" });

      const cleanup = async () => {
        const res = await fetch(`${lb.url}/wal/cleanup`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ max_age_hours: 0 }) });
        return { status: res.status, text: await res.text() };
      };
      if (options.cleanupWhileFull) {
        // Cleanup works on the full file system (the spare file's room).
        await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { timeoutMs: 30_000, message: "replay caught up while full" });
        const cleaned = await cleanup();
        expect(cleaned.status).toBe(200);
        console.log(`[full-disk] reserve ${options.reserveMb} MiB: cleanup while full answered ${cleaned.text}; free bytes after it: ${freeBytes(mount.dir)}`);
      } else {
        // Without room it may be refused, but as a 507, never a 500.
        const cleaned = await cleanup();
        console.log(`[full-disk] reserve ${options.reserveMb} MiB: cleanup while full answered ${cleaned.status} ${cleaned.text.slice(0, 120)}`);
        expect([200, 507]).toContain(cleaned.status);
      }

      // Room again: writes are taken.
      rmSync(ballast);
      freed = true;
      await waitFor(() => acknowledgedAfterFree >= 20, { timeoutMs: 30_000, message: "writes taken after the ballast was deleted" });
    } finally {
      stop = true;
      await writers;
    }
    const failedStateChanges = lb.logs().split("\n").filter((l) => l.includes("could not be marked in the log yet")).length;
    console.log(
      `[full-disk] reserve ${options.reserveMb} MiB: ${acknowledged.size / BATCH} batches acknowledged, ${refused} answered 507, ` +
        `${failedStateChanges} state changes kept for later`,
    );
    expect(unexpected).toEqual([]);
    expect(refusedWithoutRetryAfter).toBe(0);
    await waitFor(() => receiver.alerts.some((a) => a.event === "wal_disk_full" && a.status === "resolved"), { message: "the wal_disk_full alert resolved" });
    expect(receiver.alerts.filter((a) => a.event === "wal_disk_full").map((a) => a.status)).toEqual(["firing", "resolved"]);

    // Every acknowledged write on both instances, both answering the same bytes.
    await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { timeoutMs: 60_000, message: "both instances caught up" });
    expect((await json(`${lb.url}/wal/status`)).unresolved_changes).toEqual([]);
    const uuids = await instanceUuids(lb.url, "filling");
    const [onPrimary, onReplica] = await Promise.all([rawRecords(primary!.url, uuids.primary!), rawRecords(replica!.url, uuids.replica!)]);
    expect(onReplica).toEqual(onPrimary);
    const held = new Set((JSON.parse(onPrimary) as { ids: string[] }).ids);
    expect([...acknowledged].filter((i) => !held.has(i))).toEqual([]);

    await options.then?.({ lb, primary: primary!, replica: replica!, id, uuids });
  } finally {
    await killAll();
    mount.unmount();
  }
}

test.skipIf(!mountable)(
  "a file system that fills under concurrent writers: 507 with Retry-After, never 500; cleanup works; every acknowledged write on both instances; an upsert after a delete survives a primary crash and a restart",
  () =>
    fillAndFree({
      reserveMb: 2,
      cleanupWhileFull: true,
      async then({ lb, primary, replica, id, uuids }) {
        // The sequence from the issue: delete X, SIGKILL the primary, upsert X, restart chroma-lb.
        const write = async (op: "upsert" | "delete", body: unknown) => {
          const res = await fetch(`${lb.url}${T}/collections/${id}/${op}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
          return { status: res.status, instance: res.headers.get("x-chroma-lb-instance") };
        };
        expect(await write("upsert", { ids: ["X"], embeddings: [[1, 1]], documents: ["before"] })).toEqual({ status: 200, instance: "primary" });
        expect(await write("delete", { ids: ["X"] })).toEqual({ status: 200, instance: "primary" });
        await primary.kill("SIGKILL");
        expect(await write("upsert", { ids: ["X"], embeddings: [[2, 2]], documents: ["after"] })).toEqual({ status: 200, instance: "replica" });
        await lb.restart();
        await primary.restart();
        await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { timeoutMs: 60_000, message: "both instances caught up after the restarts" });
        const x = async (url: string, uuid: string) => {
          const res = await fetch(`${url}${T}/collections/${uuid}/get`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ ids: ["X"], include: ["documents", "embeddings"] }),
          });
          return canonicalGet(new Uint8Array(await res.arrayBuffer()));
        };
        const expected = `{"ids":["X"],"embeddings":[[2.0,2.0]],"documents":["after"]}`;
        expect({ primary: await x(primary.url, uuids.primary!), replica: await x(replica.url, uuids.replica!) }).toEqual({ primary: expected, replica: expected });
      },
    }),
  180_000,
);

test.skipIf(!mountable)(
  "without a spare file the full file system is still answered 507, never 500, and every acknowledged write reaches both instances (a state change that fails after its append is kept and retried)",
  () => fillAndFree({ reserveMb: 0, cleanupWhileFull: false }),
  180_000,
);
