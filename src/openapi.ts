/**
 * `bun run openapi`: writes the OpenAPI document the running app serves at /swagger/json
 * to openapi/openapi.json. A test fails when the file and the app differ.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "./app";
import { loadConfig } from "./config";
import { buildServices } from "./server";
import { createLogger } from "./observability/log";

/** Builds an app against throwaway stores and returns its OpenAPI document as formatted JSON. */
export async function renderOpenApi(): Promise<string> {
  const dataDir = mkdtempSync(join(tmpdir(), "chroma-lb-openapi-"));
  try {
    const config = loadConfig({ CHROMA_PRIMARY_URL: "http://127.0.0.1:1", CHROMA_REPLICA_URL: "http://127.0.0.1:2", DATA_DIR: dataDir });
    const services = await buildServices(config, createLogger("error"));
    const app = createApp(services);
    const response = await app.handle(new Request("http://localhost/swagger/json"));
    const document = await response.json();
    await services.close();
    return JSON.stringify(document, null, 2) + "\n";
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const path = join(import.meta.dir, "..", "openapi", "openapi.json");
  writeFileSync(path, await renderOpenApi());
  console.log(`wrote ${path}`);
}
