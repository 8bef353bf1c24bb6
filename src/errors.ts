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
  ) {
    super(message);
    this.name = kind;
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
/** The log reached WAL_MAX_DISK_MB: nothing new is taken until it shrinks. */
export const insufficientStorage = (message: string) => new LbError(507, "InsufficientStorage", message);

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
    headers: { "content-type": "application/json", [TRACE_ID_HEADER]: TRACE_ID_NONE, ...headers },
  });
}
