/**
 * Errors chroma-lb raises itself. Each is answered in Chroma's error shape
 * `{"error": <Kind>, "message": <text>}` with its status, so official clients map them to
 * their usual error classes (400/422 client error, 404 not found, 409 unique, others server).
 */

export class LbError extends Error {
  constructor(
    readonly status: number,
    /** The `error` field of Chroma's error shape. */
    readonly kind: string,
    message: string,
    /** Extra response headers (Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = kind;
  }
}

/**
 * A write cut off from the log store midway: its entry may or may not have been logged. It
 * is answered like any 503, and a retry is safe; nothing done for it may be undone, since
 * a logged entry is replayed.
 */
export class OutcomeUnknownError extends LbError {}

/**
 * Nothing may be sent to an instance's copy before `untilMs` (several nodes: a node that
 * held its apply lock is gone, and a request it sent may still land). Replay waits that
 * long; the write path takes another instance.
 */
export class SendNotBefore extends Error {
  constructor(
    message: string,
    readonly untilMs: number,
  ) {
    super(message);
    this.name = "SendNotBefore";
  }
}

export const badRequest = (message: string) => new LbError(400, "InvalidArgumentError", message);
export const notFound = (message: string) => new LbError(404, "NotFoundError", message);
export const conflict = (message: string) => new LbError(409, "UniqueConstraintError", message);
export const forbidden = (message: string) => new LbError(403, "Forbidden", message);
export const unauthorized = (message: string) => new LbError(401, "Unauthorized", message);
export const unavailable = (message: string) => new LbError(503, "ServiceUnavailable", message);
export const notImplemented = (message: string) => new LbError(501, "NotImplemented", message);
/** Chroma answers its own JSON 413 with the kind `ChromaError`; chroma-lb's has the same shape. */
export const payloadTooLarge = (message: string) => new LbError(413, "ChromaError", message);
/** What a client refused for lack of disk is told to wait before retrying (`Retry-After`, seconds). */
export const storageRetryAfterSeconds = 5;
/** The log reached WAL_MAX_DISK_MB, or its file system is full: nothing new is taken until there is room. */
export const insufficientStorage = (message: string) =>
  new LbError(507, "InsufficientStorage", message, { "retry-after": String(storageRetryAfterSeconds) });
/** The 507 for a write refused because the file system under the log is full (see wal/storage.ts). */
export const fileSystemFull = () =>
  insufficientStorage(
    "The file system holding chroma-lb's write-ahead log (DATA_DIR) is full, so new writes are refused until there is room again; " +
      "every write already acknowledged is kept and will reach every instance. Free space on it, or remove applied entries with POST /wal/cleanup.",
  );

/**
 * Chroma 1.0.5 puts `chroma-trace-id` on every error answer (32 hex digits of the W3C trace
 * id; all zeros when it traces nothing, as a lone server does). The Python client reads an
 * error's kind and message only from answers that carry it, so chroma-lb's own errors
 * carry it too, with the value a lone Chroma sends.
 */
export const TRACE_ID_HEADER = "chroma-trace-id";
export const TRACE_ID_NONE = "00000000000000000000000000000000";

export function errorBody(kind: string, message: string): string {
  return JSON.stringify({ error: kind, message });
}

export function errorResponse(error: LbError, headers: Record<string, string> = {}): Response {
  return new Response(errorBody(error.kind, error.message), {
    status: error.status,
    headers: { "content-type": "application/json", [TRACE_ID_HEADER]: TRACE_ID_NONE, ...error.headers, ...headers },
  });
}
