/**
 * Bounds on request bodies: none larger than MAX_BODY_MB, and no more than MAX_INFLIGHT_MB
 * of them held in memory at once.
 *
 * A request is admitted once its declared size (its Content-Length; 0 when it has none)
 * fits beside the bytes held now; then its bytes are counted as they arrive, and given back
 * once it is answered. Bytes not yet sent are never reserved: a client that declares 40 MiB
 * and sends one byte holds one byte, so slow senders cannot starve everyone else. Bodies
 * admitted together may need more than the room left; a chunk that does not fit waits
 * (reading stops, so TCP slows the sender) ahead of new requests, and when every body
 * holding bytes waits, the newest gives up at once (503) so the others can finish.
 * A request that finds no room waits in arrival order, woken as soon as bytes are
 * released, for at most INFLIGHT_WAIT_TIMEOUT; then it is answered 503 with `Retry-After`.
 * A body must also keep arriving: one that brings less than BODY_MIN_KIB_PER_SECOND over a
 * BODY_RATE_WINDOW (time spent waiting for room aside) is cut off with 408 and its bytes
 * released. Answers are in Chroma's error shape, so official clients raise their usual errors.
 *
 * Counting bytes bounds memory only if answered bodies are freed: JavaScriptCore does not
 * count ArrayBuffer memory toward its collection schedule promptly, so without a collection
 * the bodies (and the copies made while parsing, logging and forwarding them) of answered
 * requests stay resident while new ones arrive. Measured with one 63 MB body admitted at a
 * time: four in a row peaked at 629 MB RSS, 389 MB with a collection after each (one alone:
 * 382 MB). So once `collectEveryBytes` of bodies have been released, a collection runs.
 */
import { LbError, errorResponse, payloadTooLarge, unavailable } from "../errors";

/** Requests waiting for room at most; beyond it a request is answered 503 at once. */
const waitingMax = 1_000;
/** What a refused client is told to wait before retrying (`Retry-After`, seconds). */
const retryAfterSeconds = 1;
/** Bytes of bodies released between two collections at least (typical 1 MB batches: one every 32). */
const collectEveryBytes = 32 * 1024 * 1024;

/** Bytes one request holds; released once, when it is answered. */
export interface BodyLease {
  readonly bytes: number;
  /** Counts bytes that already arrived, whether or not they fit. */
  grow(bytes: number): void;
  /**
   * Counts `bytes` that arrived once they fit (waiting, ahead of new requests, for at most
   * the wait bound); false when no room came, the client went away, or every body holding
   * bytes was waiting and this one was the newest (it should then give up its bytes).
   */
  take(bytes: number, signal?: AbortSignal): Promise<boolean>;
  release(): void;
}

interface Waiter {
  bytes: number;
  /** A body being read that already holds bytes. */
  holding: boolean;
  admit: () => void;
  /** Gives up at once (a body chosen to end a standstill); only growth waiters have it. */
  refuse?: () => void;
}

