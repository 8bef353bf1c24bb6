/**
 * What the write-ahead log holds, whichever store keeps it.
 *
 * Ordering rules (see README "Guarantees", enforced in replay/order.ts):
 * - entries of one partition (one logical collection, or `meta` for tenants and databases)
 *   are applied by every instance in seq order;
 * - a collection entry is applied only after every earlier `meta` entry (its database exists);
 * - a `meta` entry is applied only after every earlier entry (deleting a database comes last).
 */

export type EntryKind = "records" | "collection" | "meta";

export type EntryOp =
  | "add"
  | "upsert"
  | "update"
  | "delete"
  | "create_collection"
  | "modify_collection"
  | "delete_collection"
  | "create_tenant"
  | "update_tenant"
  | "create_database"
  | "delete_database";

export const META_PARTITION = "meta";

export interface NewEntry {
  partition: string;
  kind: EntryKind;
  op: EntryOp;
  tenant: string;
  database: string;
  collectionId: string | null;
  name: string | null;
  body: Uint8Array | null;
}

export interface Entry extends NewEntry {
  seq: number;
  createdAtMs: number;
  /** `new` while the write target applies it, `ready` once every instance may, `rejected` when none may. */
  state: "new" | "ready" | "rejected";
  appliedBy: string | null;
  bodyBytes: number;
}

/** An entry an instance owes, with its replay attempts there. */
export interface PendingEntry extends Entry {
  attempts: number;
  lastError: string | null;
}

/** A collection an instance refused an entry of, while another instance applied it. */
export interface Divergence {
  instance: string;
  partition: string;
  seq: number;
  op: string;
  error: string;
  refusedEntries: number;
  atMs: number;
}

/** One entry one instance owes, as the in-memory view keeps it (no body). */
export interface OwedRow {
  instance: string;
  seq: number;
  partition: string;
  kind: EntryKind;
  createdAtMs: number;
  state: Entry["state"];
  attempts: number;
  lastError: string | null;
}

/** An entry whose replay failed at least once for one instance (GET /wal/status). */
export interface FailedEntry {
  instance: string;
  seq: number;
  partition: string;
  attempts: number;
  lastError: string | null;
  lastAttemptAtMs: number | null;
  op: string;
}

/** Marks a pending row's last error as a refusal by the instance (4xx), not a failure. */
export const refusedPrefix = "refused: ";
