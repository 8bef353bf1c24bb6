/**
 * What a token is and what it allows: principals, roles, scopes, secrets and their hashes.
 * Pure functions only; storage is in token-store.ts, the decision per request in access.ts.
 */
import { timingSafeEqual } from "node:crypto";

/** `read` < `write` < `admin`: each role has every right of the ones before it. */
export type Role = "read" | "write" | "admin";
export const roles: readonly Role[] = ["read", "write", "admin"];

const rank: Record<Role, number> = { read: 0, write: 1, admin: 2 };

export function roleAllows(held: Role, needed: Role): boolean {
  return rank[held] >= rank[needed];
}

export function isRole(value: unknown): value is Role {
  return typeof value === "string" && (roles as readonly string[]).includes(value);
}

/** A token as kept in the store: everything but the secret, which is kept as a hash only. */
export interface TokenRecord {
  /** Public id (`tok_...`): listed, revoked and named in audit events; never a secret. */
  id: string;
  /** The principal: who holds the token. Appears in /events and the metrics' `principal` label. */
  name: string;
  role: Role;
  /** Tenant names the token may use, or `["*"]` for every tenant. */
  tenants: string[];
  /** Database names the token may use (in any of its tenants), or `["*"]`. */
  databases: string[];
  /** Hex SHA-256 of the secret. */
  hash: string;
  createdAtMs: number;
  revokedAtMs: number | null;
}

/** Who made a request: a token's principal, ADMIN_TOKEN, or nobody while the data API is open. */
export interface Principal {
  name: string;
  role: Role;
  tenants: string[];
  databases: string[];
  /** The token's id; null for ADMIN_TOKEN and the anonymous principal. */
  tokenId: string | null;
}

/** The principal of requests made while the data API is open (no token needed). */
export const anonymous: Principal = Object.freeze({ name: "anonymous", role: "admin", tenants: ["*"], databases: ["*"], tokenId: null }) as Principal;

/** The principal of ADMIN_TOKEN: admin of everything. */
export const adminTokenPrincipal: Principal = Object.freeze({ name: "admin-token", role: "admin", tenants: ["*"], databases: ["*"], tokenId: null }) as Principal;

export function principalOf(record: TokenRecord): Principal {
  return { name: record.name, role: record.role, tenants: record.tenants, databases: record.databases, tokenId: record.id };
}

/** True when `names` (a token's tenants or databases) covers `name`. */
export function scopeCovers(names: readonly string[], name: string): boolean {
  return names.includes("*") || names.includes(name);
}

/** True when the principal may use every tenant and every database (what chroma-lb's own admin endpoints need). */
export function coversEverything(principal: Principal): boolean {
  return principal.tenants.includes("*") && principal.databases.includes("*");
}

/**
 * A new secret: 32 random bytes (256 bits) from the system's CSPRNG, base64url, with a
 * `clb_` prefix so that secret scanners and people recognise it.
 */
export function newSecret(): string {
  return `clb_${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url")}`;
}

/** A new public token id. */
export function newTokenId(): string {
  return `tok_${Buffer.from(crypto.getRandomValues(new Uint8Array(9))).toString("hex")}`;
}

/**
 * The stored form of a secret: hex SHA-256. No slow KDF (bcrypt, scrypt, argon2) is needed:
 * those protect low-entropy passwords from guessing once a hash leaks, but a secret of 256
 * random bits cannot be guessed from its hash however fast the hash is, and a fast hash keeps
 * the check on every request at microseconds. (Hashes declared in AUTH_TOKENS_FILE should be
 * of secrets made the same way: `bun run token hash` prints one.)
 */
export function hashSecret(secret: string): string {
  return new Bun.CryptoHasher("sha256").update(secret).digest("hex");
}

/** Compares two hex hashes in constant time (both are 64 characters). */
export function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && timingSafeEqual(left, right);
}

/** Names of principals: short, printable, safe as a metrics label. */
export const principalNamePattern = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
