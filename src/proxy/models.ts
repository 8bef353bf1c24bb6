/**
 * Schemas of Chroma's v2 API as chroma-lb serves it, for the OpenAPI document. Bodies are
 * passed to Chroma as bytes (never re-encoded), so these describe rather than validate;
 * chroma-lb's own checks live in validate.ts.
 */
import { t } from "elysia";

export const ErrorModel = t.Object(
  { error: t.String({ description: "Error kind, as Chroma names it" }), message: t.String() },
  { description: "Chroma's error shape, used by chroma-lb too" },
);

const Metadata = t.Record(t.String(), t.Union([t.String(), t.Number(), t.Boolean(), t.Null()]));
const Embeddings = t.Union([t.Array(t.Array(t.Number())), t.Array(t.String({ description: "base64 little-endian float32" }))]);
const Where = t.Record(t.String(), t.Any(), { description: "metadata filter" });
const Include = t.Array(t.Union([t.Literal("documents"), t.Literal("embeddings"), t.Literal("metadatas"), t.Literal("distances"), t.Literal("uris")]));

export const CollectionModel = t.Object({
  id: t.String({ format: "uuid", description: "chroma-lb's collection id: the same on every answer, whichever instance served it" }),
  name: t.String(),
  configuration_json: t.Record(t.String(), t.Any()),
  metadata: t.Union([Metadata, t.Null()]),
  dimension: t.Union([t.Integer(), t.Null()]),
  tenant: t.String(),
  database: t.String(),
  log_position: t.Integer(),
  version: t.Integer(),
});

/**
 * The collection the request examples use: "Try it out" on create (get_or_create, so it
 * works twice), then add, then query, each unchanged, in the Swagger UI.
 */
export const exampleCollectionName = "swagger-demo";

export const CreateCollectionModel = t.Object(
  {
    name: t.String({ minLength: 3, maxLength: 512, pattern: "^[a-zA-Z0-9][a-zA-Z0-9._-]*[a-zA-Z0-9]$" }),
    metadata: t.Optional(t.Union([Metadata, t.Null()])),
    configuration: t.Optional(t.Union([t.Record(t.String(), t.Any()), t.Null()])),
    get_or_create: t.Optional(t.Boolean()),
  },
  { example: { name: exampleCollectionName, metadata: { source: "swagger" }, get_or_create: true } },
);

export const ModifyCollectionModel = t.Object(
  {
    new_name: t.Optional(t.String()),
    new_metadata: t.Optional(Metadata),
    new_configuration: t.Optional(t.Record(t.String(), t.Any())),
  },
  { example: { new_metadata: { source: "swagger", edited: true } } },
);

const exampleRecords = {
  ids: ["doc-1", "doc-2"],
  embeddings: [
    [0.1, 0.2, 0.3],
    [0.3, 0.2, 0.1],
  ],
  documents: ["the first document", "the second document"],
  metadatas: [{ source: "swagger" }, { source: "swagger" }],
};

export const AddRecordsModel = t.Object(
  {
    ids: t.Array(t.String()),
    embeddings: t.Optional(Embeddings),
    documents: t.Optional(t.Array(t.Union([t.String(), t.Null()]))),
    metadatas: t.Optional(t.Array(t.Union([Metadata, t.Null()]))),
    uris: t.Optional(t.Array(t.Union([t.String(), t.Null()]))),
  },
  { example: exampleRecords },
);

export const DeleteRecordsModel = t.Object(
  {
    ids: t.Optional(t.Array(t.String())),
    where: t.Optional(Where),
    where_document: t.Optional(Where),
  },
  { example: { ids: ["doc-2"] } },
);

export const GetRecordsModel = t.Object({
  ids: t.Optional(t.Array(t.String())),
  where: t.Optional(Where),
  where_document: t.Optional(Where),
  limit: t.Optional(t.Integer({ minimum: 0 })),
  offset: t.Optional(t.Integer({ minimum: 0 })),
  include: t.Optional(Include),
}, { example: { limit: 10, include: ["documents", "metadatas"] } });

export const QueryRecordsModel = t.Object({
  query_embeddings: Embeddings,
  n_results: t.Optional(t.Integer({ minimum: 1, description: "below 1 is refused with 400 (Chroma would drop the connection)" })),
  ids: t.Optional(t.Array(t.String())),
  where: t.Optional(Where),
  where_document: t.Optional(Where),
  include: t.Optional(Include),
}, { example: { query_embeddings: [[0.1, 0.2, 0.3]], n_results: 2, include: ["documents", "metadatas", "distances"] } });

export const GetResultModel = t.Object({
  ids: t.Array(t.String()),
  embeddings: t.Optional(t.Union([t.Array(t.Array(t.Number())), t.Null()])),
  documents: t.Optional(t.Union([t.Array(t.Union([t.String(), t.Null()])), t.Null()])),
  metadatas: t.Optional(t.Union([t.Array(t.Union([Metadata, t.Null()])), t.Null()])),
  uris: t.Optional(t.Union([t.Array(t.Union([t.String(), t.Null()])), t.Null()])),
  include: t.Array(t.String()),
});

export const QueryResultModel = t.Object({
  ids: t.Array(t.Array(t.String())),
  distances: t.Optional(t.Union([t.Array(t.Array(t.Union([t.Number(), t.Null()]))), t.Null()])),
  embeddings: t.Optional(t.Union([t.Array(t.Array(t.Array(t.Number()))), t.Null()])),
  documents: t.Optional(t.Union([t.Array(t.Array(t.Union([t.String(), t.Null()]))), t.Null()])),
  metadatas: t.Optional(t.Union([t.Array(t.Array(t.Union([Metadata, t.Null()]))), t.Null()])),
  include: t.Array(t.String()),
});

export const TenantModel = t.Object({ name: t.String() });
export const DatabaseModel = t.Object({ id: t.Optional(t.String()), name: t.String(), tenant: t.Optional(t.String()) });
export const NameModel = t.Object({ name: t.String() }, { example: { name: "swagger_demo_db" } });
export const EmptyModel = t.Object({}, { description: "an empty object" });
