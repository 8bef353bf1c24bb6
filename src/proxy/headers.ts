/**
 * Header handling for forwarding, following RFC 9110 section 7.6.1: hop-by-hop headers
 * (and any named in Connection) are not forwarded. Content-Length is recomputed and
 * encodings are negotiated by each hop itself.
 */

const hopByHop = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
  "accept-encoding",
  "content-encoding",
]);

/** Headers of chroma-lb's own that clients may send; never forwarded to Chroma. */
export const POSITION_HEADER = "x-chroma-lb-position";
export const MIN_POSITION_HEADER = "x-chroma-lb-min-position";
export const INSTANCE_HEADER = "x-chroma-lb-instance";
export const ACCEPTED_HEADER = "x-chroma-lb-accepted";
/** On a read served by an instance whose copy of the collection diverged (no other could serve). */
export const DIVERGED_HEADER = "x-chroma-lb-diverged";

export function forwardHeaders(incoming: Headers): Headers {
  const out = new Headers();
  const named = new Set(
    (incoming.get("connection") ?? "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter(Boolean),
  );
  incoming.forEach((value, key) => {
    const lower = key.toLowerCase();
    if (hopByHop.has(lower) || named.has(lower) || lower.startsWith("x-chroma-lb-")) return;
    out.set(key, value);
  });
  return out;
}

/**
 * Removes every header whose value carries one of `secrets` (chroma-lb's own tokens, which
 * are for chroma-lb alone): an `Authorization` of any scheme spelling or spacing
 * (`bearer`, `BEARER`, `Bearer\t<t>`, RFC 9110 11.4), and any other header that repeats
 * the token. A header is dropped whole: a value that holds a secret is not the client's
 * credential for the instance. Empty secrets are ignored.
 */
export function withoutSecrets(headers: Headers, secrets: ReadonlyArray<string | null | undefined>): Headers {
  const present = secrets.filter((s): s is string => typeof s === "string" && s.length > 0);
  if (present.length === 0) return headers;
  const carrying: string[] = [];
  headers.forEach((value, key) => {
    if (present.some((secret) => value.includes(secret))) carrying.push(key);
  });
  for (const key of carrying) headers.delete(key);
  return headers;
}

export function responseHeaders(incoming: Headers | null, extra: Record<string, string> = {}): Headers {
  const out = incoming ? forwardHeaders(incoming) : new Headers();
  out.delete("date");
  out.delete("server");
  for (const [key, value] of Object.entries(extra)) out.set(key, value);
  return out;
}

/**
 * Headers that carry a caller's credentials for chroma-lb (access tokens, ADMIN_TOKEN):
 * chroma-lb decides access itself, so they never reach an instance. An instance behind its
 * own auth gets CHROMA_INSTANCE_HEADERS_<NAME> instead (chroma/client.ts).
 */
export const CREDENTIAL_HEADERS = ["authorization", "x-chroma-token"] as const;

/** Removes the caller's credential headers (in place) and answers the same Headers. */
export function withoutCredentials(headers: Headers): Headers {
  for (const name of CREDENTIAL_HEADERS) headers.delete(name);
  return headers;
}

/**
 * Marks an answer chroma-lb wrote itself (its errors, 202s, status pages) with
 * `X-Chroma-LB-Instance: none`, so that every answer says who served it. An answer an
 * instance served already names it.
 */
export function markOwnAnswer(response: Response): Response {
  if (response.headers.has(INSTANCE_HEADER)) return response;
  try {
    response.headers.set(INSTANCE_HEADER, "none");
    return response;
  } catch {
    // Headers of a fetched response are immutable: copy it.
    const copy = new Response(response.body, response);
    copy.headers.set(INSTANCE_HEADER, "none");
    return copy;
  }
}
