/**
 * The SQLite log's hot-path statements, built and prepared once: building a Drizzle query and
 * preparing its SQL on every call cost more than running it (a profile of one-record adds
 * showed two thirds of chroma-lb's CPU time there).
 */
import { and, asc, count, eq, inArray, lt, lte, ne, sql } from "drizzle-orm";
import type { LocalStore } from "../../db";
import { walBodies, walEntries, walPending } from "../../db/sqlite-schema";
import type { EntryKind } from "../types";

const p = sql.placeholder;

export function prepareStatements(db: LocalStore["db"]) {
  const pendingOf = and(eq(walPending.instance, p("instance")), eq(walPending.seq, p("seq")));
  return {
    insertEntry: db
      .insert(walEntries)
      .values({
        createdAtMs: p("createdAtMs"),
        partition: p("partition"),
        kind: p("kind"),
        op: p("op"),
        tenant: p("tenant"),
        database: p("database"),
        collectionId: p("collectionId"),
        name: p("name"),
        bodyBytes: p("bodyBytes"),
        state: "new",
      })
      .returning({ seq: walEntries.seq })
      .prepare(),
    insertBody: db.insert(walBodies).values({ seq: p("seq"), body: p("body") }).prepare(),
    insertPending: db.insert(walPending).values({ instance: p("instance"), seq: p("seq"), partition: p("partition"), kind: p("kind") }).prepare(),
    setState: db.update(walEntries).set({ state: sql`${p("state")}`, appliedBy: sql`${p("appliedBy")}` }).where(eq(walEntries.seq, p("seq"))).prepare(),
    deletePending: db.delete(walPending).where(pendingOf).returning({ seq: walPending.seq, partition: walPending.partition }).prepare(),
    deletePendingOfEntry: db.delete(walPending).where(eq(walPending.seq, p("seq"))).returning({ instance: walPending.instance }).prepare(),
    deleteBody: db.delete(walBodies).where(eq(walBodies.seq, p("seq"))).prepare(),
    recordFailure: db
      .update(walPending)
      .set({ attempts: sql`${walPending.attempts} + 1`, lastError: sql`${p("error")}`, lastAttemptAtMs: sql`${p("atMs")}` })
      .where(pendingOf)
      .prepare(),
    owedBefore: db
      .select({ seq: walPending.seq })
      .from(walPending)
      .where(and(eq(walPending.instance, p("instance")), eq(walPending.partition, p("partition")), lt(walPending.seq, p("beforeSeq"))))
      .orderBy(asc(walPending.seq))
      .limit(1)
      .prepare(),
    owedBy: db
      .select({ owed: count(), refused: sql<number>`coalesce(sum(${walPending.lastError} LIKE 'refused: %'), 0)` })
      .from(walPending)
      .where(eq(walPending.seq, p("seq")))
      .prepare(),
    heads: db
      .select({ seq: walPending.seq, state: walEntries.state, bodyBytes: walEntries.bodyBytes })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .where(and(eq(walPending.instance, p("instance")), eq(walPending.partition, p("partition")), lte(walPending.seq, p("uptoSeq"))))
      .orderBy(asc(walPending.seq))
      .limit(p("limit"))
      .prepare(),
    pendingWithBodies: db
      .select({ entry: walEntries, body: walBodies.body, attempts: walPending.attempts, lastError: walPending.lastError })
      .from(walPending)
      .innerJoin(walEntries, eq(walEntries.seq, walPending.seq))
      .leftJoin(walBodies, eq(walBodies.seq, walPending.seq))
      .where(and(eq(walPending.instance, p("instance")), eq(walPending.partition, p("partition")), lte(walPending.seq, p("lastSeq"))))
      .orderBy(asc(walPending.seq))
      .prepare(),
  };
}

export type Statements = ReturnType<typeof prepareStatements>;

/** `firstOwedBefore` for one set of kinds, with or without a partition left out. */
export function prepareFirstPending(db: LocalStore["db"], kinds: EntryKind[] | undefined, withExcept: boolean) {
  const conditions = [eq(walPending.instance, p("instance")), lt(walPending.seq, p("beforeSeq"))];
  if (kinds) conditions.push(inArray(walPending.kind, kinds));
  if (withExcept) conditions.push(ne(walPending.partition, p("exceptPartition")));
  return db
    .select({ seq: walPending.seq, partition: walPending.partition })
    .from(walPending)
    .where(and(...conditions))
    .orderBy(asc(walPending.seq))
    .limit(1)
    .prepare();
}

/** What every SQLite log file shares: the open database, its statements, the instances. */
export interface SqliteLogContext {
  local: LocalStore;
  st: Statements;
  instances: string[];
}
