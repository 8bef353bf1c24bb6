/**
 * A small TCP forwarder for outage tests: put it between chroma-lb and a server (Postgres),
 * then `close()` it to cut every connection and refuse new ones, and `reopen()` it on the
 * same port so the client finds the server again at the address it was configured with.
 */
import type { Socket, TCPSocketListener } from "bun";
import { freePort } from "./ports";

/** A forwarder started by {@link startTcpProxy}. */
export interface TcpProxy {
  /** The port it listens on (the same across reopen). */
  readonly port: number;
  /** Whether it currently accepts connections. */
  readonly open: boolean;
  /** Connections accepted since start (across reopen). */
  readonly accepted: number;
  /** Connections open now. */
  readonly active: number;
  /** Stops listening and closes every connection, both ends. Resolves at once when already closed. */
  close(): Promise<void>;
  /** Listens again on the same port. Resolves at once when already open. */
  reopen(): Promise<void>;
  /** Same as close(). */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options for {@link startTcpProxy}. */
export interface TcpProxyOptions {
  /** Port to listen on. Default: a free port. */
  port?: number;
  /** How long reopen keeps trying while the port is still held by the closed listener. Default 5 000 ms. */
  reopenTimeoutMs?: number;
}

/** One direction's bytes that the receiving socket did not take yet (it drains later). */
type Backlog = Uint8Array[];

interface Link {
  client: Socket<Link>;
  upstream: Socket<Link> | null;
  /** Client bytes received before the upstream connection opened, or not yet taken by it. */
  toUpstream: Backlog;
  toClient: Backlog;
  closed: boolean;
}

const hostname = "127.0.0.1";
const reopenTimeoutMsDefault = 5_000;

/** Writes what the socket takes now and keeps the rest, in order, for its next drain. */
function send(socket: Socket<Link>, backlog: Backlog, chunk: Uint8Array): void {
  if (backlog.length) {
    backlog.push(chunk.slice());
    return;
  }
  const written = socket.write(chunk);
  if (written < chunk.byteLength) backlog.push(chunk.slice(Math.max(0, written)));
}

function flush(socket: Socket<Link>, backlog: Backlog): void {
  while (backlog.length) {
    const chunk = backlog[0]!;
    const written = socket.write(chunk);
    if (written < chunk.byteLength) {
      backlog[0] = chunk.subarray(Math.max(0, written));
      return;
    }
    backlog.shift();
  }
}

/** Forwards `127.0.0.1:port` to `target` until closed. */
export async function startTcpProxy(target: { host: string; port: number }, opts: TcpProxyOptions = {}): Promise<TcpProxy> {
  const port = opts.port ?? (await freePort());
  const reopenTimeoutMs = opts.reopenTimeoutMs ?? reopenTimeoutMsDefault;
  const links = new Set<Link>();
  let listener: TCPSocketListener<Link> | null = null;
  let accepted = 0;

  const shut = (link: Link) => {
    if (link.closed) return;
    link.closed = true;
    links.delete(link);
    link.client.end();
    link.upstream?.end();
  };

  const listen = () =>
    Bun.listen<Link>({
      hostname,
      port,
      socket: {
        open(client) {
          accepted += 1;
          const link: Link = { client, upstream: null, toUpstream: [], toClient: [], closed: false };
          client.data = link;
          links.add(link);
          Bun.connect<Link>({
            hostname: target.host,
            port: target.port,
            data: link,
            socket: {
              open(upstream) {
                if (link.closed) {
                  upstream.end();
                  return;
                }
                link.upstream = upstream;
                flush(upstream, link.toUpstream);
              },
              data(_upstream, chunk) {
                send(link.client, link.toClient, chunk);
              },
              drain(upstream) {
                flush(upstream, link.toUpstream);
              },
              close() {
                shut(link);
              },
              error() {
                shut(link);
              },
              connectError() {
                shut(link);
              },
            },
          }).catch(() => shut(link));
        },
        data(client, chunk) {
          const link = client.data;
          if (link.upstream) send(link.upstream, link.toUpstream, chunk);
          else link.toUpstream.push(chunk.slice());
        },
        drain(client) {
          flush(client, client.data.toClient);
        },
        close(client) {
          shut(client.data);
        },
        error(client) {
          shut(client.data);
        },
      },
    });

  listener = listen();

  const proxy: TcpProxy = {
    port,
    get open() {
      return listener !== null;
    },
    get accepted() {
      return accepted;
    },
    get active() {
      return links.size;
    },
    async close() {
      if (!listener) return;
      listener.stop(true);
      listener = null;
      for (const link of [...links]) shut(link);
    },
    async reopen() {
      if (listener) return;
      const deadline = performance.now() + reopenTimeoutMs;
      while (true) {
        try {
          listener = listen();
          return;
        } catch (error) {
          if (performance.now() > deadline) throw error;
          await Bun.sleep(50);
        }
      }
    },
    [Symbol.asyncDispose]() {
      return proxy.close();
    },
  };
  return proxy;
}
