/**
 * The recent events an operator (or the dashboard, polling `GET /events`) wants to see:
 * alerts, their resolutions, and instance health transitions. A bounded ring buffer in
 * memory, newest last; nothing is persisted (the log lines on stderr are the record).
 */
import { t } from "elysia";

export type EventLevel = "info" | "warn" | "error";

export interface RecentEvent {
  /** When it happened (ISO 8601). */
  at: string;
  /** What happened: an alert's event name (`instance_down`, ...) or `instance_health`. */
  event: string;
  level: EventLevel;
  instance?: string;
  collection?: string;
  message: string;
  /** True on the message that says an alert's condition cleared. */
  resolved?: boolean;
  /** Audit events: who made the call (a token's principal, `admin-token`, or `anonymous` while open). */
  principal?: string;
  /** Audit events: what the call was about (`tenant/database/collection (id)`, a token id). */
  target?: string;
}

/** Events kept by default: enough for the dashboard's last minutes, small in memory. */
export const recentEventsMaxDefault = 200;

export class RecentEvents {
  private readonly items: RecentEvent[] = [];
  private dropped = 0;

  constructor(
    /** Events kept at most; the oldest go first. */
    readonly eventsMax = recentEventsMaxDefault,
    private readonly now: () => number = Date.now,
  ) {}

  /** Records one event, stamped now. */
  push(event: Omit<RecentEvent, "at">): RecentEvent {
    const stamped: RecentEvent = { at: new Date(this.now()).toISOString(), ...withoutUndefined(event) };
    this.items.push(stamped);
    if (this.items.length > this.eventsMax) {
      this.items.splice(0, this.items.length - this.eventsMax);
      this.dropped += 1;
    }
    return stamped;
  }

  /** Every kept event, oldest first (newest last). */
  list(): RecentEvent[] {
    return this.items.slice();
  }

  /** Events pushed out of the buffer so far. */
  get droppedCount(): number {
    return this.dropped;
  }
}

/** Optional fields are left out rather than sent as `undefined` (or `null`) in JSON. */
function withoutUndefined(event: Omit<RecentEvent, "at">): Omit<RecentEvent, "at"> {
  const out: Omit<RecentEvent, "at"> = { event: event.event, level: event.level, message: event.message };
  if (event.instance !== undefined) out.instance = event.instance;
  if (event.collection !== undefined) out.collection = event.collection;
  if (event.resolved !== undefined) out.resolved = event.resolved;
  if (event.principal !== undefined) out.principal = event.principal;
  if (event.target !== undefined) out.target = event.target;
  return out;
}

/** The answer of `GET /events` (validation, types and OpenAPI from one definition). */
export const RecentEventsModel = t.Object({
  events: t.Array(
    t.Object({
      at: t.String({ format: "date-time", description: "when it happened" }),
      event: t.String({
        description:
          "an alert's event (instance_down, replication_lag, ...), instance_health, or an audited call (delete_collection, delete_database, delete_records, update_tenant, reset, token_created, token_revoked)",
      }),
      level: t.Union([t.Literal("info"), t.Literal("warn"), t.Literal("error")]),
      instance: t.Optional(t.String()),
      collection: t.Optional(t.String()),
      message: t.String(),
      resolved: t.Optional(t.Boolean({ description: "true on the message that says an alert's condition cleared" })),
      principal: t.Optional(t.String({ description: "audited calls: who made it" })),
      target: t.Optional(t.String({ description: "audited calls: tenant/database/collection (id), or a token id" })),
    }),
    { description: "oldest first, newest last" },
  ),
});
