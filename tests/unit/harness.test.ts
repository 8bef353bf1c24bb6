/**
 * The harness itself: real Chroma servers start on free ports, die on SIGKILL, come back
 * with their data on restart, and leave no process or temp dir behind.
 */
import { afterAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import {
  freePort,
  killAll,
  startChroma,
  startChromaServers,
  trackedProcesses,
  waitFor,
  type ChromaServer,
} from "../support";

// Reached only when a test throws before its own `await using` cleanup ran.
afterAll(() => killAll());

const collectionsPath = "/api/v2/tenants/default_tenant/databases/default_database/collections";

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("chroma servers", () => {
  test("survive SIGKILL and restart on the same port with their data", async () => {
    await using servers = await startChromaServers(2);
    const [first, second] = servers as unknown as [ChromaServer, ChromaServer];
    expect(first.port).not.toBe(second.port);

    for (const server of servers) {
      const res = await fetch(`${server.url}/api/v2/heartbeat`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ "nanosecond heartbeat": expect.any(Number) });
    }

    const created = await fetch(`${first.url}${collectionsPath}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "persist_check" }),
    });
    expect(created.status).toBe(200);
    const collection = await created.json();
    expect(collection).toMatchObject({
      id: expect.any(String),
      name: "persist_check",
      tenant: "default_tenant",
      database: "default_database",
    });

    const pidBeforeKill = first.pid;
    await first.kill();
    expect(first.alive).toBe(false);
    expect(processExists(pidBeforeKill)).toBe(false);
    expect(fetch(`${first.url}/api/v2/heartbeat`)).rejects.toThrow();
    expect((await fetch(`${second.url}/api/v2/heartbeat`)).status).toBe(200);

    await first.restart();
    expect(first.alive).toBe(true);
    expect(first.pid).not.toBe(pidBeforeKill);
    const fetched = await fetch(`${first.url}${collectionsPath}/persist_check`);
    expect(fetched.status).toBe(200);
    expect(await fetched.json()).toEqual(collection);
    expect((await fetch(`${second.url}${collectionsPath}/persist_check`)).status).toBe(404);
  });

  test("dispose stops every process and removes the temp dirs", async () => {
    let pids: number[];
    let dataDirs: string[];
    {
      await using servers = await startChromaServers(2, { allowReset: true });
      pids = servers.map((server) => server.pid);
      dataDirs = servers.map((server) => server.dataDir);
      const reset = await fetch(`${servers[0]!.url}/api/v2/reset`, { method: "POST" });
      expect(reset.status).toBe(200);
    }
    expect(pids.map(processExists)).toEqual([false, false]);
    expect(dataDirs.map((dir) => fs.existsSync(dir))).toEqual([false, false]);
    expect(trackedProcesses()).toEqual([]);
  });

  test("a server that cannot start fails with the end of its log", async () => {
    await using scratch = await startChroma();
    const notADir = path.join(scratch.dataDir, "chroma.sqlite3");
    const error = await startChroma({ dataDir: notADir, readyTimeoutMs: 10_000 }).catch((e) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toContain("exited");
    expect(error.message).toContain("File exists");
    expect(trackedProcesses().map((p) => p.pid)).toEqual([scratch.pid]);
  });

  test("a port that is already taken is refused before a server is spawned", async () => {
    await using taken = await startChroma();
    const error = await startChroma({ port: taken.port }).catch((e) => e);
    expect(error.message).toBe(`chroma: port ${taken.port} is already in use`);
    expect(trackedProcesses().map((p) => p.pid)).toEqual([taken.pid]);
  });
});

describe("waitFor", () => {
  test("returns the first truthy value", async () => {
    let calls = 0;
    const value = await waitFor(() => (++calls >= 3 ? { calls } : undefined), { intervalMs: 1 });
    expect(value).toEqual({ calls: 3 });
  });

  test("times out with the message and the last error", async () => {
    const error = await waitFor(
      () => {
        throw new Error("still down");
      },
      { timeoutMs: 50, intervalMs: 5, message: "server up" },
    ).catch((e) => e);
    expect(error.message).toContain("server up not met within 50 ms");
    expect(error.message).toContain("last error: still down");
  });

  test("does not wait for an attempt that hangs past the deadline", async () => {
    const startedMs = performance.now();
    const error = await waitFor(() => new Promise(() => {}), { timeoutMs: 50 }).catch((e) => e);
    expect(error).toBeInstanceOf(Error);
    expect(performance.now() - startedMs).toBeLessThan(1_000);
  });
});

test("freePort answers a port nobody listens on", async () => {
  const port = await freePort();
  expect(port).toBeGreaterThan(0);
  expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow();
});
