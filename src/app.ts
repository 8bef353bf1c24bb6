/**
 * createApp composes chroma-lb's plugins into one Elysia app: no listening, no timers,
 * so tests can build apps side by side and call `app.handle(new Request(...))`.
 */
import { swagger } from "@elysiajs/swagger";
import { Elysia } from "elysia";
import { adminRoutes } from "./admin/routes";
import { tokenRoutes } from "./auth/routes";
import { dashboardRoutes } from "./dashboard/routes";
import { LbError, TRACE_ID_HEADER, TRACE_ID_NONE, errorResponse, fileSystemFull, storageRetryAfterSeconds } from "./errors";
import { ChromaApi } from "./proxy/api";
import { chromaRoutes } from "./proxy/routes";
import type { Services } from "./services";
import { isStorageFullError } from "./wal/storage";
import { isPostgresUnreachable } from "./wal/postgres";
import { StatementTimeout } from "./cluster/bounded";

/** What the app needs: every service but the process-level `close`. */
export type AppDeps = Omit<Services, "close">;

export const serviceVersion = "0.1.0";

export function createApp(deps: AppDeps) {
  const api = new ChromaApi(deps);
  return new Elysia({ name: "chroma-lb" })
    .use(
      swagger({
        path: "/swagger",
        specPath: "/swagger/json",
        provider: "swagger-ui",
        documentation: {
          info: {
            title: "chroma-lb",
            version: serviceVersion,
            description:
              "High-availability load balancer for ChromaDB. Chroma's v2 API, unchanged for official clients, over several instances kept in step by a durable write-ahead log; plus chroma-lb's own status and admin endpoints.",
          },
          tags: [
            { name: "Chroma API", description: "Chroma's v2 API, served through chroma-lb" },
            { name: "chroma-lb status", description: "Health, status, log and metrics (read-only)" },
            { name: "chroma-lb admin", description: "Mappings, instances and tokens: ADMIN_TOKEN or a token of role admin for every tenant and database" },
          ],
          components: {
            securitySchemes: {
              bearer: { type: "http", scheme: "bearer", description: "`Authorization: Bearer <token>`: a data token, or ADMIN_TOKEN" },
              chromaToken: { type: "apiKey", in: "header", name: "X-Chroma-Token", description: "`X-Chroma-Token: <token>`: the same tokens, as Chroma's clients send them" },
            },
          },
          // Either scheme; operations open to anyone say `security: []`.
          security: [{ bearer: [] }, { chromaToken: [] }],
        },
      }),
    )
    // Access is decided as a request arrives, before its body is read: the caller learns
    // nothing from how its body would be judged, and nothing reaches an instance.
    .onRequest(({ request }) => deps.access.check(request, new URL(request.url).pathname) ?? undefined)
    .onError(({ error, code }) => {
      if (error instanceof LbError) return errorResponse(error);
      // Wherever the log met a full file system (an append, a catch-up, cleanup), the
      // answer is the same 507 as at WAL_MAX_DISK_MB, never a 500.
      if (isStorageFullError(error)) return errorResponse(fileSystemFull());
      // Postgres (the log, the mappings, the cluster's tables) did not answer during the
      // request: 503 for the client to retry, never a 500. drizzle wraps the driver's error.
      const pgError = [error, (error as { cause?: unknown })?.cause].find((e) => isPostgresUnreachable(e) || e instanceof StatementTimeout);
      if (pgError) {
        return errorResponse(
          new LbError(503, "ServiceUnavailable", `Postgres did not answer during this request (${String((pgError as Error).message)}); retry`, { "Retry-After": String(storageRetryAfterSeconds) }),
        );
      }
      switch (code) {
        case "NOT_FOUND":
          // Chroma answers unknown routes with 404 and an empty body.
          return new Response(null, { status: 404, headers: { [TRACE_ID_HEADER]: TRACE_ID_NONE } });
        case "VALIDATION":
          return errorResponse(new LbError(422, "ChromaError", `Invalid request: ${(error as Error).message.split("\n")[0]}`));
        case "PARSE":
          return errorResponse(new LbError(400, "InvalidArgumentError", "The request body is not valid JSON"));
        default:
          deps.log.error("unexpected error", { error: String(error), stack: (error as Error)?.stack });
          return errorResponse(new LbError(500, "InternalError", `chroma-lb failed to handle the request: ${String((error as Error)?.message ?? error)}`));
      }
    })
    .use(adminRoutes(deps))
    .use(tokenRoutes(deps))
    // After the swagger plugin: its page at /swagger loads Swagger UI from a CDN, this one
    // from chroma-lb itself, and the later route wins.
    .use(dashboardRoutes({ title: "chroma-lb API", specPath: "/swagger/json" }))
    .use(chromaRoutes(api, deps))
    .all("/api/v1/*", () => errorResponse(new LbError(410, "Gone", "The v1 API is gone; use /api/v2")), { detail: { hide: true } });
}

export type App = ReturnType<typeof createApp>;
