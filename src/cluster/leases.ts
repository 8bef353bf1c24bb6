/**
 * Replay leases: each (instance, collection) is replayed by one node at a time.
 *
 * A lease is a row in `chroma_lb_replay_leases` with a holder, an expiry set from Postgres's
 * clock, and a fencing token. The design follows River's leader election
 * (riverqueue/river, riverdriver/.../river_leader.sql and internal/leadership/elector.go):
 * an INSERT ... ON CONFLICT that takes a free key, or an expired one, in one statement; a
 * renewal that extends only rows the renewer still holds; expiry judged by the database's
 * `now()`, so nodes' clocks never need to agree. Unlike River's single leader row, a node
 * holds many keys, so acquisition and renewal are batched (one JSON parameter per batch), and each
 * takeover adds one to the row's fencing token (the lease's epoch), so a write made by a
 * holder that lost its lease can be refused (see fenceInTx). A release marks the row
 * expired instead of deleting it, so the epoch never starts over.
 *
 * The holder's own view is conservative: a lease counts as held only until
 * `sentAt + ttl - margin`, where `sentAt` is when the statement that took or renewed it was
 * *sent*, measured on this process's monotonic clock. Postgres set the expiry from its
 * transaction's start, which is after the send, so the local deadline passes before the one
 * in the row, however late the answer arrives; a node cut from Postgres therefore stops
 * replaying before any other node can take its keys. The margin (a tenth of the TTL unless
 * told) covers the two clocks running at slightly different rates and the time between a
 * `holds()` check and the action it allows; a forward jump of the database's clock would
 * still shorten the lease, as it does for River and pg-boss.
 *
 * Rows, not advisory locks: see db/pg-schema.ts (a transaction-pooling PgBouncer breaks session
 * advisory locks).
 */
import type postgres from "postgres";
import { bounded, errorText } from "./bounded";
import { clusterTables } from "./schema";

/** What a lease is for: replaying one collection to one instance. */
export interface LeaseKey {
  instance: string;
  collection: string;
}

/** A lease this node holds. */
export interface Lease extends LeaseKey {
  /** The fencing token (epoch) of this holding: one more than the previous holding's of the same key. */
  token: bigint;
  /** Monotonic time (performance.now()) after which this node no longer counts itself the holder. */
  deadlineMs: number;
}

export interface LeaseManagerOptions {
  /** This node's NODE_ID. */
  nodeId: string;
  /** LEASE_TTL_SECONDS in ms: the lease's life after each acquisition or renewal. */
  ttlMs: number;
  /** Time before the lease's end at which this node stops counting itself holder (default: a tenth of the TTL). */
  safetyMarginMs?: number;
  /** Bound on one acquire, renew or release statement (default: a third of the TTL). */
  statementTimeoutMs?: number;
  /** Keys sent in one statement at most (default 1000); larger requests are split. */
  keysPerStatementMax?: number;
  /** Monotonic clock in ms (default performance.now); tests pass their own. */
  now?: () => number;
}

/** The outcome of tryAcquire: what was taken, and the error when a statement failed. */
export interface AcquireResult {
  acquired: Lease[];
  error: string | null;
}

/** The outcome of renewOnce. */
export interface RenewResult {
  /** Leases extended by this renewal. */
  renewed: number;
  /** Leases Postgres says this node no longer holds (taken over, or released by an operator). */
  lost: LeaseKey[];
  /** Set when the renewal failed; the leases then run out at their local deadlines. */
  error: string | null;
}

/** One row of the lease table, for /status and tests. */
export interface LeaseRow extends LeaseKey {
  nodeId: string;
  token: bigint;
  acquiredAt: Date;
  expiresAt: Date;
  /** Whether the row had expired by Postgres's clock when it was read. */
  expired: boolean;
}

/**
 * Keys (and tokens) as one JSON parameter, read back with jsonb_to_recordset: one statement
 * for a whole batch without depending on the driver's array serialization.
 */
function keysJson(keys: Array<LeaseKey & { token?: bigint }>): string {
  return JSON.stringify(keys.map((k) => ({ instance: k.instance, collection: k.collection, token: k.token?.toString() })));
}

const keyOf = (key: LeaseKey) => `${key.instance}\u0000${key.collection}`;

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** One node's leases: takes, renews and releases them, and knows which it may act on now. */
export class LeaseManager {
  private readonly held = new Map<string, Lease>();
  /** Keys in an acquire statement not answered yet: a second acquire skips them, so one answer decides. */
  private readonly acquiring = new Set<string>();
  private readonly nodeId: string;
  /** TTL less the safety margin: how long after a send this node counts the lease as held. */
  private readonly heldForMs: number;
  private readonly statementTimeoutMs: number;
  private readonly keysPerStatementMax: number;
  private readonly now: () => number;
  private readonly ttlSeconds: number;

