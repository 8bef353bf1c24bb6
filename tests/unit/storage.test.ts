/**
 * The log on a full disk, without mounting anything: SQLite's `max_page_count` makes it
 * answer SQLITE_FULL as a full file system would. A full disk is told apart from other
 * errors in one place; the log refuses new entries, gives up its spare file, still records
 * the state of entries appended before, still cleans up, and takes entries again once the
 * spare file fits.
 */
import { afterEach, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalStore, type LocalStore } from "../../src/db";
import { WriteAheadLog, type DiskState, type NewEntry } from "../../src/wal/log";
import { SqliteLogStore } from "../../src/wal/sqlite";
import { isStorageFullError, StorageFullError, StorageReserve } from "../../src/wal/storage";

const dirs: string[] = [];
const stores: LocalStore[] = [];
afterEach(() => {
  for (const store of stores.splice(0)) store.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const entry = (bodyBytes: number): NewEntry => ({
  partition: "c",
  kind: "records",
  op: "add",
  tenant: "t",
  database: "d",
  collectionId: "c",
  name: null,
  body: new Uint8Array(bodyBytes).fill(0x20),
});

test("SQLITE_FULL, ENOSPC and EDQUOT are a full disk; other errors are not", () => {
  expect(isStorageFullError(Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" }))).toBe(true);
  expect(isStorageFullError(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }))).toBe(true);
  expect(isStorageFullError(Object.assign(new Error("quota"), { code: "EDQUOT" }))).toBe(true);
  expect(isStorageFullError(new StorageFullError())).toBe(true);
  expect(isStorageFullError(Object.assign(new Error("database is locked"), { code: "SQLITE_BUSY" }))).toBe(false);
  expect(isStorageFullError(new Error("timeout"))).toBe(false);
  expect(isStorageFullError("database or disk is full")).toBe(false);
});

test("on a full disk the log refuses new entries, gives up its spare file, still records earlier entries and cleans up, then takes entries again", async () => {
  const dir = mkdtempSync(join(tmpdir(), "chroma-lb-storage-"));
  dirs.push(dir);
  const store = openLocalStore(dir);
  stores.push(store);
  const reserve = new StorageReserve(dir, 256 * 1024);
  const wal = await WriteAheadLog.open(new SqliteLogStore(store, ["primary", "replica"]), ["primary", "replica"], undefined, reserve);
  const heard: DiskState[] = [];
  wal.onDiskFull((state) => heard.push(state));
  expect(statSync(reserve.path).size).toBe(256 * 1024);

  const before = await Promise.all([wal.append(entry(100)), wal.append(entry(100))]);
  // No page may be added from here on: the next append that needs one fails as on a full disk.
  const pages = (store.sqlite.query("PRAGMA page_count").get() as { page_count: number }).page_count;
  store.sqlite.run(`PRAGMA max_page_count = ${pages}`);
  const refused = await wal.append(entry(64 * 1024)).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(StorageFullError);
  expect({ full: wal.storageIsFull, reserve: existsSync(reserve.path), diskFull: wal.diskFull(0) }).toEqual({ full: true, reserve: false, diskFull: true });
  expect(heard.map((h) => ({ full: h.full, filesystem: h.filesystem }))).toEqual([{ full: true, filesystem: true }]);
  // Refused at once while full, even a small one: the room left is for what was appended.
  expect(await wal.append(entry(10)).catch((error: unknown) => error)).toBeInstanceOf(StorageFullError);

  // Entries appended before are still recorded, applied, and removed by cleanup.
  expect(await wal.completeOnTarget("primary", "c", before.map((e) => e.seq))).toBe(true);
  await wal.markApplied("replica", before);
  expect(wal.unresolvedChanges()).toEqual([]);
  expect(await wal.cleanup(0)).toEqual({ deletedEntries: 2 });

  // Room again: the next step out of "full" writes the spare file back and entries are taken.
  store.sqlite.run("PRAGMA max_page_count = 1073741823");
  expect(await wal.recoverStorageOnce()).toBe(true);
  expect({ full: wal.storageIsFull, reserve: statSync(reserve.path).size, diskFull: wal.diskFull(0) }).toEqual({ full: false, reserve: 256 * 1024, diskFull: false });
  expect(heard.map((h) => ({ full: h.full, filesystem: h.filesystem }))).toEqual([
    { full: true, filesystem: true },
    { full: false, filesystem: false },
  ]);
  expect((await wal.append(entry(64 * 1024))).seq).toBeGreaterThan(before[1]!.seq);
});

test("a state change that cannot be recorded is kept, holds back its partition, and is recorded by resolveOnce in order", async () => {
  const dir = mkdtempSync(join(tmpdir(), "chroma-lb-storage-"));
  dirs.push(dir);
  const store = openLocalStore(dir);
  stores.push(store);
  const wal = await WriteAheadLog.open(new SqliteLogStore(store, ["primary", "replica"]), ["primary", "replica"]);
  const [a, b] = await Promise.all([wal.append(entry(10)), wal.append(entry(10))]);
  store.sqlite.run(`CREATE TEMP TRIGGER fail_state BEFORE UPDATE OF state ON wal_entries BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
  expect(await wal.completeOnTarget("primary", "c", [a!.seq])).toBe(false);
  expect(await wal.markReady([b!], null)).toBe(false);
  expect(wal.unresolvedChanges()).toEqual([
    { positions: [a!.seq], partition: "c", action: "applied by primary", error: "injected failure" },
    { positions: [b!.seq], partition: "c", action: "ready", error: "waiting for an earlier change of the partition" },
  ]);
  // Not a full disk: new entries are still taken, but the partition is held back and replay waits.
  expect(wal.storageIsFull).toBe(false);
  expect({ held: wal.hasUnresolved("c"), other: wal.hasUnresolved("other") }).toEqual({ held: true, other: false });
  expect(await wal.nextPending("replica", "c", 10)).toEqual([]);
  expect(await wal.resolveOnce()).toBe(2);

  store.sqlite.run("DROP TRIGGER fail_state");
  expect(await wal.resolveOnce()).toBe(0);
  expect(wal.hasUnresolved("c")).toBe(false);
  expect((await wal.nextPending("replica", "c", 10)).map((e) => [e.seq, e.state, e.appliedBy])).toEqual([
    [a!.seq, "ready", "primary"],
    [b!.seq, "ready", null],
  ]);
  expect(wal.pendingCount("primary")).toBe(1);
});
