/**
 * A small client for one Chroma instance. It never throws for transport failures: it
 * answers a value that says whether the request may have reached the instance, because a
 * write that never reached it can safely go elsewhere and one that may have cannot be
 * assumed lost.
 */

export type TransportFailure =
  /** The connection was refused or could not be made: the request never reached the instance. */
  | "unreachable"
  /** The connection broke or the instance did not answer in time: the request may have been applied. */
  | "uncertain";

/** What `open` answers: the body not yet read. */
export type OpenedResult =
  | { ok: true; status: number; headers: Headers; stream: ReadableStream<Uint8Array> | null; ms: number }
  | { ok: false; failure: TransportFailure; reason: string; ms: number };

const empty = new Uint8Array(0);

export type InstanceResult =
  | { ok: true; status: number; headers: Headers; body: Uint8Array; ms: number }
  | { ok: false; failure: TransportFailure; reason: string; ms: number };

export interface RequestOptions {
  method: string;
  /** Path and query, starting with `/api/v2/`. */
  path: string;
  headers?: Headers | Record<string, string>;
  body?: Uint8Array | string | null;
  timeoutMs: number;
  signal?: AbortSignal;
}

const neverReachedCodes = new Set(["ConnectionRefused", "ECONNREFUSED", "FailedToOpenSocket", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH"]);

export function classifyFetchError(error: unknown): { failure: TransportFailure; reason: string } {
  const e = error as { code?: string; name?: string; message?: string };
  if (e?.code && neverReachedCodes.has(e.code)) return { failure: "unreachable", reason: `connection refused (${e.code})` };
  if (e?.name === "TimeoutError") return { failure: "uncertain", reason: "timed out" };
  if (e?.name === "AbortError") return { failure: "uncertain", reason: "aborted" };
  return { failure: "uncertain", reason: `${e?.code ?? e?.name ?? "error"}: ${e?.message ?? String(error)}` };
}

export class ChromaInstanceClient {
  /** Requests sent and not yet answered (maintenance waits for this to reach zero). */
  inFlight = 0;

  constructor(
    readonly baseUrl: string,
    /**
     * CHROMA_INSTANCE_HEADERS_<NAME>: added to every request this client sends, whoever
     * sends it (client requests, replay, probes, adoption, repair all come through here),
     * over any header of the same name.
     */
    private readonly instanceHeaders: Readonly<Record<string, string>> = {},
  ) {
    this.hasInstanceHeaders = Object.keys(instanceHeaders).length > 0;
  }

  private readonly hasInstanceHeaders: boolean;

  /** The request's headers with the instance's own set over them. */
  private headersFor(options: RequestOptions): RequestOptions["headers"] {
    if (!this.hasInstanceHeaders) return options.headers;
    const headers = new Headers(options.headers);
    for (const [key, value] of Object.entries(this.instanceHeaders)) headers.set(key, value);
    return headers;
  }

  private signalFor(options: RequestOptions): AbortSignal {
    const timeout = AbortSignal.timeout(options.timeoutMs);
    return options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
  }

  /** Told of every request's outcome (metrics: per-instance latency); optional. */
  observer: ((options: RequestOptions, result: InstanceResult) => void) | null = null;

  /** Sends a request and reads the whole answer. */
  async request(options: RequestOptions): Promise<InstanceResult> {
    const result = await this.send(options);
    this.observer?.(options, result);
    return result;
  }

  private async send(options: RequestOptions): Promise<InstanceResult> {
    const started = performance.now();
    this.inFlight += 1;
    try {
      const response = await fetch(this.baseUrl + options.path, {
        method: options.method,
        headers: this.headersFor(options),
        body: options.body ?? undefined,
        signal: this.signalFor(options),
        keepalive: true,
      });
      const body = new Uint8Array(await response.arrayBuffer());
      return { ok: true, status: response.status, headers: response.headers, body, ms: performance.now() - started };
    } catch (error) {
      return { ok: false, ...classifyFetchError(error), ms: performance.now() - started };
    } finally {
      this.inFlight -= 1;
    }
  }

  /**
   * Sends a request and hands back the answer as soon as its status and headers are in,
   * with the body unread, so that it can be streamed on to the client. A body that breaks
   * off later reaches the client broken off: use it only once no other instance would be
   * tried. Counted as answered (`inFlight`) when the headers arrive.
   */
  async open(options: RequestOptions): Promise<OpenedResult> {
    const started = performance.now();
    this.inFlight += 1;
    try {
      const response = await fetch(this.baseUrl + options.path, {
        method: options.method,
        headers: this.headersFor(options),
        body: options.body ?? undefined,
        signal: this.signalFor(options),
        keepalive: true,
      });
      const result = { ok: true as const, status: response.status, headers: response.headers, stream: response.body, ms: performance.now() - started };
      this.observer?.(options, { ...result, body: empty });
      return result;
    } catch (error) {
      const result = { ok: false as const, ...classifyFetchError(error), ms: performance.now() - started };
      this.observer?.(options, result);
      return result;
    } finally {
      this.inFlight -= 1;
    }
  }

  /** Sends JSON and parses a JSON answer; for chroma-lb's own calls (probes, adoption, replay). */
  async json<T = unknown>(method: string, path: string, body: unknown, timeoutMs: number): Promise<InstanceResult & { json?: T }> {
    const result = await this.request({
      method,
      path,
      headers: body === undefined ? undefined : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      timeoutMs,
    });
    if (!result.ok) return result;
    return { ...result, json: decodeJson(result.body) as T | undefined };
  }
}

export function decodeJson(body: Uint8Array): unknown {
  if (body.length === 0) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(body));
  } catch {
    return undefined;
  }
}
