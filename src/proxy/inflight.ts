/**
 * Bounds on request bodies: none larger than MAX_BODY_MB, and no more than MAX_INFLIGHT_MB
 * of them held in memory at once.
 *
 * A request reserves its body's bytes before reading any of it (its Content-Length; a body
 * sent without one is counted as it arrives) and gives them back once it is answered. When
 * they do not fit, it waits in arrival order, woken as soon as bytes are released, for at
 * most INFLIGHT_WAIT_TIMEOUT; then it is answered 503 with `Retry-After`, its body unread.
 * Answers are in Chroma's error shape, so official clients raise their usual errors.
 *
 * Counting bytes bounds memory only if answered bodies are freed: JavaScriptCore does not
 * count ArrayBuffer memory toward its collection schedule promptly, so without a collection
 * the bodies (and the copies made while parsing, logging and forwarding them) of answered
 * requests stay resident while new ones arrive. Measured with one 63 MB body admitted at a
 * time: four in a row peaked at 629 MB RSS, 389 MB with a collection after each (one alone:
 * 382 MB). So once `collectEveryBytes` of bodies have been released, a collection runs.
 */
import { errorResponse, payloadTooLarge, unavailable } from "../errors";

/** Requests waiting for room at most; beyond it a request is answered 503 at once. */
const waitingMax = 1_000;
/** What a refused client is told to wait before retrying (`Retry-After`, seconds). */
const retryAfterSeconds = 1;
/** Bytes of bodies released between two collections at least (typical 1 MB batches: one every 32). */
const collectEveryBytes = 32 * 1024 * 1024;

/** Bytes one request holds; released once, when it is answered. */
export interface BodyLease {
  readonly bytes: number;
  /** Counts bytes that already arrived (a body without Content-Length is counted as it is read). */
  grow(bytes: number): void;
  release(): void;
}

interface Waiter {
  bytes: number;
  admit: () => void;
}

export class InflightBudget {
  private usedBytes = 0;
  /** Requests waiting for room, oldest first: none overtakes another. */
  private readonly waiters: Waiter[] = [];
  /** Requests answered 503 because no room came in time. */
  refusedRequests = 0;
  private releasedSinceCollectBytes = 0;
  private collectScheduled = false;

  constructor(
    /** MAX_INFLIGHT_MB in bytes. */
    readonly bytesMax: number,
    /** INFLIGHT_WAIT_TIMEOUT in milliseconds. */
    readonly waitMs: number,
    /** Frees what answered requests left behind (a full, synchronous collection; tests inject a fake). */
    private readonly collect: () => void = () => Bun.gc(true),
  ) {}

  /** Bytes of bodies held now. */
  get bytes(): number {
    return this.usedBytes;
  }

  /** Requests waiting for room now. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Reserves `bytes` (0 when the size is unknown: it is then counted as it arrives, and
   * admitted while any room is left). Resolves with the lease, or null when no room came
   * within `waitMs` or the client went away while waiting.
   */
  acquire(bytes: number, signal?: AbortSignal): Promise<BodyLease | null> {
    if (this.waiters.length === 0 && this.fits(bytes)) return Promise.resolve(this.lease(bytes));
    if (this.waiters.length >= waitingMax || this.waitMs === 0 || signal?.aborted) {
      this.refusedRequests += 1;
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      const giveUp = () => {
        const at = this.waiters.indexOf(waiter);
        if (at === -1) return;
        this.waiters.splice(at, 1);
        clearTimeout(timer);
        signal?.removeEventListener("abort", giveUp);
        this.refusedRequests += 1;
        resolve(null);
        // The head leaving may let the next ones in.
        if (at === 0) this.admitWaiting();
      };
      const waiter: Waiter = {
        bytes,
        admit: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", giveUp);
          resolve(this.lease(bytes));
        },
      };
      const timer = setTimeout(giveUp, this.waitMs);
      signal?.addEventListener("abort", giveUp, { once: true });
      this.waiters.push(waiter);
    });
  }

  private fits(bytes: number): boolean {
    return bytes > 0 ? this.usedBytes + bytes <= this.bytesMax : this.usedBytes < this.bytesMax;
  }

  private lease(bytes: number): BodyLease {
    this.usedBytes += bytes;
    let held = bytes;
    let released = false;
    return {
      get bytes() {
        return held;
      },
      grow: (more) => {
        if (released) return;
        held += more;
        this.usedBytes += more;
      },
      release: () => {
        if (released) return;
        released = true;
        this.usedBytes -= held;
        this.collectSoon(held);
        this.admitWaiting();
      },
    };
  }

  /**
   * Runs one collection once `collectEveryBytes` were released since the last, after the
   * current answer has gone out (its body is no longer referenced then).
   */
  private collectSoon(releasedBytes: number) {
    this.releasedSinceCollectBytes += releasedBytes;
    if (this.collectScheduled || this.releasedSinceCollectBytes < collectEveryBytes) return;
    this.collectScheduled = true;
    setImmediate(() => {
      this.collectScheduled = false;
      this.releasedSinceCollectBytes = 0;
      this.collect();
    });
  }

  /** Admits waiters in order while the oldest fits. */
  private admitWaiting() {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) this.waiters.shift()!.admit();
  }
}

