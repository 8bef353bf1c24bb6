/**
 * Paths of Chroma's v2 API, built in one place so every caller encodes them alike.
 */

/** `/api/v2/tenants/{tenant}/databases/{database}`, each part URL-encoded. */
export function databasePath(tenant: string, database: string): string {
  return `/api/v2/tenants/${encodeURIComponent(tenant)}/databases/${encodeURIComponent(database)}`;
}