  constructor(
    private readonly sql: postgres.Sql,
    options: LeaseManagerOptions,
  ) {
    this.nodeId = options.nodeId;
    this.heldForMs = options.ttlMs - (options.safetyMarginMs ?? Math.floor(options.ttlMs / 10));
    if (!(this.heldForMs > 0)) throw new RangeError("lease TTL must exceed its safety margin");
    this.ttlSeconds = options.ttlMs / 1000;
    this.statementTimeoutMs = options.statementTimeoutMs ?? Math.max(100, Math.floor(options.ttlMs / 3));
    this.keysPerStatementMax = options.keysPerStatementMax ?? 1000;
    this.now = options.now ?? (() => performance.now());
  }

  /** The lease on `key` when this node holds it now (its local deadline not passed), else null. */
  holds(key: LeaseKey): Lease | null {
    const lease = this.held.get(keyOf(key));
    return lease && this.now() < lease.deadlineMs ? { ...lease } : null;
  }

  /** Every lease this node holds now. */
  leases(): Lease[] {
    const now = this.now();
    return [...this.held.values()].filter((l) => now < l.deadlineMs).map((l) => ({ ...l }));
  }

  /**
   * Takes each key that is free or whose lease has expired (a takeover: the previous
   * holder stopped renewing). Keys held by anyone else are left alone, and so are rows that
   * name this NODE_ID but that this process does not hold (an acquisition whose answer was
   * lost to a timeout, a previous run of this node): they may belong to another process
   * misconfigured with the same NODE_ID, so they are only taken once expired. Keys this
   * node holds now are skipped (renewOnce keeps them).
   */
  async tryAcquire(keys: LeaseKey[]): Promise<AcquireResult> {
    const wanted = new Map<string, LeaseKey>();
    for (const key of keys) {
      const id = keyOf(key);
      if (!this.holds(key) && !this.acquiring.has(id)) wanted.set(id, { instance: key.instance, collection: key.collection });
    }
    for (const id of wanted.keys()) this.acquiring.add(id);
    try {
      return await this.acquire([...wanted.values()]);
    } finally {
      for (const id of wanted.keys()) this.acquiring.delete(id);
    }
  }

  private async acquire(keys: LeaseKey[]): Promise<AcquireResult> {
    const acquired: Lease[] = [];
    for (const batch of chunks(keys, this.keysPerStatementMax)) {
      const sentAt = this.now();
      let rows: Array<{ instance: string; collection: string; token: string }>;
      try {
        // ON CONFLICT ... WHERE expired: concurrent acquirers of one key queue on its row
        // lock, and each re-checks the expiry on the row as the previous one left it, so
        // exactly one wins (River's LeaderAttemptElect, with its delete of the expired row
        // folded into the upsert so the row, and its token, carry over). The token is
        // computed under that row lock, so each takeover's is the last one plus one.
        rows = await bounded(
          "lease acquire",
          this.sql`
            insert into ${this.sql(clusterTables.leases)} as l (instance, collection, node_id, token, acquired_at, expires_at)
            select k.instance, k.collection, ${this.nodeId}, 1, now(), now() + make_interval(secs => ${this.ttlSeconds})
            from jsonb_to_recordset(${keysJson(batch)}::text::jsonb) as k(instance text, collection text)
            on conflict (instance, collection) do update
              set node_id = excluded.node_id, token = l.token + 1,
                  acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
              where l.expires_at <= now()
            returning instance, collection, token::text as token`,
          this.statementTimeoutMs,
        );
      } catch (error) {
        return { acquired, error: errorText(error) };
      }
      for (const row of rows) {
        const lease: Lease = { instance: row.instance, collection: row.collection, token: BigInt(row.token), deadlineMs: sentAt + this.heldForMs };
        this.held.set(keyOf(lease), lease);
        acquired.push({ ...lease });
      }
    }
    return { acquired, error: null };
  }

  /**
   * Extends every lease this node holds, including ones whose local deadline has passed
   * while Postgres still shows this node's token (nobody took them meanwhile, so holding
   * them again is safe). One statement per batch of keys; bounded.
   */
  async renewOnce(): Promise<RenewResult> {
    const sent = [...this.held.values()];
    let renewed = 0;
    const lost: LeaseKey[] = [];
    for (const batch of chunks(sent, this.keysPerStatementMax)) {
      const sentAt = this.now();
      let rows: Array<{ instance: string; collection: string; token: string }>;
      try {
        rows = await bounded(
          "lease renew",
          this.sql`
            update ${this.sql(clusterTables.leases)} as l
            set expires_at = now() + make_interval(secs => ${this.ttlSeconds})
            from jsonb_to_recordset(${keysJson(batch)}::text::jsonb) as k(instance text, collection text, token bigint)
            where l.instance = k.instance and l.collection = k.collection
              and l.node_id = ${this.nodeId} and l.token = k.token
              -- A renewal that reaches Postgres after this node's own release must not revive it.
              and l.expires_at > '-infinity'
            returning l.instance, l.collection, l.token::text as token`,
          this.statementTimeoutMs,
        );
      } catch (error) {
        return { renewed, lost, error: errorText(error) };
      }
      const answered = new Set(rows.map((r) => keyOf(r)));
      for (const lease of batch) {
        const key = keyOf(lease);
        const current = this.held.get(key);
        // Released or re-acquired with another token while the renewal was in flight:
        // the answer is about a holding that no longer exists here.
        if (!current || current.token !== lease.token) continue;
        if (answered.has(key)) {
          current.deadlineMs = Math.max(current.deadlineMs, sentAt + this.heldForMs);
          renewed += 1;
        } else {
          this.held.delete(key);
          lost.push({ instance: lease.instance, collection: lease.collection });
        }
      }
    }
    return { renewed, lost, error: null };
  }

