/**
 * What a chaos run runs against: two real Chroma servers (the primary and the replica, each
 * on its own temp data dir), chroma-lb as a child process, and a fresh Postgres database for
 * the mirror reached through a TCP proxy, so that Postgres can be "stopped" by cutting the
 * proxy without touching the real server. With several nodes (LOG_STORE=postgres only), each
 * node is a chroma-lb process with a proxy of its own in front of the run's Postgres, so one
 * node can be cut from it while the others go on.
 */
import fs from "node:fs";
import path from "node:path";
import postgres from "postgres";
import { startChromaServers, startLbProcess, waitFor, type ChromaServer, type ChromaServers, type LbProcess } from "../support";
import { startPgServer, type PgServer } from "../support/pg-server";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy";

export type InstanceName = "primary" | "replica";
export const instanceNames: readonly InstanceName[] = ["primary", "replica"];

/** Where each run creates (and at the end drops) its own mirror database. */
const postgresAdminUrlDefault = "postgres://postgres@127.0.0.1:5432/test";

/** One chroma-lb node and the proxy its DATABASE_URL points at. */
export interface Node {
  readonly lb: LbProcess;
  readonly proxy: TcpProxy;
}

export interface Cluster {
  readonly instances: Record<InstanceName, ChromaServer>;
  /** The first node's chroma-lb. */
  readonly lb: LbProcess;
  /** The proxy in front of Postgres that the first node's DATABASE_URL points at. */
  readonly postgresProxy: TcpProxy;
  /** Every node (one unless `nodes` was given). */
  readonly nodes: readonly Node[];
  /** The URL of a node whose process is alive (the first one's when none is). */
  anyLbUrl(): string;
  /** The mirror database's name (or, with LOG_STORE=postgres, the store's). */
  readonly database: string;
  /** With LOG_STORE=postgres: the run's own Postgres server (SIGKILLed by `kill-postgres`), which holds the log. */
  readonly postgres: PgServer | null;
  /** Copies every process log into `dir` (kept for a failed run). */
  keepLogs(dir: string): string[];
  /** Stops everything and drops the mirror database. */
  [Symbol.asyncDispose](): Promise<void>;
}

export interface ClusterOptions {
  /** Postgres to create the mirror database in. Default `CHAOS_POSTGRES_URL` or postgres://postgres@127.0.0.1:5432/test. */
  postgresAdminUrl?: string;
  /** `postgres`: chroma-lb keeps its log in a Postgres server of the run's own (LOG_STORE=postgres). */
  logStore?: "sqlite" | "postgres";
  /** chroma-lb nodes sharing the run's Postgres; more than one needs logStore postgres. Default 1. */
  nodes?: number;
}

/** Starts the two Chroma servers, the Postgres proxy and chroma-lb, and resolves once chroma-lb sees both instances. */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const nodeCount = opts.nodes ?? 1;
  if (nodeCount > 1 && opts.logStore !== "postgres") throw new Error("chaos: several nodes need LOG_STORE=postgres (they share its log)");
  // Each node keeps up to about 25 connections (README "Running several nodes"); reconnect
  // storms after a fault need headroom above that.
  const ownPostgres = opts.logStore === "postgres" ? await startPgServer({ settings: { max_connections: "200" } }) : null;
  const adminUrl = ownPostgres ? ownPostgres.url("postgres") : (opts.postgresAdminUrl ?? process.env.CHAOS_POSTGRES_URL ?? postgresAdminUrlDefault);
  const target = new URL(adminUrl);
  const database = `chaos_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    await admin.unsafe(`CREATE DATABASE ${database}`);
  } catch (error) {
    await admin.end({ timeout: 1 });
    throw new Error(`chaos: cannot create the mirror database through ${target.host} (is Postgres running?): ${(error as Error).message}`);
  }

  const disposers: Array<() => Promise<void>> = [
    async () => {
      await ownPostgres?.[Symbol.asyncDispose]();
    },
    async () => {
      await Promise.resolve(admin.unsafe(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)).catch(() => {});
      await admin.end({ timeout: 2 });
    },
  ];
  const dispose = async () => {
    for (const d of disposers.reverse()) await d().catch(() => {});
  };

  try {
    const servers: ChromaServers = await startChromaServers(2);
    disposers.push(async () => servers[Symbol.asyncDispose]());
    const instances = { primary: servers[0]!, replica: servers[1]! };
    const nodes: Node[] = [];
    for (let i = 0; i < nodeCount; i++) {
      const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
      disposers.push(() => proxy.close());
      const mirrorUrl = new URL(adminUrl);
      mirrorUrl.host = `127.0.0.1:${proxy.port}`;
      mirrorUrl.pathname = `/${database}`;
      const lb = await startLbProcess({
        CHROMA_PRIMARY_URL: instances.primary.url,
        CHROMA_REPLICA_URL: instances.replica.url,
        HEALTH_CHECK_INTERVAL: "1",
        HEALTH_CHECK_TIMEOUT: "0.3",
        REQUEST_TIMEOUT: "5",
        // CHAOS_LOG_LEVEL=debug logs every batch each node applies (instance, positions).
        LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? "info",
        DATABASE_URL: mirrorUrl.toString(),
        ...(ownPostgres ? { LOG_STORE: "postgres" } : {}),
        ...(nodeCount > 1 ? { NODE_ID: `node-${i}`, NODE_HEARTBEAT_INTERVAL: "1", LEASE_TTL_SECONDS: "6" } : {}),
      });
      disposers.push(() => lb[Symbol.asyncDispose]());
      nodes.push({ lb, proxy });
    }
    for (const { lb } of nodes) {
      await waitFor(async () => ((await (await fetch(`${lb.url}/health`)).json()) as { healthy_instances?: string }).healthy_instances === "2/2", {
        message: `chroma-lb ${lb.url} sees both instances healthy`,
        timeoutMs: 20_000,
      });
    }
    const lb = nodes[0]!.lb;
    const postgresProxy = nodes[0]!.proxy;
    return {
      instances,
      lb,
      postgresProxy,
      nodes,
      anyLbUrl: () => (nodes.find((n) => n.lb.alive) ?? nodes[0]!).lb.url,
      database,
      postgres: ownPostgres,
      keepLogs(dir) {
        fs.mkdirSync(dir, { recursive: true });
        const kept: string[] = [];
        for (const [label, logPath] of [
          ...nodes.map((n, i) => [nodes.length > 1 ? `chroma-lb-node-${i}.log` : "chroma-lb.log", n.lb.logPath] as const),
          ["primary.log", instances.primary.logPath],
          ["replica.log", instances.replica.logPath],
        ] as const) {
          try {
            const to = path.join(dir, label);
            fs.copyFileSync(logPath, to);
            kept.push(to);
          } catch {
            // A log that was never written has nothing to keep.
          }
        }
        return kept;
      },
      [Symbol.asyncDispose]: dispose,
    };
  } catch (error) {
    await dispose();
    throw error;
  }
}
