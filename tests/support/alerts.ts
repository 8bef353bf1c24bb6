/** A local webhook that records the alerts chroma-lb posts (ALERT_WEBHOOK_URL). */

/** An alert as chroma-lb posts it (Slack-compatible: `text` carries the message). */
export interface PostedAlert {
  text: string;
  event: string;
  level?: string;
  status: "firing" | "resolved";
  resolved: boolean;
  instance?: string;
  collection?: string;
  message: string;
}

/** Starts the receiver on a free port; `using` stops it. */
export function alertReceiver() {
  const alerts: PostedAlert[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: async (request) => {
      alerts.push((await request.json()) as PostedAlert);
      return new Response("ok");
    },
  });
  return {
    alerts,
    url: `http://127.0.0.1:${server.port}/hook`,
    /** What was posted, as `event status instance` lines. */
    rows: () => alerts.map((a) => `${a.event} ${a.status} ${a.instance ?? "-"}`),
    [Symbol.dispose]: () => server.stop(true),
  };
}
