/**
 * `bun run token ...`: manages tokens in the same store chroma-lb reads (DATA_DIR's SQLite
 * file, or DATABASE_URL with LOG_STORE=postgres), with the same environment. Safe while
 * chroma-lb runs: both stores let both write (SQLite: WAL mode, busy timeout), and chroma-lb
 * reloads its tokens every second, so a token made or revoked here holds there within about
 * a second (two at most).
 *
 *   bun run token create --name cms --role write [--tenant t ...] [--database d ...]
 *   bun run token list
 *   bun run token revoke <id>
 *   bun run token hash        a new secret and the entry AUTH_TOKENS_FILE needs for it
 */
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config";
import { openLocalStore, openMirrorStore } from "../db";
import { RecentEvents } from "../observability/events";
import { createLogger } from "../observability/log";
import { AccessControl } from "./access";
import { openTokenStore } from "./open";
import { hashSecret, isRole, newSecret, principalNamePattern } from "./tokens";

const usage = `usage:
  bun run token create --name <principal> --role read|write|admin [--tenant <name>|*]... [--database <name>|*]...
  bun run token list
  bun run token revoke <id>
  bun run token hash
Tenants and databases default to * (every one). The store is chroma-lb's: DATA_DIR's (default ./data), or DATABASE_URL with LOG_STORE=postgres.`;

class UsageError extends Error {}

/** Names given as repeated options or comma lists; none means every one. */
const names = (values: string[] | undefined): string[] | undefined => {
  const list = (values ?? []).flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
  return list.length ? list : undefined;
};

export async function runTokenCommand(argv: string[], env: Record<string, string | undefined>, out: (line: string) => void): Promise<void> {
  const [command, ...rest] = argv;
  if (command === "hash") {
    // No store: the operator puts the entry in AUTH_TOKENS_FILE and gives the secret out.
    const secret = newSecret();
    out(JSON.stringify({ token: secret, entry: { name: "<principal>", role: "read", tenants: ["*"], databases: ["*"], sha256: hashSecret(secret) } }, null, 2));
    return;
  }
  if (command !== "create" && command !== "list" && command !== "revoke") throw new UsageError(usage);
  const config = loadConfig(env, { allowNoInstances: true });
  const local = openLocalStore(config.dataDir);
  const pg = config.logStore === "postgres" ? await openMirrorStore(config.databaseUrl!) : null;
  try {
    const log = createLogger("warn", (line) => process.stderr.write(line + "\n"));
    const access = new AccessControl({ config, log, events: new RecentEvents(), collections: { resolve: () => undefined }, tokens: openTokenStore(local, pg?.db ?? null) });
    await access.refreshOnce();
    if (command === "list") {
      out(JSON.stringify({ tokens: await access.listTokens() }, null, 2));
      return;
    }
    if (command === "revoke") {
      const id = rest[0];
      if (!id) throw new UsageError(usage);
      const result = await access.revokeToken(id, "cli");
      if (!result.revoked) throw new UsageError(result.reason === "declared" ? `${id} is declared in AUTH_TOKENS_FILE: remove it there` : `no token ${id} that is not revoked already`);
      out(JSON.stringify({ id, revoked: true, revoked_at: new Date(result.atMs).toISOString() }));
      return;
    }
    const { values } = parseArgs({
      args: rest,
      options: { name: { type: "string" }, role: { type: "string" }, tenant: { type: "string", multiple: true }, database: { type: "string", multiple: true } },
      strict: true,
    });
    if (!values.name || !principalNamePattern.test(values.name)) throw new UsageError(`--name: letters, digits, . _ @ - (at most 64)\n${usage}`);
    if (!isRole(values.role)) throw new UsageError(`--role: read, write or admin\n${usage}`);
    const { record, secret } = await access.createToken({ name: values.name, role: values.role, tenants: names(values.tenant), databases: names(values.database) }, "cli");
    const [view] = (await access.listTokens()).filter((v) => v.id === record.id);
    out(JSON.stringify({ ...view, token: secret }, null, 2));
  } finally {
    await pg?.close();
    local.close();
  }
}

if (import.meta.main) {
  try {
    await runTokenCommand(process.argv.slice(2), process.env, (line) => console.log(line));
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError || (error as { code?: string }).code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      console.error(`token: ${(error as Error).message}`);
      process.exit(2);
    }
    throw error;
  }
}
