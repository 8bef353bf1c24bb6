/**
 * Wake-up hints between nodes, by LISTEN/NOTIFY on one channel.
 *
 * A hint only shortens a wait: "collection X has a new entry", "a mapping changed",
 * "a maintenance or simulated-outage switch moved". Nothing may depend on a hint arriving:
 * NOTIFY is lost while a listener is disconnected, and LISTEN does not work at all behind a
 * transaction-pooling PgBouncer (the listening session would be handed to other clients).
 * Every consumer therefore also polls on its own schedule (replay's WAL_SYNC_INTERVAL pass),
 * as pg-boss does (timgit/pg-boss src/notifier.ts: "a NOTIFY is only ever a latency hint",
 * falling back to polling) and as River's poll-only mode does for PgBouncer
 * (riverqueue/river CHANGELOG 0.3.0, PR #281).
 *
 * The listener must survive Postgres restarts and cut connections. postgres.js re-issues
 * LISTEN after a reconnect by itself, but a LISTEN that fails while the server is still down
 * is dropped quietly, and a half-open connection is never noticed. So `checkOnce()` proves
 * the path end to end: it sends a ping NOTIFY from this node and waits for it to come back
 * on the listening connection; when it does not, the whole client is thrown away and a new
 * one listens. Each time a LISTEN is (re)established, a `resync` event tells the consumer
 * that hints may have been missed and it should poll everything now.
 */
import type postgres from "postgres";
import { bounded, errorText } from "./bounded";

/** The channel every node listens on. */
export const wakeupChannel = "chroma_lb_wakeup";

/** A hint one node sends the others. */
export type WakeupHint =
  | { kind: "entry"; collection: string }
  | { kind: "mapping"; collection: string | null }
  | { kind: "switch"; what: "maintenance" | "simulation"; instance: string | null };

/** What the consumer's callback receives. */
export type WakeupEvent =
  | (WakeupHint & { from: string })
  /** A LISTEN was (re)established: hints sent meanwhile may be lost, so poll everything now. */
  | { kind: "resync" };

/** NOTIFY payloads are limited to 8000 bytes; ours stay well under, so a bad caller fails loudly here. */
const payloadBytesMax = 4000;

/** The text sent with NOTIFY for `hint` from node `from`; for senders that notify inside their own transaction (`tx.notify`). */
export function hintPayload(from: string, hint: WakeupHint): string {
  const payload = JSON.stringify({ v: 1, from, ...hint });
  if (Buffer.byteLength(payload) > payloadBytesMax) throw new Error(`wake-up hint over ${payloadBytesMax} bytes`);
  return payload;
}

/**
 * Sends `hint` to every listening node. Inside a transaction (pass the transaction), Postgres
 * delivers it at commit and drops it on rollback, so a hint never announces an entry that
 * does not exist. Works through any pooler (only LISTEN needs a session).
 */
export async function publishHint(sql: postgres.Sql | postgres.TransactionSql, from: string, hint: WakeupHint): Promise<void> {
  await sql`select pg_notify(${wakeupChannel}, ${hintPayload(from, hint)})`;
}

type Parsed = (WakeupHint & { from: string }) | { kind: "ping"; from: string; nonce: number } | null;

/** Reads a payload; anything unexpected (another version, another sender's junk) is null and ignored. */
export function parseHint(payload: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.v !== 1 || typeof v.from !== "string") return null;
  const nullableString = (x: unknown) => x === null || typeof x === "string";
  switch (v.kind) {
    case "entry":
      return typeof v.collection === "string" ? { kind: "entry", collection: v.collection, from: v.from } : null;
    case "mapping":
      return nullableString(v.collection) ? { kind: "mapping", collection: v.collection as string | null, from: v.from } : null;
    case "switch":
      return (v.what === "maintenance" || v.what === "simulation") && nullableString(v.instance)
        ? { kind: "switch", what: v.what, instance: v.instance as string | null, from: v.from }
        : null;
    case "ping":
      return typeof v.nonce === "number" ? { kind: "ping", from: v.from, nonce: v.nonce } : null;
    default:
      return null;
  }
}

export interface WakeupListenerOptions {
  /** This node's NODE_ID: its own pings come back to it, its own hints are skipped unless `deliverOwn`. */
  nodeId: string;
  /**
   * Makes a new Postgres client for the listener (one connection for LISTEN, one for pings).
   * Called again after each failure: a fresh client drops whatever state the old one was in.
   */
  connect: () => postgres.Sql;
  /** Called with every hint and every resync; exceptions it throws are caught and counted. */
  onEvent: (event: WakeupEvent) => void;
  /** Bound on LISTEN being established, and on a ping coming back (default 2 000 ms). */
  timeoutMs?: number;
  /** Also deliver hints this node sent itself (default false: the sender acts locally anyway). */
  deliverOwn?: boolean;
}

