/**
 * KeyedMutex: one caller at a time per key, in arrival order; keys are independent; a
 * failing caller releases the lock.
 */
import { describe, expect, test } from "bun:test";
import { KeyedMutex } from "../../src/util/mutex";

/** A promise the test resolves when it chooses. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

describe("KeyedMutex", () => {
  test("runs callers of the same key one at a time, in arrival order", async () => {
    const mutex = new KeyedMutex();
    const events: string[] = [];
    const gates = [gate(), gate(), gate()];
    const runs = gates.map((g, i) =>
      mutex.run("k", async () => {
        events.push(`start ${i}`);
        await g.opened;
        events.push(`end ${i}`);
        return i;
      }),
    );
    await Bun.sleep(0);
    expect(events).toEqual(["start 0"]);
    expect(mutex.isLocked("k")).toBe(true);
    // Opening the later gates first changes nothing: each waits for the one before it.
    gates[2]!.open();
    gates[1]!.open();
    await Bun.sleep(0);
    expect(events).toEqual(["start 0"]);
    gates[0]!.open();
    expect(await Promise.all(runs)).toEqual([0, 1, 2]);
    expect(events).toEqual(["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]);
    expect(mutex.isLocked("k")).toBe(false);
    expect(mutex.size).toBe(0);
  });

  test("runs callers of different keys at the same time", async () => {
    const mutex = new KeyedMutex();
    const both = gate();
    let started = 0;
    const run = (key: string) =>
      mutex.run(key, async () => {
        started += 1;
        await both.opened;
        return key;
      });
    const a = run("a");
    const b = run("b");
    await Bun.sleep(0);
    // Both hold their own lock while neither has finished.
    expect(started).toBe(2);
    expect([mutex.isLocked("a"), mutex.isLocked("b"), mutex.size]).toEqual([true, true, 2]);
    both.open();
    expect(await Promise.all([a, b])).toEqual(["a", "b"]);
    expect(mutex.size).toBe(0);
  });

  test("releases the lock when a caller throws, and the error reaches that caller", async () => {
    const mutex = new KeyedMutex();
    const events: string[] = [];
    const failing = mutex.run("k", async () => {
      events.push("first");
      throw new Error("boom");
    });
    const next = mutex.run("k", async () => {
      events.push("second");
      return "ok";
    });
    await expect(failing).rejects.toThrow("boom");
    expect(await next).toBe("ok");
    expect(events).toEqual(["first", "second"]);
    expect(mutex.size).toBe(0);
    expect(await mutex.run("k", async () => "again")).toBe("again");
  });

  test("a synchronous throw also releases the lock", async () => {
    const mutex = new KeyedMutex();
    const failing = mutex.run("k", () => {
      throw new Error("sync boom");
    });
    await expect(failing).rejects.toThrow("sync boom");
    expect(mutex.isLocked("k")).toBe(false);
    expect(await mutex.run("k", async () => 1)).toBe(1);
  });
});
