/**
 * Checks made before a request reaches the log or an instance: inputs Chroma would refuse
 * are answered with Chroma's own status and kind; fine inputs pass untouched.
 */
import { describe, expect, test } from "bun:test";
import { LbError } from "../../src/errors";
import { parsedView, rawView, validateRecordRead as readCheck, validateRecordWrite as writeCheck } from "../../src/proxy/validate";

/**
 * Runs a check over both views of the same body (the raw bytes, and the parsed JSON); they
 * must agree, refusal for refusal, and the outcome is the test's.
 */
function bothViews(json: Record<string, unknown>, check: (view: ReturnType<typeof parsedView>) => void) {
  const outcome = (view: ReturnType<typeof parsedView>) => {
    try {
      check(view);
      return null;
    } catch (error) {
      return error as LbError;
    }
  };
  const parsed = outcome(parsedView(json));
  const raw = outcome(rawView(new TextEncoder().encode(JSON.stringify(json)))!);
  expect(raw && { status: raw.status, kind: raw.kind, message: raw.message }).toEqual(parsed && { status: parsed.status, kind: parsed.kind, message: parsed.message });
  if (parsed) throw parsed;
}
const validateRecordRead = (op: "get" | "query", json: Record<string, unknown>) => bothViews(json, (view) => readCheck(op, view));
const validateRecordWrite = (op: "add" | "upsert" | "update" | "delete", json: Record<string, unknown>) => bothViews(json, (view) => writeCheck(op, view));

function refusal(fn: () => void): { status: number; kind: string; message: string } {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(LbError);
    const e = error as LbError;
    return { status: e.status, kind: e.kind, message: e.message };
  }
  throw new Error("the input was accepted");
}

describe("validateRecordRead", () => {
  test("query with n_results 0 passes, as Chroma 1.0.5 answers it 200 with empty lists", () => {
    expect(() => validateRecordRead("query", { query_embeddings: [[1, 2]], n_results: 0 })).not.toThrow();
  });

  test("query with a negative or fractional n_results is a 422, as Chroma fails to read it as u32", () => {
    for (const n_results of [-3, 1.5, "5"]) {
      expect(refusal(() => validateRecordRead("query", { n_results }))).toEqual({
        status: 422,
        kind: "ChromaError",
        message: "Failed to deserialize the JSON body into the target type: n_results: expected a non-negative integer",
      });
    }
  });

  test("get with a negative limit or offset is a 422, ids that are not strings a 422", () => {
    expect(refusal(() => validateRecordRead("get", { limit: -1 })).status).toBe(422);
    expect(refusal(() => validateRecordRead("get", { offset: -1 })).status).toBe(422);
    expect(refusal(() => validateRecordRead("get", { ids: [1, 2] }))).toEqual({
      status: 422,
      kind: "ChromaError",
      message: "Failed to deserialize the JSON body into the target type: ids: expected a sequence of strings",
    });
  });

  test("fine reads pass", () => {
    expect(() => validateRecordRead("query", { query_embeddings: [[1, 2]], n_results: 1 })).not.toThrow();
    expect(() => validateRecordRead("query", { query_embeddings: [[1, 2]] })).not.toThrow();
    expect(() => validateRecordRead("query", { query_embeddings: [[1, 2]], n_results: null })).not.toThrow();
    expect(() => validateRecordRead("get", {})).not.toThrow();
    expect(() => validateRecordRead("get", { ids: ["a"], limit: 0, offset: 0, include: ["documents"] })).not.toThrow();
  });
});

describe("validateRecordWrite", () => {
  test("add, upsert and update without ids are a 422 naming the field", () => {
    for (const op of ["add", "upsert", "update"] as const) {
      expect(refusal(() => validateRecordWrite(op, { embeddings: [[1]] }))).toEqual({
        status: 422,
        kind: "ChromaError",
        message: "Failed to deserialize the JSON body into the target type: missing field `ids`",
      });
    }
  });

  test("ids that are not a list of strings are a 422", () => {
    expect(refusal(() => validateRecordWrite("add", { ids: "a" })).status).toBe(422);
    expect(refusal(() => validateRecordWrite("add", { ids: ["a", 2] })).status).toBe(422);
  });

  test("a field whose length differs from ids is a 400", () => {
    expect(refusal(() => validateRecordWrite("add", { ids: ["a", "b"], embeddings: [[1]] }))).toEqual({
      status: 400,
      kind: "InvalidArgumentError",
      message: "Inconsistent number of records: 2 ids but 1 embeddings",
    });
    for (const field of ["documents", "metadatas", "uris"]) {
      expect(refusal(() => validateRecordWrite("upsert", { ids: ["a"], [field]: ["x", "y"] }))).toEqual({
        status: 400,
        kind: "InvalidArgumentError",
        message: `Inconsistent number of records: 1 ids but 2 ${field}`,
      });
    }
  });

  test("a field that is neither a list nor a base64 blob is a 422", () => {
    expect(refusal(() => validateRecordWrite("add", { ids: ["a"], documents: { a: "x" } })).status).toBe(422);
  });

  test("fine writes pass", () => {
    expect(() =>
      validateRecordWrite("add", { ids: ["a", "b"], embeddings: [[1], [2]], documents: ["x", null], metadatas: [{ k: 1 }, null], uris: null }),
    ).not.toThrow();
    expect(() => validateRecordWrite("upsert", { ids: ["a"], embeddings: ["AACAPw=="] })).not.toThrow();
    expect(() => validateRecordWrite("update", { ids: ["a"], documents: ["y"] })).not.toThrow();
    // A delete may select by filter alone.
    expect(() => validateRecordWrite("delete", { where: { k: 1 } })).not.toThrow();
    expect(() => validateRecordWrite("delete", { ids: ["a"] })).not.toThrow();
  });

  test("a delete with ids that are not strings is a 422", () => {
    expect(refusal(() => validateRecordWrite("delete", { ids: [1] })).status).toBe(422);
  });
});