/** What /status and tests read about the listener. */
export interface WakeupListenerStatus {
  listening: boolean;
  /** LISTEN established, first time included. */
  listens: number;
  /** Clients thrown away after a failed ping or LISTEN. */
  restarts: number;
  hintsReceived: number;
  lastError: string | null;
}

/** Listens for hints; `checkOnce()` (called on a schedule) keeps the listener alive. */
export class WakeupListener {
  private sql: postgres.Sql | null = null;
  private listenHandle: { unlisten(): Promise<void> } | null = null;
  private nonce = 0;
  private readonly pings = new Map<number, () => void>();
  private stopped = false;
  private readonly timeoutMs: number;
  readonly status: WakeupListenerStatus = { listening: false, listens: 0, restarts: 0, hintsReceived: 0, lastError: null };

  constructor(private readonly options: WakeupListenerOptions) {
    this.timeoutMs = options.timeoutMs ?? 2000;
  }

  /**
   * One bounded step: when not listening, start a client and LISTEN; when listening, ping
   * through Postgres and wait for the echo, and on failure start over with a new client.
   * Takes at most about two timeouts.
   */
  async checkOnce(): Promise<WakeupListenerStatus> {
    if (this.stopped) return this.status;
    if (this.sql && this.status.listening) {
      try {
        await this.ping();
        return this.status;
      } catch (error) {
        this.fail(error);
      }
    }
    try {
      await this.listen();
    } catch (error) {
      this.fail(error);
    }
    return this.status;
  }

  /** Stops listening and closes the client. */
  async stop(): Promise<void> {
    this.stopped = true;
    const sql = this.sql;
    this.sql = null;
    this.listenHandle = null;
    this.status.listening = false;
    await sql?.end({ timeout: 1 }).catch(() => {});
  }

  private async listen(): Promise<void> {
    this.teardown();
    const sql = this.options.connect();
    this.sql = sql;
    const handle = await bounded(
      "listen",
      sql.listen(
        wakeupChannel,
        (payload) => this.receive(payload),
        // Runs on the first LISTEN and on every LISTEN the driver re-issues after a reconnect.
        () => {
          if (this.sql !== sql) return;
          this.status.listening = true;
          this.status.listens += 1;
          this.emit({ kind: "resync" });
        },
      ),
      this.timeoutMs,
    );
    if (this.sql !== sql) {
      void handle.unlisten().catch(() => {});
      return;
    }
    this.listenHandle = handle;
  }

  private async ping(): Promise<void> {
    const sql = this.sql!;
    const nonce = ++this.nonce;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const echoed = new Promise<void>((resolve, reject) => {
      this.pings.set(nonce, resolve);
      timer = setTimeout(() => reject(new Error(`wake-up ping not echoed within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    echoed.catch(() => {});
    try {
      await bounded("ping", sql`select pg_notify(${wakeupChannel}, ${JSON.stringify({ v: 1, from: this.options.nodeId, kind: "ping", nonce })})`, this.timeoutMs);
      await echoed;
    } finally {
      clearTimeout(timer);
      this.pings.delete(nonce);
    }
  }

  private receive(payload: string): void {
    const parsed = parseHint(payload);
    if (!parsed) return;
    if (parsed.kind === "ping") {
      if (parsed.from === this.options.nodeId) this.pings.get(parsed.nonce)?.();
      return;
    }
    if (parsed.from === this.options.nodeId && !this.options.deliverOwn) return;
    this.status.hintsReceived += 1;
    this.emit(parsed);
  }

  private emit(event: WakeupEvent): void {
    try {
      this.options.onEvent(event);
    } catch (error) {
      this.status.lastError = `wake-up callback failed: ${errorText(error)}`;
    }
  }

  private fail(error: unknown): void {
    this.status.lastError = errorText(error);
    this.status.restarts += 1;
    this.teardown();
  }

  /** Drops the current client without waiting: its sockets may be dead, and a new one starts at once. */
  private teardown(): void {
    const sql = this.sql;
    this.sql = null;
    this.listenHandle = null;
    this.status.listening = false;
    void sql?.end({ timeout: 0 }).catch(() => {});
  }
}
