/**
 * main: load the configuration, start chroma-lb, stop cleanly on SIGTERM or SIGINT.
 */
import { ConfigError, loadConfig } from "./config";
import { startServer } from "./server";

try {
  const config = loadConfig(process.env);
  const server = await startServer(config);
  console.log(`chroma-lb listening on ${server.url} (Swagger UI: ${server.url}/swagger)`);
  const shutdown = async (signal: string) => {
    console.log(`chroma-lb stopping (${signal})`);
    await server.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`chroma-lb: bad configuration: ${error.message}`);
    process.exit(1);
  }
  throw error;
}