export class InflightBudget {
  private usedBytes = 0;
  /** Requests waiting for room to start, oldest first: none overtakes another. */
  private readonly waiters: Waiter[] = [];
  /** Bodies being read that wait for room for their next bytes, oldest first; served before `waiters`. */
  private readonly growing: Waiter[] = [];
  /** Leases that hold bytes now. */
  private holders = 0;
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
    return this.waiters.length + this.growing.length;
  }

  /**
   * Reserves `bytes` (0 when the size is unknown: it is then counted as it arrives, and
   * admitted while any room is left). Resolves with the lease, or null when no room came
   * within `waitMs` or the client went away while waiting.
   */
  acquire(bytes: number, signal?: AbortSignal): Promise<BodyLease | null> {
    return this.admitWhenFits(bytes, bytes, signal);
  }

  /**
   * Admits a request once `declaredBytes` fit beside what is held now, reserving nothing:
   * its bytes are counted as they arrive ({@link BodyLease.take}). Null as for {@link acquire}.
   */
  admit(declaredBytes: number, signal?: AbortSignal): Promise<BodyLease | null> {
    return this.admitWhenFits(declaredBytes, 0, signal);
  }

  private admitWhenFits(fitBytes: number, reserveBytes: number, signal?: AbortSignal): Promise<BodyLease | null> {
    if (this.waiting === 0 && this.fits(fitBytes)) return Promise.resolve(this.lease(reserveBytes));
    let lease: BodyLease | null = null;
    // The lease is made (its bytes counted) at admission, before the next waiter is considered.
    return this.wait(this.waiters, fitBytes, () => (lease = this.lease(reserveBytes)), signal).then(() => lease);
  }

  /**
   * Queues in `queue` until `bytes` fit, then runs `onAdmit` at once; false when no room
   * came in time or the client left.
   */
  private wait(queue: Waiter[], bytes: number, onAdmit: () => void, signal?: AbortSignal, holding = false): Promise<boolean> {
    if (this.waiting >= waitingMax || this.waitMs === 0 || signal?.aborted) {
      this.refusedRequests += 1;
      return Promise.resolve(false);
    }
    return new Promise((resolve) => {
      const leave = () => {
        const at = queue.indexOf(waiter);
        if (at === -1) return false;
        queue.splice(at, 1);
        clearTimeout(timer);
        signal?.removeEventListener("abort", giveUp);
        return true;
      };
      const giveUp = () => {
        if (!leave()) return;
        this.refusedRequests += 1;
        resolve(false);
        // The head leaving may let the next ones in.
        this.admitWaiting();
      };
      const waiter: Waiter = {
        bytes,
        holding,
        admit: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", giveUp);
          onAdmit();
          resolve(true);
        },
        refuse: queue === this.growing ? giveUp : undefined,
      };
      const timer = setTimeout(giveUp, this.waitMs);
      signal?.addEventListener("abort", giveUp, { once: true });
      queue.push(waiter);
      this.endStandstill();
    });
  }

  private fits(bytes: number): boolean {
    return bytes > 0 ? this.usedBytes + bytes <= this.bytesMax : this.usedBytes < this.bytesMax;
  }

  private lease(bytes: number): BodyLease {
    let held = 0;
    let released = false;
    const add = (more: number) => {
      if (released || more <= 0) return;
      if (held === 0) this.holders += 1;
      held += more;
      this.usedBytes += more;
    };
    add(bytes);
    return {
      get bytes() {
        return held;
      },
      grow: add,
      take: async (more, signal) => {
        if (released) return false;
        if (this.growing.length === 0 && this.fits(more)) {
          add(more);
          return true;
        }
        const admitted = await this.wait(this.growing, more, () => add(more), signal, held > 0);
        return admitted && !released;
      },
      release: () => {
        if (released) return;
        released = true;
        if (held > 0) this.holders -= 1;
        this.usedBytes -= held;
        this.collectSoon(held);
        this.admitWaiting();
      },
    };
  }

  /**
   * When every body that holds bytes waits for more room, none can finish and nothing will
   * be released: the newest of them gives up (503), so that its bytes let the others on.
   */
  private endStandstill() {
    while (this.growing.length > 0 && !this.fits(this.growing[0]!.bytes)) {
      const holding = this.growing.filter((w) => w.holding);
      if (holding.length === 0 || holding.length < this.holders) return;
      holding[holding.length - 1]!.refuse!();
    }
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

  /** Admits waiters in order while the oldest fits: bodies already being read first, then new requests. */
  private admitWaiting() {
    while (this.growing.length > 0 && this.fits(this.growing[0]!.bytes)) this.growing.shift()!.admit();
    if (this.growing.length > 0) return this.endStandstill();
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) this.waiters.shift()!.admit();
  }
}

