/**
 * The operator's pages, served by chroma-lb itself with every asset local (no CDN, no
 * external font), so they work on a network without internet:
 * - `GET /dashboard`: one page (plain HTML, CSS and a small script, `/dashboard/app.css`
 *   and `/dashboard/app.js`) that polls GET /status, GET /wal/status and GET /events
 *   every second and draws instance states, rates, the log and the recent events.
 * - `GET /swagger`: the Swagger UI over `/swagger/json`, its script and stylesheet served
 *   from the `swagger-ui-dist` package (see swagger-ui.ts).
 * These routes are hidden from the OpenAPI document: they are pages, not API.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Elysia } from "elysia";
import { swaggerUiAssets, swaggerUiPage, type SwaggerUiOptions } from "./swagger-ui";

const hidden = { detail: { hide: true } };

/** A file of this folder as a response built once: the files are small and never change while running. */
function staticFile(name: string, contentType: string): Response {
  return new Response(readFileSync(join(import.meta.dir, name), "utf8"), {
    headers: {
      "content-type": contentType,
      // Revalidated on every load, so a new chroma-lb version is never paired with an old script.
      "cache-control": "no-cache",
    },
  });
}

/**
 * The dashboard and the local Swagger UI. `/swagger` must be registered after the
 * `@elysiajs/swagger` plugin, whose own page at the same path loads Swagger UI from a
 * public CDN: the later route wins (see createApp).
 */
export function dashboardRoutes(swagger: SwaggerUiOptions) {
  const page = staticFile("dashboard.html", "text/html; charset=utf-8");
  const script = staticFile("app.js", "text/javascript; charset=utf-8");
  const style = staticFile("app.css", "text/css; charset=utf-8");
  const assets = swaggerUiAssets();

  return new Elysia({ name: "dashboard" })
    .get("/dashboard", page, hidden)
    .get("/dashboard/app.js", script, hidden)
    .get("/dashboard/app.css", style, hidden)
    .get("/swagger", swaggerUiPage(swagger), hidden)
    .get(
      "/swagger/assets/:file",
      ({ params }) => {
        // Only the named files, never a path a caller makes up.
        const asset = assets.get(params.file);
        if (!asset) return new Response(null, { status: 404 });
        return new Response(Bun.file(asset.path), { headers: { "content-type": asset.contentType, "cache-control": "public, max-age=3600" } });
      },
      hidden,
    );
}
