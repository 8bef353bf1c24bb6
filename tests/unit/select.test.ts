/**
 * Which instance serves a write or a read, from a snapshot of each instance.
 */
import { describe, expect, test } from "bun:test";
import { readCandidates, writeCandidates, type InstanceView } from "../../src/routing/select";
import { seededRandom } from "../support/random";

/** An instance view; one that owes entries is back from an outage (catching up) unless told otherwise. */
const view = (name: string, priority: number, pendingEntries = 0, serving = true, catchingUp = pendingEntries > 0): InstanceView => ({
  name,
  priority,
  serving,
  pendingEntries,
  catchingUp,
});
const names = (list: Array<{ name: string }>) => list.map((i) => i.name);

describe("writeCandidates", () => {
  test("puts the primary first when it is caught up", () => {
    expect(names(writeCandidates([view("primary", 0), view("replica", 1)]))).toEqual(["primary", "replica"]);
    // Whatever order the registry lists them in.
    expect(names(writeCandidates([view("replica", 1), view("primary", 0)]))).toEqual(["primary", "replica"]);
  });

  test("puts a primary that is behind after a caught-up replica", () => {
    expect(names(writeCandidates([view("primary", 0, 7), view("replica", 1, 0)]))).toEqual(["replica", "primary"]);
  });

  test("keeps the primary first while it owes only writes in flight (not catching up)", () => {
    expect(names(writeCandidates([view("primary", 0, 3, true, false), view("replica", 1, 0)]))).toEqual(["primary", "replica"]);
  });

  test("orders instances that are behind by what they owe, then by priority", () => {
    const list = [view("primary", 0, 9), view("b", 1, 3), view("c", 2, 3), view("d", 3, 0)];
    expect(names(writeCandidates(list))).toEqual(["d", "b", "c", "primary"]);
  });

  test("leaves out instances that are not serving", () => {
    expect(names(writeCandidates([view("primary", 0, 0, false), view("replica", 1, 4)]))).toEqual(["replica"]);
    expect(writeCandidates([view("primary", 0, 0, false), view("replica", 1, 0, false)])).toEqual([]);
  });

  test("does not reorder the caller's array", () => {
    const list = [view("replica", 1), view("primary", 0)];
    writeCandidates(list);
    expect(names(list)).toEqual(["replica", "primary"]);
  });
});

describe("readCandidates", () => {
  const seed = Number(process.env.TEST_SEED ?? Date.now() % 1_000_000);
  console.log(`select.test.ts seed ${seed} (TEST_SEED=${seed} replays it)`);

  const allFresh = () => true;

  test("readReplicaRatio 0 always reads from the primary first", () => {
    const random = seededRandom(seed);
    for (let i = 0; i < 200; i++) {
      expect(names(readCandidates([view("primary", 0), view("replica", 1)], allFresh, 0, random))).toEqual(["primary", "replica"]);
    }
  });

  test("readReplicaRatio 1 always reads from a replica first", () => {
    const random = seededRandom(seed);
    for (let i = 0; i < 200; i++) {
      expect(names(readCandidates([view("primary", 0), view("replica", 1)], allFresh, 1, random))).toEqual(["replica", "primary"]);
    }
  });

  test("readReplicaRatio 1 spreads reads over every replica, the primary last", () => {
    const random = seededRandom(seed);
    const firsts = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const order = names(readCandidates([view("primary", 0), view("r1", 1), view("r2", 2), view("r3", 3)], allFresh, 1, random));
      expect(order.at(-1)).toBe("primary");
      expect([...order].sort()).toEqual(["primary", "r1", "r2", "r3"]);
      firsts.set(order[0]!, (firsts.get(order[0]!) ?? 0) + 1);
    }
    expect([...firsts.keys()].sort()).toEqual(["r1", "r2", "r3"]);
  });

  test("readReplicaRatio 0.5 sends about half the reads to the replica first", () => {
    const random = seededRandom(seed);
    let replicaFirst = 0;
    const reads = 2000;
    for (let i = 0; i < reads; i++) {
      if (readCandidates([view("primary", 0), view("replica", 1)], allFresh, 0.5, random)[0]!.name === "replica") replicaFirst += 1;
    }
    expect(replicaFirst / reads).toBeGreaterThan(0.4);
    expect(replicaFirst / reads).toBeLessThan(0.6);
  });

  test("puts fresh instances before lagging ones, lagging ones by what they owe", () => {
    const fresh = new Set(["replica"]);
    const list = [view("primary", 0, 5), view("replica", 1, 0), view("c", 2, 2)];
    const order = readCandidates(list, (name) => fresh.has(name), 0, seededRandom(seed));
    expect(order).toEqual([
      { ...view("replica", 1, 0), fresh: true },
      { ...view("c", 2, 2), fresh: false },
      { ...view("primary", 0, 5), fresh: false },
    ]);
  });

  test("an instance catching up is never fresh, whatever isFresh says", () => {
    const order = readCandidates([view("primary", 0, 4), view("replica", 1)], allFresh, 0, seededRandom(seed));
    expect(order).toEqual([
      { ...view("replica", 1), fresh: true },
      { ...view("primary", 0, 4), fresh: false },
    ]);
  });

  test("a fresh primary leads lagging replicas even with readReplicaRatio 1", () => {
    const order = readCandidates([view("primary", 0), view("replica", 1, 3)], (name) => name === "primary", 1, seededRandom(seed));
    expect(names(order)).toEqual(["primary", "replica"]);
  });

  test("leaves out instances that are not serving", () => {
    const order = readCandidates([view("primary", 0, 0, false), view("replica", 1)], allFresh, 0, seededRandom(seed));
    expect(order).toEqual([{ ...view("replica", 1), fresh: true }]);
    expect(readCandidates([view("primary", 0, 0, false)], allFresh, 0.5, seededRandom(seed))).toEqual([]);
  });
});
