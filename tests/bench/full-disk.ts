/**
 * What a full file system leaves chroma-lb's log able to do, by WAL_DISK_RESERVE_MB: the
 * log alone fills a tmpfs (appends of 5 records with 400-byte documents, group commits of
 * 8, as 8 writer streams make), every entry is then applied by both instances, and:
 * - the state change of one more entry (what the write path records after an append),
 * - POST /wal/cleanup (WriteAheadLog.cleanup, chunked, a checkpoint after each chunk),
 * are tried. Prints one row per file-system size and reserve. Needs root (mount).
 *
 *   bun run bench:full-disk        (FS_MB=8,64 RESERVE_MB=0,0.5,1,2,4 by default)
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, statfsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalStore } from "../../src/db";
import { WriteAheadLog } from "../../src/wal/log";
import { SqliteLogStore } from "../../src/wal/sqlite";
import { StorageReserve } from "../../src/wal/storage";

const fsSizesMb = (process.env.FS_MB ?? "8,64").split(",").map(Number);
const reservesMb = (process.env.RESERVE_MB ?? "0,0.5,1,2,4").split(",").map(Number);
const document = "d".repeat(400);
const body = new TextEncoder().encode(
  JSON.stringify({ ids: ["a", "b", "c", "d", "e"], embeddings: [[1, 2], [1, 2], [1, 2], [1, 2], [1, 2]], documents: Array(5).fill(document) }),
);

async function run(fsMb: number, reserveMb: number) {
  const dir = mkdtempSync(join(tmpdir(), "chroma-lb-bench-full-"));
  if (spawnSync("mount", ["-t", "tmpfs", "-o", `size=${fsMb}m`, "tmpfs", dir]).status !== 0) throw new Error("mount failed (run as root)");
  try {
    const store = openLocalStore(dir);
    const wal = await WriteAheadLog.open(new SqliteLogStore(store, ["primary", "replica"]), ["primary", "replica"], undefined, new StorageReserve(dir, Math.round(reserveMb * 1024 * 1024)));
    const entry = { partition: "c", kind: "records" as const, op: "add" as const, tenant: "t", database: "d", collectionId: "c", name: null, body };
    const seqs: number[] = [];
    while (!wal.storageIsFull) {
      const group = await Promise.allSettled(Array.from({ length: 8 }, () => wal.append(entry)));
      for (const g of group) if (g.status === "fulfilled") seqs.push(g.value.seq);
    }
    const walFileBytes = statSync(`${store.path}-wal`).size;
    // Replay's bookkeeping: both instances applied everything.
    let bookkeeping = "ok";
    try {
      for (let i = 0; i < seqs.length; i += 500) {
        await wal.completeOnTarget("primary", "c", seqs.slice(i, i + 500));
        await wal.markApplied("replica", seqs.slice(i, i + 500).map((seq) => ({ seq, partition: "c" })));
      }
    } catch (error) {
      bookkeeping = (error as Error).message;
    }
    const unresolved = wal.unresolvedChanges().length;
    let cleanup: string;
    try {
      cleanup = `${(await wal.cleanup(0)).deletedEntries} removed`;
    } catch (error) {
      cleanup = `failed: ${(error as Error).message}`;
    }
    const s = statfsSync(dir);
    const recovered = await wal.recoverStorageOnce();
    console.log(
      [
        `fs ${fsMb} MiB`,
        `reserve ${reserveMb} MiB`,
        `${seqs.length} entries appended`,
        `-wal ${(walFileBytes / 1024 / 1024).toFixed(1)} MiB when full`,
        `bookkeeping ${bookkeeping}${unresolved ? ` (${unresolved} state changes kept)` : ""}`,
        `cleanup ${cleanup}`,
        `free after ${((s.bavail * s.bsize) / 1024 / 1024).toFixed(1)} MiB`,
        `writes taken again: ${recovered}`,
      ].join(" | "),
    );
    store.close();
  } finally {
    spawnSync("umount", ["-l", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const fsMb of fsSizesMb) for (const reserveMb of reservesMb) await run(fsMb, reserveMb);
