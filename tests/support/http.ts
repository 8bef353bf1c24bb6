/**
 * Small fetch helpers for chroma-lb's own JSON endpoints in tests.
 */

/** GET (or any request) and parse the JSON answer. */
export async function json<T = any>(url: string, init?: RequestInit): Promise<T> {
  return (await (await fetch(url, init)).json()) as T;
}

/** POST a JSON body. */
export function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}
