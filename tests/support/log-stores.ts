/**
 * The log stores the contract suite (tests/contract/) runs against, each opened fresh for
 * one test, reopenable (a restart of chroma-lb on the same store), and removed after.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { openLocalStore, openMirrorStore, type LocalStore } from "../../src/db";
import { PostgresLogStore } from "../../src/wal/postgres";
import { WriteAheadLog, type Limits } from "../../src/wal/log";
import { SqliteLogStore } from "../../src/wal/sqlite";

export interface OpenedLog {
  wal: WriteAheadLog;
  /** Closes this log; later opens see what it committed. */
  close(): Promise<void>;
}

export interface LogStoreFixture {
  name: "sqlite" | "postgres";
  /** Opens the log on this fixture's store (the same data every time). */
  open(instances: string[], limits?: Limits): Promise<OpenedLog>;
  /** A script line that opens the same log in a child process: `const wal = await ...;` */
  childOpen(root: string): string;
  /** Removes the store's data. */
  destroy(): Promise<void>;
}

export function sqliteFixture(): LogStoreFixture {
  const dir = mkdtempSync(join(tmpdir(), "chroma-lb-log-"));
  const opened: LocalStore[] = [];
  return {
    name: "sqlite",
    async open(instances, limits) {
      const local = openLocalStore(dir);
      opened.push(local);
      const wal = await WriteAheadLog.open(new SqliteLogStore(local, instances), instances, limits);
      return {
        wal,
        async close() {
          await wal.close();
          local.close();
        },
      };
    },
    childOpen(root) {
      return `
        const { openLocalStore } = await import(${JSON.stringify(join(root, "src/db/index.ts"))});
        const { SqliteLogStore } = await import(${JSON.stringify(join(root, "src/wal/sqlite/index.ts"))});
        const { WriteAheadLog } = await import(${JSON.stringify(join(root, "src/wal/log.ts"))});
        const wal = await WriteAheadLog.open(new SqliteLogStore(openLocalStore(${JSON.stringify(dir)}), ["primary", "replica"]), ["primary", "replica"]);
      `;
    },
    async destroy() {
      for (const local of opened.splice(0)) {
        try {
          local.close();
        } catch {
          // Closed by the test already.
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The shared test server (trust auth); each fixture gets a database of its own. */
const adminUrl = "postgres://postgres@127.0.0.1:5432/test";

export async function postgresFixture(): Promise<LogStoreFixture> {
  const name = `lblog_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = `postgres://postgres@127.0.0.1:5432/${name}`;
  const closers: Array<() => Promise<void>> = [];
  return {
    name: "postgres",
    async open(instances, limits) {
      const store = await openMirrorStore(url);
      closers.push(() => store.close());
      const wal = await WriteAheadLog.open(new PostgresLogStore({ durable: store.sql, relaxed: store.relaxed }, instances), instances, limits);
      return { wal, close: () => store.close() };
    },
    childOpen(root) {
      return `
        const { openMirrorStore } = await import(${JSON.stringify(join(root, "src/db/index.ts"))});
        const { PostgresLogStore } = await import(${JSON.stringify(join(root, "src/wal/postgres/index.ts"))});
        const { WriteAheadLog } = await import(${JSON.stringify(join(root, "src/wal/log.ts"))});
        const store = await openMirrorStore(${JSON.stringify(url)});
        const wal = await WriteAheadLog.open(new PostgresLogStore({ durable: store.sql, relaxed: store.relaxed }, ["primary", "replica"]), ["primary", "replica"]);
      `;
    },
    async destroy() {
      for (const close of closers.splice(0)) await close().catch(() => {});
      // FORCE: a child killed mid-test may still hold a connection.
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end({ timeout: 2 });
    },
  };
}

/** Every store the contract suite runs against. */
export const logStoreFixtures: Array<{ name: string; make: () => Promise<LogStoreFixture> }> = [
  { name: "sqlite", make: async () => sqliteFixture() },
  { name: "postgres", make: postgresFixture },
];
