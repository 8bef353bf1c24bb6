/**
 * Alerts posted as JSON to ALERT_WEBHOOK_URL (Slack-compatible: the message is in `text`).
 * Sending never blocks or fails the caller; an alert that cannot be delivered is logged.
 */
import type { Logger } from "./log";

export interface Alert {
  event: "instance_down" | "instance_up" | "all_instances_down" | "collection_diverged";
  instance?: string;
  collection?: string;
  message: string;
}

export interface Alerter {
  send(alert: Alert): void;
}

const alertTimeoutMs = 5_000;

export function createAlerter(webhookUrl: string | null, log: Logger): Alerter {
  return {
    send(alert) {
      log.warn("alert", { ...alert });
      if (!webhookUrl) return;
      void fetch(webhookUrl, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ text: `chroma-lb: ${alert.message}`, ...alert, at: new Date().toISOString() }),
        signal: AbortSignal.timeout(alertTimeoutMs),
      }).catch((error) => log.warn("alert not delivered", { event: alert.event, error: String(error) }));
    },
  };
}
