/**
 * Acknowledged means durable: chroma-lb killed with SIGKILL in the middle of a concurrent
 * ingest loses no acknowledged write. Writes in flight at the kill fail (they were never
 * acknowledged, so either outcome is allowed, but all of one batch or none of it); after a
 * restart on the same DATA_DIR and port, ingest goes on and both instances converge on the
 * same records, holding every acknowledged one exactly as it was sent.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { ChromaClient, type Collection } from "chromadb";
import { killAll, startChromaServers, startLbProcess, waitFor } from "../support";
import { dumpInstances, type DumpedRecord, type InstanceDump } from "../support/compare";

afterAll(() => killAll());

const DIM = 384;
const BATCH = 20;
const WRITERS = 4;
const BATCHES_PER_WRITER = 30;
const COLLECTIONS = ["ingest-a", "ingest-b"];

function seedFromEnv(): number {
  const seed = process.env.SEED ? Number(process.env.SEED) : Math.floor(Math.random() * 2 ** 31);
  console.log(`[crash-recovery] seed ${seed} (replay with SEED=${seed})`);
  return seed;
}

/** mulberry32 */
function prng(seed: number) {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Batch {
  collection: string;
  records: DumpedRecord[];
}

/** A batch of records whose values survive Chroma's float32 storage exactly (4 significant digits). */
function makeBatch(random: () => number, writer: number, index: number): Batch {
  const collection = COLLECTIONS[(writer + index) % COLLECTIONS.length]!;
  const records = Array.from({ length: BATCH }, (_, i) => ({
    id: `w${writer}-b${index}-r${i}`,
    embedding: Array.from({ length: DIM }, () => (Math.floor(random() * 2001) - 1000) / 1000),
    document: `writer ${writer} batch ${index} record ${i}`,
    metadata: { writer, batch: index, record: i, source: "crash-recovery" } as Record<string, unknown>,
  }));
  return { collection, records };
}

/** A gate writers wait at while chroma-lb is down; the test opens it after the restart. */
class Gate {
  private opened: Promise<void> = Promise.resolve();
  private open: () => void = () => {};
  close() {
    this.opened = new Promise((resolve) => (this.open = resolve));
  }
  reopen() {
    this.open();
  }
  wait() {
    return this.opened;
  }
}

function recordsOf(dump: InstanceDump, collection: string): Map<string, DumpedRecord> {
  const records = dump["default_tenant/default_database"]?.[collection]?.records ?? [];
  return new Map(records.map((r) => [r.id, r]));
}

describe("chroma-lb killed during ingest", () => {
  test("loses no acknowledged write, and both instances converge on the same records after a restart", async () => {
    const seed = seedFromEnv();
    await using servers = await startChromaServers(2);
    const [primary, replica] = servers;
    await using lb = await startLbProcess({ CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
    const port = lb.port;
    const dataDir = lb.dataDir;

    const client = new ChromaClient({ host: "127.0.0.1", port });
    const handles = new Map<string, Collection>();
    for (const name of COLLECTIONS) handles.set(name, await client.createCollection({ name, embeddingFunction: null }));

    const gate = new Gate();
    const acknowledged: Batch[] = [];
    const failed: Array<Batch & { error: string }> = [];
    let stopWriters = false;

    const writer = async (w: number) => {
      const random = prng(seed + w);
      for (let index = 0; index < BATCHES_PER_WRITER && !stopWriters; index++) {
        await gate.wait();
        const batch = makeBatch(random, w, index);
        try {
          await handles.get(batch.collection)!.add({
            ids: batch.records.map((r) => r.id),
            embeddings: batch.records.map((r) => r.embedding!),
            documents: batch.records.map((r) => r.document!),
            metadatas: batch.records.map((r) => r.metadata as Record<string, number | string>),
          });
          acknowledged.push(batch);
        } catch (error) {
          failed.push({ ...batch, error: String(error) });
        }
      }
    };

    /** Kills chroma-lb once `afterBatches` batches are acknowledged, then restarts it on the same port and data. */
    const crashAfter = async (afterBatches: number) => {
      await waitFor(() => acknowledged.length >= afterBatches, { timeoutMs: 60_000, message: `${afterBatches} acknowledged batches` });
      gate.close();
      await lb.kill("SIGKILL");
      expect(lb.alive).toBe(false);
      await lb.restart();
      expect(lb.port).toBe(port);
      expect(lb.dataDir).toBe(dataDir);
      gate.reopen();
    };

    const writers = Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    const total = WRITERS * BATCHES_PER_WRITER;
    try {
      await crashAfter(Math.floor(total / 3));
      const failedAtFirstKill = failed.length;
      // The second kill lands while the replica may still be catching up on the first.
      await crashAfter(Math.floor((2 * total) / 3));
      console.log(`[crash-recovery] failed writes: ${failedAtFirstKill} at the first kill, ${failed.length - failedAtFirstKill} at the second`);
    } catch (error) {
      stopWriters = true;
      await writers;
      throw error;
    }
    // Ingest goes on to the end after the restarts.
    await writers;

    // Every failure is a write cut off by a kill: the client saw the connection go.
    expect(failed.every((f) => !/Chroma(Client|NotFound|Unique|Value)Error/.test(f.error))).toBe(true);
    expect(acknowledged.length + failed.length).toBe(total);
    expect(acknowledged.length).toBeGreaterThan(total * 0.8);

    await waitFor(
      async () => {
        const res = await fetch(`${lb.url}/wal/status`);
        return ((await res.json()) as { pending_writes: number }).pending_writes === 0;
      },
      { timeoutMs: 60_000, message: "both instances applied the whole log" },
    );
    const [onPrimary, onReplica] = await dumpInstances([primary!.url, replica!.url]);
    expect(onReplica).toEqual(onPrimary!);

    // Every acknowledged record, exactly as sent, on both instances (equal, so one is checked).
    const stored = new Map(COLLECTIONS.map((c) => [c, recordsOf(onPrimary!, c)]));
    const missing: string[] = [];
    const changed: string[] = [];
    for (const batch of acknowledged) {
      for (const record of batch.records) {
        const found = stored.get(batch.collection)!.get(record.id);
        if (!found) missing.push(record.id);
        else if (!Bun.deepEquals(found, record)) changed.push(record.id);
      }
    }
    expect({ missing, changed }).toEqual({ missing: [], changed: [] });

    // An unacknowledged batch is there whole or not at all, and nothing else is there.
    let failedPresent = 0;
    for (const batch of failed) {
      const present = batch.records.filter((r) => stored.get(batch.collection)!.has(r.id));
      expect([0, BATCH]).toContain(present.length);
      if (present.length) {
        failedPresent += 1;
        for (const record of batch.records) expect(stored.get(batch.collection)!.get(record.id)).toEqual(record);
      }
    }
    const attempted = acknowledged.length + failed.length;
    const storedCount = [...stored.values()].reduce((n, m) => n + m.size, 0);
    expect(storedCount).toBe((acknowledged.length + failedPresent) * BATCH);
    console.log(`[crash-recovery] ${attempted} batches: ${acknowledged.length} acknowledged, ${failed.length} failed (${failedPresent} of them applied anyway); first error: ${failed[0]?.error.slice(0, 120)}`);
  }, 120_000);
});
