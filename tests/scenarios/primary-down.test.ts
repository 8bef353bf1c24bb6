/**
 * Use case 2: the primary dies (SIGKILL) in the middle of continuous ingest (adds, and during
 * the outage updates too) and search. No write fails or is lost, reads keep answering with
 * what was acknowledged, and the restarted primary replays what it missed before it takes
 * writes again; in the end both instances hold exactly the same records, in the same order.
 */
import { afterAll, expect, test } from "bun:test";
import { ChromaClient } from "chromadb";
import { killAll, startChromaServers, startLbProcess, waitFor } from "../support";

afterAll(() => killAll());

const T = "/api/v2/tenants/default_tenant/databases/default_database";
const lbEnv = { HEALTH_CHECK_INTERVAL: "1", HEALTH_CHECK_TIMEOUT: "0.3", REQUEST_TIMEOUT: "5" };
const batchSize = 5;

interface Dump {
  ids: string[];
  embeddings: number[][];
  documents: (string | null)[];
  metadatas: (Record<string, unknown> | null)[];
}

/** Every record of a collection as one instance holds it, in its own (insertion) order. */
async function dumpInstance(instanceUrl: string, name: string): Promise<Dump> {
  const found = await fetch(`${instanceUrl}${T}/collections/${name}`);
  expect(found.status).toBe(200);
  const { id } = (await found.json()) as { id: string };
  const res = await fetch(`${instanceUrl}${T}/collections/${id}/get`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ include: ["embeddings", "documents", "metadatas"] }),
  });
  expect(res.status).toBe(200);
  const got = (await res.json()) as Dump;
  return { ids: got.ids, embeddings: got.embeddings, documents: got.documents, metadatas: got.metadatas };
}

async function json<T = any>(url: string): Promise<T> {
  const res = await fetch(url);
  return (await res.json()) as T;
}

/** Values exactly representable as float32, so they survive Chroma's storage unchanged. */
function embeddingFor(n: number): number[] {
  return [(n % 16) / 4, ((n * 7) % 13) / 8, (n % 5) / 2 - 1, 1];
}

/** An embedding as the official client sends it when the server supports base64. */
function base64Float32(embedding: number[]): string {
  return Buffer.from(new Float32Array(embedding).buffer).toString("base64");
}

interface StatusSnapshot {
  atMs: number;
  writeTarget: string | null;
  primaryState: string;
  primaryLag: number;
}

