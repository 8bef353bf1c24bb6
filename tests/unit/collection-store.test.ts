/**
 * CollectionStore: a collection whose mapping the store refused (Postgres cut) leaves memory
 * again, so its name does not resolve to a collection no instance has and no log entry
 * creates (chaos, NODES=3, seed 734099232: a write to that name was logged against it and
 * never applied, so the log never drained).
 */
import { expect, test } from "bun:test";
import { CollectionStore, type CollectionRow, type MappingStore } from "../../src/collections/store";

function fakeStore(): MappingStore & { refuse: boolean; rows: CollectionRow[] } {
  const store = {
    shared: true,
    refuse: false,
    rows: [] as CollectionRow[],
    load: async () => ({ collections: [...store.rows], instanceUuids: [] }),
    async upsertCollection(row: CollectionRow) {
      if (store.refuse) throw new Error("connect ECONNREFUSED 127.0.0.1:5432");
      store.rows.push(row);
    },
    updateCollection: async () => {},
    setInstanceUuid: async () => {},
    replaceAll: async () => {},
  };
  return store;
}

test("a create the store refused leaves no mapping behind; one it took stays", async () => {
  const store = fakeStore();
  const collections = await CollectionStore.open(store);
  store.refuse = true;
  await expect(collections.create("7d16fe51-3e2c-4fbf-97c6-3cd00483cd8f", "t", "d", "churn_b")).rejects.toThrow("ECONNREFUSED");
  expect(collections.byName("t", "d", "churn_b")).toBeUndefined();
  expect(collections.get("7d16fe51-3e2c-4fbf-97c6-3cd00483cd8f")).toBeUndefined();
  expect(collections.resolve("t", "d", "churn_b")).toBeUndefined();

  store.refuse = false;
  const record = await collections.create("9e763335-6ec3-4359-af59-8ac72a9e4719", "t", "d", "churn_b");
  expect(collections.byName("t", "d", "churn_b")).toBe(record);
  expect(store.rows.map((r) => r.id)).toEqual(["9e763335-6ec3-4359-af59-8ac72a9e4719"]);
});
