/**
 * Token management: `POST /admin/tokens` (the secret is answered this once),
 * `GET /admin/tokens` (never a secret or a hash), `DELETE /admin/tokens/{id}`. Who may call
 * them is decided with every other admin endpoint (rules.ts: an admin credential).
 */
import { Elysia, t } from "elysia";
import { adminDetail } from "../admin/docs";
import { conflict, notFound } from "../errors";
import type { Services } from "../services";
import { anonymous, principalNamePattern } from "./tokens";

export type TokenRouteDeps = Pick<Services, "access">;

const Scope = (what: string) =>
  t.Array(t.String({ minLength: 1, maxLength: 256 }), {
    minItems: 1,
    maxItems: 100,
    description: `${what} the token may use, or ["*"] (the default) for every one`,
  });

export const TokenModel = t.Object({
  id: t.String({ description: "public id, for listing and revoking; not a secret" }),
  name: t.String({ description: "the principal: who holds the token" }),
  role: t.Union([t.Literal("read"), t.Literal("write"), t.Literal("admin")]),
  tenants: t.Array(t.String()),
  databases: t.Array(t.String()),
  created_at: t.Union([t.String({ format: "date-time" }), t.Null()]),
  revoked_at: t.Union([t.String({ format: "date-time" }), t.Null()]),
  source: t.Union([t.Literal("store"), t.Literal("file")], { description: "file: declared in AUTH_TOKENS_FILE" }),
});

const CreatedTokenModel = t.Object({
  ...TokenModel.properties,
  token: t.String({ description: "the secret, shown this once: send it as `Authorization: Bearer <token>` or `X-Chroma-Token: <token>`" }),
});

const CreateTokenModel = t.Object(
  {
    name: t.String({ pattern: principalNamePattern.source, description: "who holds it (letters, digits, . _ @ -; at most 64)" }),
    role: t.Union([t.Literal("read"), t.Literal("write"), t.Literal("admin")], { description: "read < write < admin" }),
    tenants: t.Optional(Scope("tenants")),
    databases: t.Optional(Scope("databases")),
  },
  // additionalProperties stated here: Elysia adds it to a body schema when it first checks one,
  // which would make the document differ before and after the first request.
  { additionalProperties: false, example: { name: "cms", role: "write", tenants: ["default_tenant"], databases: ["*"] } },
);

export function tokenRoutes(deps: TokenRouteDeps) {
  const { access } = deps;
  const by = (request: Request) => (access.principalFor(request) ?? anonymous).name;
  return new Elysia({ name: "tokens" })
    .post(
      "/admin/tokens",
      async ({ body, request, set }) => {
        const { record, secret } = await access.createToken(body, by(request));
        set.status = 201;
        const [view] = (await access.listTokens()).filter((v) => v.id === record.id);
        return { ...view!, token: secret };
      },
      {
        body: CreateTokenModel,
        detail: adminDetail("Create a data token; its secret is answered this once (the first token closes an open data API)", { ok: { 201: CreatedTokenModel } }),
      },
    )
    .get("/admin/tokens", async () => ({ tokens: await access.listTokens() }), {
      detail: adminDetail("Every token, revoked ones included, without secrets", { ok: { 200: t.Object({ tokens: t.Array(TokenModel) }) } }),
    })
    .delete(
      "/admin/tokens/:id",
      async ({ params, request }) => {
        const result = await access.revokeToken(params.id, by(request));
        if (!result.revoked) {
          if (result.reason === "declared") throw conflict(`Token ${params.id} is declared in AUTH_TOKENS_FILE: remove it there and restart`);
          throw notFound(`No token ${params.id} that is not revoked already; GET /admin/tokens lists them`);
        }
        return { id: params.id, revoked: true, revoked_at: new Date(result.atMs).toISOString() };
      },
      {
        params: t.Object({ id: t.String({ description: "the token's id (tok_...)" }) }),
        detail: adminDetail("Revoke a token: refused at once on this node, within 2 s on every other", {
          ok: { 200: t.Object({ id: t.String(), revoked: t.Literal(true), revoked_at: t.String({ format: "date-time" }) }) },
          notFound: "No such token, or revoked already",
        }),
      },
    );
}
