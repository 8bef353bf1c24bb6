/**
 * The log stores the contract suite (tests/contract/) runs against, each opened fresh for
 * one test, reopenable (a restart of chroma-lb on the same store), and removed after.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalStore, type LocalStore } from "../../src/db";
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

/** Every store the contract suite runs against. */
export const logStoreFixtures: Array<{ name: string; make: () => Promise<LogStoreFixture> }> = [{ name: "sqlite", make: async () => sqliteFixture() }];