test("a SIGKILLed primary fails no write, reads keep answering, and it rejoins only once caught up", async () => {
  await using servers = await startChromaServers(2);
  const [primary, replica] = servers;
  await using lb = await startLbProcess({ ...lbEnv, CHROMA_PRIMARY_URL: primary!.url, CHROMA_REPLICA_URL: replica!.url });
  const client = new ChromaClient({ host: "127.0.0.1", port: lb.port });
  const collection = await client.createCollection({ name: "ingest_stream", embeddingFunction: null });

  const acked: Dump = { ids: [], embeddings: [], documents: [], metadatas: [] };
  const probes: Dump = { ids: [], embeddings: [], documents: [], metadatas: [] };
  const writeFailures: Array<{ atMs: number; error: string }> = [];
  const readFailures: Array<{ atMs: number; error: string }> = [];
  const staleReads: Array<{ atMs: number; wanted: string[]; got: string[] }> = [];
  const snapshots: StatusSnapshot[] = [];
  let reads = 0;
  let stop = false;
  const now = () => performance.now();

  // During the outage each batch is followed by an update of one of its records: adds and
  // updates alternate in the log, replay cannot merge them, and catching up takes a while.
  let revising = false;
  const writer = async () => {
    for (let batch = 0; !stop; batch++) {
      const ns = Array.from({ length: batchSize }, (_, i) => batch * batchSize + i);
      const records = {
        ids: ns.map((n) => `rec-${String(n).padStart(6, "0")}`),
        embeddings: ns.map(embeddingFor),
        documents: ns.map((n) => `document number ${n}`),
        metadatas: ns.map((n) => ({ batch, n, source: "ingest" })),
      };
      try {
        await collection.add(records);
        acked.ids.push(...records.ids);
        acked.embeddings.push(...records.embeddings);
        acked.documents.push(...records.documents);
        acked.metadatas.push(...records.metadatas);
        if (revising) {
          const at = acked.ids.length - batchSize;
          const revised = { ...records.metadatas[0]!, revised: true };
          await collection.update({ ids: [records.ids[0]!], embeddings: [records.embeddings[0]!], documents: [`${records.documents[0]} (revised)`], metadatas: [revised] });
          acked.documents[at] = `${records.documents[0]} (revised)`;
          acked.metadatas[at] = revised;
        }
      } catch (error) {
        writeFailures.push({ atMs: now(), error: String(error) });
      }
    }
  };

  // Each read asks for the last acknowledged batch: a read must see every acknowledged write.
  const reader = async () => {
    while (!stop) {
      const wanted = acked.ids.slice(-batchSize);
      try {
        if (reads % 2 === 0) {
          const got = await collection.get({ ids: wanted });
          if (got.ids.length !== wanted.length) staleReads.push({ atMs: now(), wanted, got: got.ids });
        } else {
          const result = await collection.query({ queryEmbeddings: [embeddingFor(reads)], nResults: 3 });
          expect(result.ids[0]!.length).toBe(3);
        }
      } catch (error) {
        readFailures.push({ atMs: now(), error: String(error) });
      }
      reads += 1;
    }
  };

  // A second writer, raw, single records: its answers name the instance that took each write.
  const witnessed: Array<{ sentMs: number; answeredMs: number; instance: string | null }> = [];
  const witness = async () => {
    for (let n = 0; !stop; n++) {
      const sentMs = now();
      const record = { ids: [`probe-${String(n).padStart(5, "0")}`], embeddings: [embeddingFor(n)], documents: [`probe ${n}`], metadatas: [{ n, source: "probe" }] };
      try {
        // Embeddings encoded as the official client sends them (base64 float32), so replay can
        // merge these adds with the client's.
        const res = await fetch(`${lb.url}${T}/collections/${collection.id}/add`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ ...record, embeddings: record.embeddings.map(base64Float32) }),
        });
        const body = await res.text();
        if (res.status !== 201) throw new Error(`answered ${res.status}: ${body}`);
        witnessed.push({ sentMs, answeredMs: now(), instance: res.headers.get("x-chroma-lb-instance") });
        probes.ids.push(...record.ids);
        probes.embeddings.push(...record.embeddings);
        probes.documents.push(...record.documents);
        probes.metadatas.push(...record.metadatas);
      } catch (error) {
        writeFailures.push({ atMs: now(), error: String(error) });
      }
      await Bun.sleep(10);
    }
  };

  const poller = async () => {
    while (!stop) {
      const startedMs = now();
      try {
        const status = await json(`${lb.url}/status`);
        const p = status.instances.find((i: { name: string }) => i.name === "primary");
        snapshots.push({ atMs: startedMs, writeTarget: status.write_target, primaryState: p.state, primaryLag: p.lag.entries });
      } catch {
        // chroma-lb itself never goes down in this test; a failed poll shows up as a gap only.
      }
      await Bun.sleep(15);
    }
  };

  const ackedAfter = (count: number) => waitFor(() => acked.ids.length >= count, { timeoutMs: 20_000, message: `${count} records acknowledged` });
  // Searches start once there is something to find.
  const loops = [writer(), witness(), poller()];
  await ackedAfter(2 * batchSize);
  loops.push(reader(), reader());

  try {
    await ackedAfter(10 * batchSize);
    const killMs = now();
    revising = true;
    await primary!.kill("SIGKILL");
    const ackedAtKill = acked.ids.length;

    // The primary is noticed as down and writes go to the replica.
    await waitFor(
      async () => {
        const status = await json(`${lb.url}/status`);
        return status.write_target === "replica" && status.instances[0].state === "down";
      },
      { timeoutMs: 5_000, message: "replica is the write target while the primary is down" },
    );
    await ackedAfter(ackedAtKill + 20 * batchSize);
    await waitFor(() => now() - killMs > 1_500, { message: "an outage of 1.5 s" });
    const lagAtRestart = (await json(`${lb.url}/wal/status`)).instances[0].pending_entries;
    expect(lagAtRestart).toBeGreaterThan(0);

    revising = false;
    const restartMs = now();
    await primary!.restart();
    await waitFor(
      async () => {
        const status = await json(`${lb.url}/status`);
        return status.write_target === "primary" && status.instances[0].state === "healthy";
      },
      { timeoutMs: 15_000, message: "primary caught up and write target again" },
    );
    const ackedAtRejoin = acked.ids.length;
    await ackedAfter(ackedAtRejoin + 10 * batchSize);
    stop = true;
    await Promise.all(loops);

    await waitFor(async () => (await json(`${lb.url}/wal/status`)).pending_writes === 0, { message: "every instance applied every entry" });

    const seconds = (ms: number) => Math.round(ms) / 1000;
    console.log(
      `primary-down: ${acked.ids.length + probes.ids.length} records acknowledged, ${reads} reads; ` +
        `read failures ${readFailures.length}${readFailures.length ? ` (last ${seconds(readFailures.at(-1)!.atMs - killMs)} s after the kill)` : ""}; ` +
        `primary owed ${lagAtRestart} entries at restart`,
    );

    if (readFailures.length) console.log(readFailures.map((f) => `${seconds(f.atMs - killMs)} s: ${f.error.slice(0, 300)}`).join("\n"));
    // No write failed, no read missed an acknowledged write; reads failed, if at all, only just after the kill.
    expect(writeFailures).toEqual([]);
    expect(staleReads).toEqual([]);
    for (const failure of readFailures) {
      expect(failure.atMs).toBeGreaterThanOrEqual(killMs);
      expect(failure.atMs - killMs).toBeLessThan(2_000);
    }

    // After the restart the primary went down -> catching_up -> healthy, and was not the write target before it was healthy.
    const afterRestart = snapshots.filter((s) => s.atMs >= restartMs);
    const firstHealthy = afterRestart.findIndex((s) => s.primaryState === "healthy");
    expect(firstHealthy).toBeGreaterThan(0);
    const beforeHealthy = afterRestart.slice(0, firstHealthy);
    const transitions = afterRestart.filter((s, i) => i === 0 || s.primaryState !== afterRestart[i - 1]!.primaryState || s.writeTarget !== afterRestart[i - 1]!.writeTarget);
    console.log(transitions.map((s) => `${seconds(s.atMs - restartMs)} s: primary ${s.primaryState} (owes ${s.primaryLag}), write target ${s.writeTarget}`).join("\n"));
    expect(beforeHealthy.filter((s) => s.writeTarget === "primary")).toEqual([]);
    expect(beforeHealthy.some((s) => s.primaryState === "catching_up")).toBe(true);
    expect(new Set(beforeHealthy.map((s) => s.primaryState))).toEqual(new Set(["down", "catching_up"]));
    // Writes themselves: none taken by the primary while it was still seen catching up, the
    // replica took them during the outage, and the primary takes them again in the end.
    const lastCatchingUpMs = beforeHealthy.filter((s) => s.primaryState === "catching_up").at(-1)!.atMs;
    expect(witnessed.filter((w) => w.instance === "primary" && w.sentMs > killMs && w.answeredMs < lastCatchingUpMs)).toEqual([]);
    // Nor held back until it was: the flag that says catching up, once cleared, stays cleared until
    // the next outage, so a write sent well before it was last seen could reach the primary only
    // by waiting on the way for the backlog. The margin covers waiting for other writes and a
    // slow status poll: with the Postgres log store on a busy 2-CPU machine one write waited 637 ms.
    expect(witnessed.filter((w) => w.instance === "primary" && w.sentMs > restartMs && w.sentMs < lastCatchingUpMs - 1_500)).toEqual([]);
    expect(witnessed.filter((w) => w.sentMs > killMs + 1_000 && w.answeredMs < restartMs).every((w) => w.instance === "replica")).toBe(true);
    expect(witnessed.at(-1)!.instance).toBe("primary");

    // Both instances hold exactly what was acknowledged, in the same order; the sequential
    // writer's records in the order it was answered.
    const onPrimary = await dumpInstance(primary!.url, "ingest_stream");
    const onReplica = await dumpInstance(replica!.url, "ingest_stream");
    expect(onReplica).toEqual(onPrimary);
    const fromWriter = onPrimary.ids.flatMap((id, i) => (id.startsWith("rec-") ? [i] : []));
    const pick = (dump: Dump, at: number[]): Dump => ({
      ids: at.map((i) => dump.ids[i]!),
      embeddings: at.map((i) => dump.embeddings[i]!),
      documents: at.map((i) => dump.documents[i]!),
      metadatas: at.map((i) => dump.metadatas[i]!),
    });
    expect(pick(onPrimary, fromWriter)).toEqual(acked);
    const fromWitness = onPrimary.ids.flatMap((id, i) => (id.startsWith("probe-") ? [i] : []));
    expect(pick(onPrimary, fromWitness)).toEqual(probes);
    expect(onPrimary.ids.length).toBe(acked.ids.length + probes.ids.length);
  } finally {
    stop = true;
    await Promise.allSettled(loops);
  }
}, 60_000);
