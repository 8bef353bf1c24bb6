/**
 * OpenAPI descriptions of chroma-lb's admin answers: every admin operation documents its
 * success and the refusals it can give (401 without a credential, 403 with one that is not
 * admin of everything, 404 for an unknown name), each with its schema.
 */
import { t, type DocumentDecoration, type TSchema } from "elysia";
import { ErrorModel } from "../proxy/models";

const json = (schema: TSchema) => ({ content: { "application/json": { schema } } });

/** Any JSON object: for answers whose fields README's "Endpoints" lists. */
export const AnyObject = t.Object({}, { additionalProperties: true, description: "see README, Endpoints" });

/** Success answers that say only that it worked. */
export const SuccessModel = t.Object({ success: t.Boolean(), message: t.Optional(t.String()) }, { additionalProperties: true });

/**
 * The `detail` of one admin operation. `ok` is the success schema by status (200 unless
 * given); `notFound` adds the 404 for an unknown instance, collection or token.
 */
export function adminDetail(summary: string, options: { ok?: Record<number, TSchema>; notFound?: string; description?: string } = {}): DocumentDecoration {
  const responses: Record<string, unknown> = {};
  for (const [status, schema] of Object.entries(options.ok ?? { 200: AnyObject })) responses[status] = { description: "Done", ...json(schema) };
  responses["401"] = { description: "No credential, or an unknown or revoked one", ...json(ErrorModel) };
  responses["403"] = { description: "A token without role admin for every tenant and database", ...json(ErrorModel) };
  if (options.notFound) responses["404"] = { description: options.notFound, ...json(ErrorModel) };
  responses["422"] = { description: "A body or parameter that does not fit the schema", ...json(ErrorModel) };
  return { summary, description: options.description, tags: ["chroma-lb admin"], responses } as DocumentDecoration;
}
