/**
 * main: load the configuration, start chroma-lb, stop cleanly on SIGTERM or SIGINT.
 */
import { isMirrorDriverError, type Mirror } from "./collections/mirror";
import { ConfigError, loadConfig } from "./config";
import { startServer } from "./server";

let mirror: Mirror | null = null;
// An error from the Postgres driver's own timers drops the mirror's connection (it
// reconnects at its next sync); any other uncaught error still ends the process.
const uncaught = (error: unknown) => {
  if (isMirrorDriverError(error)) {
    console.error(JSON.stringify({ time: new Date().toISOString(), level: "warn", message: "mirror driver failed; reconnecting", error: String(error) }));
    mirror?.connectionLost(error);
    return;
  }
  console.error("chroma-lb: uncaught error", error);
  process.exit(1);
};
process.on("uncaughtException", uncaught);
process.on("unhandledRejection", uncaught);

try {
  const config = loadConfig(process.env);
  const server = await startServer(config);
  mirror = server.services.mirror;
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
