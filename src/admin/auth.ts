/**
 * The admin token check. The comparison takes the same time whatever the header holds, so
 * response timing tells nothing about how much of a guess was right.
 */
import { timingSafeEqual } from "node:crypto";
import { errorResponse, unauthorized } from "../errors";

const hash = (text: string) => new Bun.CryptoHasher("sha256").update(text).digest();

/** `Bearer <credentials>`: the scheme in any case, then spaces or tabs (RFC 9110 11.4). */
const bearerPattern = /^bearer[ \t]+(.*?)[ \t]*$/i;

/**
 * True when `authorization` is `Bearer <token>` in any spelling the scheme allows (scheme
 * case, spacing); the token is compared in constant time.
 */
export function isAdminAuthorization(authorization: string | null, token: string): boolean {
  const credentials = bearerPattern.exec((authorization ?? "").trim())?.[1] ?? "";
  // Hashing first gives both sides one length, which timingSafeEqual requires.
  return timingSafeEqual(hash(credentials), hash(token)) && credentials.length > 0;
}

/** The 401 answer, or null when no token is configured or the request carries it. */
export function adminRefusal(request: Request, token: string | null): Response | null {
  if (!token || isAdminAuthorization(request.headers.get("authorization"), token)) return null;
  return errorResponse(unauthorized("This endpoint needs `Authorization: Bearer <ADMIN_TOKEN>`"));
}