export interface BodyLimits {
  budget: InflightBudget;
  /** MAX_BODY_MB in bytes. */
  maxBodyBytes: number;
}

/** The declared body size, or null when the request has none (chunked) or it is not a number. */
function contentLength(request: Request): number | null {
  const raw = request.headers.get("content-length");
  return raw !== null && /^\d+$/.test(raw.trim()) ? Number(raw) : null;
}

function tooLarge(bytes: number | null, maxBodyBytes: number): Response {
  const size = bytes === null ? "The request body is" : `The request body (${bytes} bytes) is`;
  return errorResponse(
    payloadTooLarge(
      `${size} larger than the ${maxBodyBytes} bytes chroma-lb accepts (MAX_BODY_MB=${maxBodyBytes / 1024 / 1024}); ` +
        `send fewer records per request (Chroma 1.0.5 itself accepts at most 40 MiB)`,
    ),
  );
}

/**
 * The 413 for a request whose Content-Length is over MAX_BODY_MB, else null. Checked as a
 * request arrives, for every route, since Bun's own limit answers with an empty body.
 */
export function declaredTooLarge(request: Request, maxBodyBytes: number): Response | null {
  const declared = contentLength(request);
  return declared !== null && declared > maxBodyBytes ? tooLarge(declared, maxBodyBytes) : null;
}

function busy(budget: InflightBudget): Response {
  return errorResponse(
    unavailable(
      `chroma-lb holds ${budget.bytes} bytes of request bodies, its bound (MAX_INFLIGHT_MB=${budget.bytesMax / 1024 / 1024}), ` +
        `and none were released within ${budget.waitMs / 1000} s; retry in ${retryAfterSeconds} s`,
    ),
    { "retry-after": String(retryAfterSeconds) },
  );
}

/** Reads a body sent without Content-Length, counting it as it arrives; null past `maxBytes`. */
async function readCounted(request: Request, maxBytes: number, lease: BodyLease): Promise<Uint8Array | null> {
  if (!request.body) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      return null;
    }
    lease.grow(value.byteLength);
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const body = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}

/**
 * Reads the request's body within the limits and answers with `handle(body)`; the body's
 * bytes stay counted until that answer is ready (or `handle` fails). A body over
 * MAX_BODY_MB is answered 413, and one that finds no room 503, before any of it is read
 * (a body without Content-Length is read until it passes MAX_BODY_MB).
 */
export async function withBody(request: Request, limits: BodyLimits, handle: (body: Uint8Array) => Promise<Response>): Promise<Response> {
  const declared = contentLength(request);
  if (declared !== null && declared > limits.maxBodyBytes) return tooLarge(declared, limits.maxBodyBytes);
  const lease = await limits.budget.acquire(declared ?? 0, request.signal);
  if (!lease) return busy(limits.budget);
  try {
    const body = declared !== null ? new Uint8Array(await request.arrayBuffer()) : await readCounted(request, limits.maxBodyBytes, lease);
    if (body === null) return tooLarge(null, limits.maxBodyBytes);
    return await handle(body);
  } finally {
    lease.release();
  }
}
