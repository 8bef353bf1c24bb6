/**
 * Free TCP ports for servers started by tests.
 *
 * The port is only reserved while we hold it, so another process may take it before the
 * server binds. Callers that choose a port this way retry with a new one when the bind fails.
 */

/** Binds port 0 on 127.0.0.1, reads the port the kernel chose, and releases it. */
export async function freePort(): Promise<number> {
  const listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: { data() {} },
  });
  const port = listener.port;
  listener.stop(true);
  return port;
}

/**
 * Whether nothing listens on `port` of 127.0.0.1 right now. Checked before a server is
 * started on a chosen port: otherwise its readiness probe could be answered by whoever
 * holds the port while the new server dies on the bind.
 */
export function portIsFree(port: number): boolean {
  try {
    const listener = Bun.listen({
      hostname: "127.0.0.1",
      port,
      socket: { data() {} },
    });
    listener.stop(true);
    return true;
  } catch {
    return false;
  }
}
