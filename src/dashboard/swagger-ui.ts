/**
 * Swagger UI from the `swagger-ui-dist` package instead of a CDN. `@elysiajs/swagger`
 * 1.3 writes `https://unpkg.com/swagger-ui-dist@VERSION/swagger-ui-bundle.js` into its
 * page whatever its options say (only the stylesheet URL is configurable), so chroma-lb
 * serves its own small page at the same path and keeps the plugin for the spec at
 * `/swagger/json`.
 */
import { dirname, join } from "node:path";

export interface SwaggerUiOptions {
  /** The page title. */
  title: string;
  /** Where the OpenAPI document is, e.g. `/swagger/json`. */
  specPath: string;
}

/** The files of swagger-ui-dist the page loads, by the name it asks for. */
export function swaggerUiAssets(): Map<string, { path: string; contentType: string }> {
  const root = dirname(Bun.resolveSync("swagger-ui-dist/package.json", import.meta.dir));
  return new Map([
    ["swagger-ui-bundle.js", { path: join(root, "swagger-ui-bundle.js"), contentType: "text/javascript; charset=utf-8" }],
    ["swagger-ui.css", { path: join(root, "swagger-ui.css"), contentType: "text/css; charset=utf-8" }],
  ]);
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/**
 * The page. Absolute paths, so `/swagger/` loads the same files as `/swagger`.
 * `validatorUrl: null` keeps Swagger UI from asking validator.swagger.io for a badge.
 */
export function swaggerUiPage({ title, specPath }: SwaggerUiOptions): Response {
  const config = { url: specPath, dom_id: "#swagger-ui", validatorUrl: null, deepLinking: true };
  const html = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${escapeHtml(title)}</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/swagger/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/swagger/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle(${JSON.stringify(config).replace(/</g, "\\u003c")});
  </script>
</body>
</html>
`;
  return new Response(html, { headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" } });
}