export interface BodyLimits {
  budget: InflightBudget;
  /** MAX_BODY_MB in bytes. */
  maxBodyBytes: number;
  /** BODY_MIN_KIB_PER_SECOND in bytes per second; 0 or absent: no minimum. */
  minBytesPerS?: number;
  /** BODY_RATE_WINDOW in milliseconds. */
  rateWindowMs?: number;
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

/** Why a body was not read whole. */
type Unread = "tooLarge" | "busy" | "slow";

/**
 * Reads the body, counting each chunk as it arrives ({@link BodyLease.take}); stops at
 * MAX_BODY_MB, when no room comes for a chunk, or when a BODY_RATE_WINDOW (not counting
 * time spent waiting for room) brings less than the minimum rate.
 */
async function readCounted(request: Request, limits: BodyLimits, lease: BodyLease): Promise<Uint8Array | Unread> {
  if (!request.body) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  const windowMs = limits.rateWindowMs ?? 0;
  const windowBytesMin = windowMs > 0 ? ((limits.minBytesPerS ?? 0) * windowMs) / 1000 : 0;
  let windowEndMs = performance.now() + windowMs;
  let windowBytes = 0;
  let total = 0;
  type ReadResult = Awaited<ReturnType<typeof reader.read>>;
  let pending: Promise<ReadResult> | null = null;
  const stop = async (why: Unread) => {
    await reader.cancel().catch(() => undefined);
    return why;
  };
  while (true) {
    pending ??= reader.read();
    let next: ReadResult | "windowEnd";
    if (windowBytesMin > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const windowEnd = new Promise<"windowEnd">((resolve) => (timer = setTimeout(() => resolve("windowEnd"), Math.max(0, windowEndMs - performance.now()))));
      next = await Promise.race([pending, windowEnd]);
      clearTimeout(timer);
    } else {
      next = await pending;
    }
    if (next === "windowEnd") {
      // The read stays pending: its chunk, when it comes, belongs to the next window.
      if (windowBytes < windowBytesMin) return stop("slow");
      windowBytes = 0;
      windowEndMs = performance.now() + windowMs;
      continue;
    }
    pending = null;
    const { done, value } = next;
    if (done) break;
    total += value.byteLength;
    if (total > limits.maxBodyBytes) return stop("tooLarge");
    windowBytes += value.byteLength;
    const waitStartMs = performance.now();
    if (!(await lease.take(value.byteLength, request.signal))) return stop("busy");
    // Time spent waiting for room is chroma-lb's, not the sender's.
    windowEndMs += performance.now() - waitStartMs;
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

function tooSlow(limits: BodyLimits): Response {
  const rate = (limits.minBytesPerS ?? 0) / 1024;
  return errorResponse(
    new LbError(
      408,
      "RequestTimeout",
      `The request body arrived slower than ${rate} KiB/s over ${(limits.rateWindowMs ?? 0) / 1000} s (BODY_MIN_KIB_PER_SECOND, BODY_RATE_WINDOW), so chroma-lb stopped reading it; nothing was written`,
    ),
    { connection: "close" },
  );
}

/**
 * Reads the request's body within the limits and answers with `handle(body)`; the body's
 * bytes stay counted until that answer is ready (or `handle` fails). A body over
 * MAX_BODY_MB by its Content-Length is answered 413, and one that finds no room 503, before
 * any of it is read; one without Content-Length is read until it passes MAX_BODY_MB. A body
 * that arrives too slowly is answered 408.
 */
export async function withBody(request: Request, limits: BodyLimits, handle: (body: Uint8Array) => Promise<Response>): Promise<Response> {
  const declared = contentLength(request);
  if (declared !== null && declared > limits.maxBodyBytes) return tooLarge(declared, limits.maxBodyBytes);
  const lease = await limits.budget.admit(declared ?? 0, request.signal);
  if (!lease) return busy(limits.budget);
  try {
    const body = await readCounted(request, limits, lease);
    if (body === "tooLarge") return tooLarge(null, limits.maxBodyBytes);
    if (body === "busy") return busy(limits.budget);
    if (body === "slow") return tooSlow(limits);
    return await handle(body);
  } finally {
    lease.release();
  }
}
