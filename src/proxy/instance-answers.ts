/**
 * The last answer an instance gave to the calls an official client makes before its first
 * write: `GET /api/v2/pre-flight-checks` (the JS client reads `max_batch_size` from it
 * before every add), `GET /api/v2/version` and `GET /api/v2/auth/identity`. While every
 * instance is down, chroma-lb answers these from here (`X-Chroma-LB-Cached: true`), so a
 * client started during the outage can still write, and its writes are logged (202) like
 * those of a client started before it.
 *
 * The answers are kept in the local SQLite store (`kv`), so they also survive a restart of
 * chroma-lb during the outage. Identity depends on who asks: it is kept per credentials
 * (a SHA-256 of the caller's `Authorization` and `X-Chroma-Token`, never the credentials
 * themselves), so a caller is only ever answered its own identity.
 */
import { like } from "drizzle-orm";
import type { LocalStore } from "../db";
import { kv } from "../db/sqlite-schema";

/** Paths answered from here while no instance can serve. */
export const CACHED_PATHS = ["/api/v2/pre-flight-checks", "/api/v2/version", "/api/v2/auth/identity"] as const;
/** Says that an answer is an instance's earlier answer, kept by chroma-lb. */
export const CACHED_HEADER = "x-chroma-lb-cached";
/** When the instance gave the kept answer (ISO 8601). */
export const CACHED_AT_HEADER = "x-chroma-lb-cached-at";

const keyPrefix = "instance_answer:";
/** Answers larger than this are not kept: these calls answer a few hundred bytes. */
const answerBytesMax = 64 * 1024;

interface KeptAnswer {
  /** The answer's text, as the instance sent it. */
  body: string;
  contentType: string;
  atMs: number;
}

const decoder = new TextDecoder();

export class InstanceAnswers {
  private readonly kept = new Map<string, KeptAnswer>();

  constructor(private readonly local: LocalStore) {
    for (const row of local.db.select().from(kv).where(like(kv.key, `${keyPrefix}%`)).all()) {
      try {
        this.kept.set(row.key.slice(keyPrefix.length), JSON.parse(row.value) as KeptAnswer);
      } catch {
        // A row this version cannot read is replaced by the next answer.
      }
    }
  }

  /** The key of a request's answer, or null for a path not kept. */
  keyFor(path: string, headers: Headers): string | null {
    const bare = path.split("?")[0]!;
    if (!(CACHED_PATHS as readonly string[]).includes(bare)) return null;
    if (bare !== "/api/v2/auth/identity") return bare;
    const credentials = `${headers.get("authorization") ?? ""}\n${headers.get("x-chroma-token") ?? ""}`;
    return `${bare}#${new Bun.CryptoHasher("sha256").update(credentials).digest("hex")}`;
  }

  /** Keeps a 200 answer; written to disk only when it changed. */
  remember(key: string, body: Uint8Array, contentType: string | null) {
    if (body.length > answerBytesMax) return;
    const text = decoder.decode(body);
    const previous = this.kept.get(key);
    const answer = { body: text, contentType: contentType ?? "application/json", atMs: Date.now() };
    this.kept.set(key, answer);
    if (previous && previous.body === answer.body && previous.contentType === answer.contentType) return;
    const value = JSON.stringify(answer);
    this.local.db
      .insert(kv)
      .values({ key: keyPrefix + key, value })
      .onConflictDoUpdate({ target: kv.key, set: { value } })
      .run();
  }

  /** The kept answer as a response that says it was kept, or null. */
  answer(key: string, extraHeaders: Record<string, string> = {}): Response | null {
    const kept = this.kept.get(key);
    if (!kept) return null;
    return new Response(kept.body, {
      status: 200,
      headers: {
        "content-type": kept.contentType,
        [CACHED_HEADER]: "true",
        [CACHED_AT_HEADER]: new Date(kept.atMs).toISOString(),
        ...extraHeaders,
      },
    });
  }
}
