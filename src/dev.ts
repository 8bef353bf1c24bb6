/**
 * The embedded default (`bun run dev`): with no instances configured, starts two real
 * local Chroma servers with their data under DATA_DIR, then chroma-lb on PORT (8000),
 * SQLite only. Ctrl-C stops everything it started.
 *
 * Each Chroma server keeps its port in DATA_DIR/chroma-<name>/port, so that it comes back
 * on the same port: `bun run dev --chroma <name>` starts that one server alone (in the
 * foreground), which is how to bring one back after killing it to try a failover; the
 * command is printed at start.
 */
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import type { Subprocess } from "bun";
import { ConfigError, loadConfig } from "./config";
import { chromaDir, chromaPort, spawnChroma, startChroma } from "./dev-chroma";
import { startServer } from "./server";

const chromaNames = ["primary", "replica"] as const;

/** The command that starts one local Chroma server again, on its port, from this folder. */
function restartCommand(name: string, dataDirSetting: string | undefined): string {
  const prefix = dataDirSetting ? `DATA_DIR=${JSON.stringify(dataDirSetting)} ` : "";
  return `${prefix}bun run dev --chroma ${name}`;
}

/** `bun run dev --chroma <name>`: one local Chroma server alone, on its remembered port, until Ctrl-C. */
async function runOneChroma(name: string, dataDir: string): Promise<never> {
  if (!(chromaNames as readonly string[]).includes(name)) {
    console.error(`chroma-lb: --chroma takes ${chromaNames.join(" or ")}, got ${JSON.stringify(name)}`);
    process.exit(2);
  }
  const path = chromaDir(dataDir, name);
  mkdirSync(path, { recursive: true });
  const port = await chromaPort(dataDir, name);
  console.log(`Starting Chroma server "${name}" on http://127.0.0.1:${port} (data in ${path}); Ctrl-C stops it.`);
  const child = spawnChroma(path, port, "inherit");
  const stop = () => child.kill("SIGTERM");
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  process.exit(await child.exited);
}

const children: Subprocess[] = [];
const stopChildren = () => {
  for (const child of children) child.kill("SIGTERM");
};

try {
  const env = { ...process.env };
  const dataDir = env.DATA_DIR?.trim() || "./data";
  const args = process.argv.slice(2);
  const chromaFlag = args.indexOf("--chroma");
  if (chromaFlag >= 0) await runOneChroma(args[chromaFlag + 1] ?? "", dataDir);

  const configured = env.CHROMA_INSTANCES || env.CHROMA_PRIMARY_URL;
  if (!configured) {
    console.log(`Starting two local Chroma servers (data in ${resolve(dataDir)}) ...`);
    const started: Record<string, string> = {};
    for (const name of chromaNames) {
      const server = await startChroma(name, dataDir);
      children.push(server.process);
      started[name] = server.url;
    }
    env.CHROMA_PRIMARY_URL = started.primary;
    env.CHROMA_REPLICA_URL = started.replica;
    for (const name of chromaNames) {
      console.log(`  ${name.padEnd(7)} ${started[name]}   after a kill, start it again on this port with: ${restartCommand(name, env.DATA_DIR?.trim())}`);
    }
  }
  const config = loadConfig(env);
  const server = await startServer(config);
  const single = config.instances.length === 1;
  console.log(`\nchroma-lb is ready${env.PORT ? "" : ` on its default port ${config.port}`}.
  API (point a chromadb client here): ${server.url}
  Swagger UI:                         ${server.url}/swagger
  Dashboard:                          ${server.url}/dashboard
  Status:                             ${server.url}/status
Another port: PORT=8001 bun run dev${
    single
      ? `\n\nWARNING: only one Chroma instance (${config.instances[0]!.name}): there is no failover. While it is down, reads fail and writes are only logged. Set CHROMA_REPLICA_URL (or CHROMA_INSTANCES) to add a second.`
      : ""
  }
Press Ctrl-C to stop.`);
  const shutdown = async () => {
    await server.stop();
    stopChildren();
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown());
  process.on("SIGTERM", () => void shutdown());
} catch (error) {
  stopChildren();
  if (error instanceof ConfigError) {
    console.error(`chroma-lb: bad configuration: ${error.message}`);
    process.exit(1);
  }
  console.error(`chroma-lb: ${(error as Error).message}`);
  process.exit(1);
}