  /**
   * Gives up leases so another node can take them at once. They stop counting as held
   * before the statement is sent; when it fails they simply expire.
   */
  async release(keys: LeaseKey[]): Promise<{ released: number; error: string | null }> {
    const leases: Lease[] = [];
    for (const key of keys) {
      const lease = this.held.get(keyOf(key));
      if (!lease) continue;
      this.held.delete(keyOf(key));
      leases.push(lease);
    }
    let released = 0;
    for (const batch of chunks(leases, this.keysPerStatementMax)) {
      try {
        const rows = await bounded(
          "lease release",
          this.sql`
            update ${this.sql(clusterTables.leases)} as l set expires_at = '-infinity'
            from jsonb_to_recordset(${keysJson(batch)}::text::jsonb) as k(instance text, collection text, token bigint)
            where l.instance = k.instance and l.collection = k.collection
              and l.node_id = ${this.nodeId} and l.token = k.token
            returning 1`,
          this.statementTimeoutMs,
        );
        released += rows.length;
      } catch (error) {
        return { released, error: errorText(error) };
      }
    }
    return { released, error: null };
  }

  /** Releases every lease (a graceful stop), so the other nodes need not wait for the TTL. */
  releaseAll(): Promise<{ released: number; error: string | null }> {
    return this.release([...this.held.values()]);
  }

  /** Forgets every lease without telling Postgres: what a crash does. For tests and for a node that must stop at once. */
  abandonAll(): void {
    this.held.clear();
  }
}

/**
 * Inside the transaction that records replay progress for `lease` (the store's "applied up
 * to" update), checks that the lease still carries this token and locks its row until the
 * transaction ends. A takeover updates that row, so it waits for this transaction, and a
 * transaction that starts after a takeover finds another token and must roll back: a holder
 * that lost its lease can never move the position (Kleppmann's fencing tokens).
 */
export async function fenceInTx(tx: postgres.TransactionSql, nodeId: string, lease: Pick<Lease, "instance" | "collection" | "token">): Promise<boolean> {
  const rows = await tx`
    select 1 from ${tx(clusterTables.leases)}
    where instance = ${lease.instance} and collection = ${lease.collection}
      and node_id = ${nodeId} and token = ${lease.token.toString()}::bigint
    for share`;
  return rows.length === 1;
}

/** Every lease row, ordered by key, for /status and tests; bounded by `limit`. */
export async function listLeases(sql: postgres.Sql, limit = 10_000): Promise<LeaseRow[]> {
  const rows = await sql<Array<{ instance: string; collection: string; node_id: string; token: string; acquired_at: Date; expires_at: Date; expired: boolean }>>`
    select instance, collection, node_id, token::text as token, acquired_at, expires_at, expires_at <= now() as expired
    from ${sql(clusterTables.leases)} order by instance, collection limit ${limit}`;
  return rows.map((r) => ({
    instance: r.instance,
    collection: r.collection,
    nodeId: r.node_id,
    token: BigInt(r.token),
    acquiredAt: r.acquired_at,
    expiresAt: r.expires_at,
    expired: r.expired,
  }));
}

/** Keys whose lease has run out (its holder stopped renewing): what a node should try to take over. Bounded by `limit`. */
export async function expiredLeaseKeys(sql: postgres.Sql, limit = 1000): Promise<LeaseKey[]> {
  return sql<LeaseKey[]>`
    select instance, collection from ${sql(clusterTables.leases)}
    where expires_at <= now() order by expires_at limit ${limit}`;
}

/**
 * Deletes the lease rows of `keys` that no one holds (released or expired): for collections
 * that were deleted, whose rows would otherwise stay forever. A row's epoch starts over if
 * its key is ever leased again, so this is only for keys that will not be.
 */
export async function forgetLeases(sql: postgres.Sql, keys: LeaseKey[]): Promise<number> {
  let forgotten = 0;
  for (const batch of chunks(keys, 1000)) {
    const rows = await sql`
      delete from ${sql(clusterTables.leases)} as l
      using jsonb_to_recordset(${keysJson(batch)}::text::jsonb) as k(instance text, collection text)
      where l.instance = k.instance and l.collection = k.collection and l.expires_at <= now()
      returning 1`;
    forgotten += rows.length;
  }
  return forgotten;
}
