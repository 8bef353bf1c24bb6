// chroma-lb dashboard. Polls chroma-lb's own JSON endpoints (GET /status, GET /wal/status,
// GET /events) once a second and draws what they say. Rates are derived from counter deltas
// between two polls; the charts keep the last few minutes in this page's memory only, so a
// reload starts them empty. Plain DOM and inline SVG: nothing is loaded from elsewhere.
// Elements carry data-testid (and data-state where there is one) so tests read state
// without parsing text.
(() => {
  "use strict";

  const pollIntervalMs = 1000;
  /** A poll that takes longer than this is abandoned; the next one starts on schedule. */
  const requestTimeoutMs = 2500;
  const historyMs = 5 * 60 * 1000;
  /** The charts' time axis grows through these spans as history accumulates, up to historyMs. */
  const chartSpansMs = [30_000, 60_000, 120_000, historyMs];
  const eventsShownMax = 50;
  const failedShownMax = 20;
  const palette = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2"];
  const alertLevels = new Set(["warn", "warning", "error", "critical", "fatal"]);

  /** Samples for the charts, oldest first, at most historyMs old. */
  const samples = [];
  /** The previous successful poll, for counter deltas. */
  let previous = null;
  /** Each instance's state and when this page saw it change to it (at: null when it was already so at the first poll). */
  const stateSince = new Map();
  const colorOf = new Map();

  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

  /** Creates an element; children may be strings, nodes, null or arrays of them. Text is never parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else el.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    return el;
  }

  async function getJson(path) {
    const response = await fetch(path, { cache: "no-store", signal: AbortSignal.timeout(requestTimeoutMs) });
    if (!response.ok) return { status: response.status, body: null };
    return { status: response.status, body: await response.json() };
  }

  const num = (value) => (typeof value === "number" && Number.isFinite(value) ? value : 0);

  function fmtRate(perSecond) {
    if (perSecond === null || perSecond === undefined) return "–";
    if (perSecond === 0) return "0";
    return perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond).toLocaleString("en-US");
  }

  const fmtInt = (value) => (value === null || value === undefined ? "–" : Math.round(value).toLocaleString("en-US"));

  function fmtDuration(seconds) {
    if (seconds < 1) return "<1 s";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
    if (seconds < 48 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function ago(when) {
    const ms = typeof when === "number" ? when : Date.parse(when);
    if (!Number.isFinite(ms)) return "";
    return `${fmtDuration(Math.max(0, (Date.now() - ms) / 1000))} ago`;
  }

  const clock = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });

  function colorFor(name) {
    if (!colorOf.has(name)) colorOf.set(name, palette[colorOf.size % palette.length]);
    return colorOf.get(name);
  }

  /** A counter's increase per second between two polls; a counter that went back (restart) counts as no increase. */
  function ratePerSecond(now, before, seconds) {
    if (before === undefined || seconds <= 0) return null;
    const delta = num(now) - num(before);
    return delta >= 0 ? delta / seconds : 0;
  }

  // ---- one poll -------------------------------------------------------------------------

  async function pollOnce() {
    const [status, wal, events] = await Promise.allSettled([getJson("/status"), getJson("/wal/status"), getJson("/events")]);
    const at = Date.now();
    const statusBody = status.status === "fulfilled" ? status.value.body : null;
    const walBody = wal.status === "fulfilled" ? wal.value.body : null;
    renderConnection(statusBody !== null, at);
    if (statusBody) {
      const current = { at, status: statusBody, wal: walBody };
      const derived = derive(current, previous);
      record(current, derived);
      renderSummary(statusBody, walBody);
      renderInstances(statusBody, walBody, derived, at);
      renderNodes(statusBody);
      renderLog(statusBody, walBody);
      renderWork(statusBody);
      renderCharts(at);
      previous = current;
    }
    renderEvents(events);
  }

  /** Per-second rates between this poll and the previous one. */
  function derive(current, before) {
    const seconds = before ? (current.at - before.at) / 1000 : 0;
    const rates = {};
    for (const instance of current.status.instances || []) {
      const old = before && (before.status.instances || []).find((i) => i.name === instance.name);
      const errors = num(instance.total_requests) - num(instance.successful_requests);
      const oldErrors = old ? num(old.total_requests) - num(old.successful_requests) : undefined;
      rates[instance.name] = {
        requests: ratePerSecond(instance.total_requests, old && old.total_requests, seconds),
        errors: ratePerSecond(errors, oldErrors, seconds),
        errorsTotal: errors,
      };
    }
    const replayed = (s) => (s.wal && s.wal.batches ? s.wal.batches.entries_replayed : (s.status.performance_stats || {}).entries_replayed);
    const replay = before ? ratePerSecond(replayed(current), replayed(before), seconds) : null;
    return { rates, replay };
  }

  function record(current, derived) {
    const owed = {};
    for (const instance of current.status.instances || []) owed[instance.name] = num(instance.lag && instance.lag.entries);
    const memory = current.wal && current.wal.memory;
    samples.push({
      at: current.at,
      requests: Object.fromEntries(Object.entries(derived.rates).map(([name, r]) => [name, r.requests])),
      owed,
      replay: derived.replay,
      rssMb: memory ? memory.rss_mb : (current.status.high_volume_config || {}).current_memory_mb,
    });
    while (samples.length && samples[0].at < current.at - historyMs) samples.shift();
  }

  // ---- rendering ------------------------------------------------------------------------

  function renderConnection(ok, at) {
    const el = $("connection");
    el.dataset.state = ok ? "live" : "offline";
    el.textContent = ok ? "live" : "chroma-lb not answering";
    if (ok) $("updated").textContent = `updated ${clock(at)}`;
  }

  function renderSummary(status, wal) {
    // Said plainly while anyone may use the data API (GET /status `auth: "open"`).
    $("auth-open").hidden = status.auth !== "open";
    const entries = [
      ["healthy", `${status.healthy_instances}/${status.total_instances}`, "summary-healthy"],
      ["write target", status.write_target || "none", "summary-write-target"],
      ["pending", fmtInt(wal ? wal.pending_writes : (status.unified_wal || {}).pending_writes), "summary-pending"],
      ["uptime", fmtDuration(num(status.uptime_seconds)), "summary-uptime"],
      ["data API", status.auth === "open" ? "open" : "token required", "summary-auth"],
    ];
    $("summary").replaceChildren(...entries.flatMap(([label, value, testid]) => [h("dt", {}, label), h("dd", { "data-testid": testid }, value)]));
  }

  function renderInstances(status, wal, derived, at) {
    const cards = (status.instances || []).map((instance) => {
      // /status does not say since when an instance is in its state; the page knows only of changes it saw.
      const seen = stateSince.get(instance.name);
      if (!seen || seen.state !== instance.state) stateSince.set(instance.name, { state: instance.state, at: seen ? at : null });
      const since = stateSince.get(instance.name).at;
      const rates = derived.rates[instance.name] || {};
      const walInstance = wal && (wal.instances || []).find((i) => i.name === instance.name);
      const lag = instance.lag || {};
      const marked = instance.diverged_collections || [];
      const underRepair = marked.filter((d) => d.state === "under_repair").length;
      const diverged = marked.length - underRepair;
      // An error from before the instance was last seen healthy is history: shown faded.
      const errorIsPast =
        instance.healthy && instance.last_error_at && instance.healthy_since && Date.parse(instance.last_error_at) <= Date.parse(instance.healthy_since);
      const testid = `instance-${instance.name}`;
      // data-value holds the number shown, for tests and scripts that should not parse text.
      const metric = (label, shown, value, suffix, key) =>
        h(
          "div",
          { class: "metric", "data-testid": `${testid}-${key}`, "data-value": typeof value === "number" && Number.isFinite(value) ? value : null },
          h("span", { class: "label" }, label),
          h("span", { class: "reading" }, h("span", { class: "value" }, shown), suffix ? h("span", { class: "unit" }, suffix) : null),
        );
      return h(
        "article",
        { class: `instance state-${instance.state}`, "data-testid": testid, "data-state": instance.state, "data-role": instance.role, "data-state-since": since },
        h(
          "header",
          {},
          h("span", { class: "dot", style: `background:${colorFor(instance.name)}` }),
          h("h3", {}, instance.name),
          h("span", { class: "role" }, instance.role),
          h("span", { class: "state", "data-testid": `${testid}-state`, "data-state": instance.state }, instance.state.replace("_", " ")),
        ),
        h("div", { class: "url" }, instance.url, since === null ? null : ` · ${instance.state.replace("_", " ")} for ${fmtDuration((at - since) / 1000)}`),
        h(
          "div",
          { class: "metrics" },
          metric("requests", fmtRate(rates.requests), rates.requests, "/s", "requests"),
          metric("errors", fmtRate(rates.errors), rates.errors, `/s · ${fmtInt(rates.errorsTotal)} total`, "errors"),
          metric("lag", fmtInt(lag.entries), lag.entries, `entries · ${num(lag.seconds).toFixed(1)} s`, "lag"),
          metric("position", walInstance ? fmtInt(walInstance.position) : "–", walInstance && walInstance.position, null, "position"),
          metric("in flight", fmtInt(instance.in_flight), instance.in_flight, null, "in-flight"),
          metric("success", instance.total_requests ? `${instance.success_rate}%` : "–", instance.total_requests ? instance.success_rate : null, null, "success"),
        ),
        instance.last_error
          ? h(
              "div",
              { class: `last-error${errorIsPast ? " past" : ""}`, "data-testid": `${testid}-last-error`, "data-state": errorIsPast ? "past" : "current" },
              h("span", { class: "label" }, errorIsPast ? "last error, before it recovered " : "last error "),
              instance.last_error_at ? `(${ago(instance.last_error_at)}) ` : "",
              instance.last_error,
            )
          : null,
        lag.last_replay_error ? h("div", { class: "last-error" }, h("span", { class: "label" }, "replay "), lag.last_replay_error) : null,
        diverged ? h("div", { class: "warning", "data-testid": `${testid}-diverged`, "data-value": diverged }, `${diverged} diverged collection${diverged === 1 ? "" : "s"}`) : null,
        underRepair
          ? h("div", { class: "repairing", "data-testid": `${testid}-under-repair`, "data-value": underRepair }, `${underRepair} collection${underRepair === 1 ? "" : "s"} under repair`)
          : null,
        instance.simulated ? h("div", { class: "warning" }, `simulated outage${instance.simulated.until ? ` until ${clock(Date.parse(instance.simulated.until))}` : ""}`) : null,
      );
    });
    $("instances").replaceChildren(...cards);
  }

  /** The chroma-lb nodes (GET /status `nodes`): id, address, last heartbeat, replay leases; this page's node marked. */
  function renderNodes(status) {
    const nodes = status.nodes || [];
    const rows = nodes.map((node) =>
      h(
        "tr",
        { "data-testid": "node", "data-node": node.id },
        h("td", {}, node.id + (node.id === status.node_id ? " (this node)" : "")),
        h("td", {}, node.address || "—"),
        h("td", {}, node.last_heartbeat_at ? ago(node.last_heartbeat_at) : "—"),
        h("td", { "data-testid": "node-leases" }, fmtInt(node.leases)),
      ),
    );
    const head = h("tr", {}, h("th", {}, "node"), h("th", {}, "address"), h("th", {}, "last heartbeat"), h("th", {}, "replay leases"));
    const parts = [h("table", { class: "nodes-table" }, h("thead", {}, head), h("tbody", {}, ...rows))];
    if (status.cluster_error) parts.push(h("p", { class: "muted", "data-testid": "nodes-error" }, `as of ${status.cluster_as_of || "never"}: Postgres did not answer (${status.cluster_error})`));
    $("nodes").replaceChildren(...parts);
  }

  function renderLog(status, wal) {
    const unified = status.unified_wal || {};
    const perf = status.performance_stats || {};
    const lag = (wal && wal.replay_lag_ms) || perf.replay_lag_ms || {};
    const memory = (wal && wal.memory) || {};
    const batches = (wal && wal.batches) || {};
    const failed = (wal && wal.failed) || [];
    const marked = (wal && wal.diverged) || [];
    const diverged = marked.filter((d) => d.state !== "under_repair");
    const last = samples[samples.length - 1];
    const head = wal ? wal.head_position : unified.head_position;
    const pending = wal ? wal.pending_writes : unified.pending_writes;
    // [label, text shown, data-testid, number behind it (data-value)]
    const figures = [
      ["head position", fmtInt(head), "log-head", head],
      ["entries kept", fmtInt(wal && wal.total_entries), "log-total", wal && wal.total_entries],
      ["pending", fmtInt(pending), "log-pending", pending],
      ["failed", fmtInt(failed.length) + (failed.length >= failedShownMax ? "+" : ""), "log-failed-count", failed.length],
      ["diverged", fmtInt(diverged.length), "log-diverged-count", diverged.length],
      ["rejected", fmtInt(wal && wal.rejected_entries), "log-rejected", wal && wal.rejected_entries],
      ["replaying", (wal ? wal.is_syncing : unified.is_syncing) ? "yes" : "no", "log-syncing"],
      ["replay throughput", `${fmtRate(last && last.replay)} /s`, "log-replay-rate", last && last.replay],
      ["replay lag p50 / p99", `${fmtInt(lag.p50)} / ${fmtInt(lag.p99)} ms`, "log-replay-lag"],
      ["batch size", `${fmtInt(batches.current_batch_size)} of ${fmtInt(batches.max_batch_size)}`, "log-batch", batches.current_batch_size],
      ["memory (RSS)", `${num(memory.rss_mb).toFixed(1)} MB · peak ${num(memory.peak_rss_mb).toFixed(1)} of ${fmtInt(memory.max_memory_mb)}`, "memory-rss", memory.rss_mb],
      ["memory pressure events", fmtInt(memory.memory_pressure_events), "memory-pressure", memory.memory_pressure_events],
    ];
    $("log").replaceChildren(
      ...figures.flatMap(([label, shown, testid, value]) => [
        h("dt", {}, label),
        h("dd", { "data-testid": testid, "data-value": typeof value === "number" && Number.isFinite(value) ? value : null }, shown),
      ]),
    );

    $("log-failed").replaceChildren(
      failed.length
        ? table(
            ["entry", "instance", "op", "attempts", "error"],
            failed.map((f) => [f.seq, f.instance, f.op, f.attempts, f.lastError ?? f.last_error ?? ""]),
          )
        : h("p", { class: "muted" }, "none"),
    );
    $("log-diverged").replaceChildren(
      marked.length
        ? table(
            ["instance", "collection", "state", "first refused", "entries", "since", "error"],
            marked.map((d) => [
              d.instance,
              d.collection_name || d.collection_id,
              h("span", { "data-testid": "diverged-state", "data-state": d.state || "diverged" }, d.state === "under_repair" ? "under repair" : "diverged"),
              d.state === "under_repair" && d.op === "repair" ? "" : d.first_refused_position,
              d.refused_entries,
              d.since ? ago(d.since) : "",
              d.error,
            ]),
          )
        : h("p", { class: "muted" }, "none"),
    );
  }

  /**
   * Long work in progress: each resync (records copied of how many, rate, time left) and a
   * running consistency check (records read of how many, rate, time left). Hidden when idle.
   */
  function renderWork(status) {
    const items = [];
    for (const r of (status.resync && status.resync.active) || []) {
      const total = r.records_total;
      const copying = r.state === "copying";
      items.push(
        h(
          "div",
          { class: "work", "data-testid": "work-resync", "data-instance": r.instance, "data-collection": r.collection_name, "data-state": r.state, "data-value": r.records_copied, "data-total": total },
          h("div", { class: "title" }, `Resync of ${r.collection_name} on ${r.instance} from ${r.source || "?"}: ${copying ? "copying" : "replaying later writes"}`),
          h(
            "div",
            { class: "detail" },
            `${fmtInt(r.records_copied)} of ${total === null || total === undefined ? "?" : fmtInt(total)} records copied · ${fmtRate(r.records_per_second)} records/s · ` +
              (r.seconds_left === null || r.seconds_left === undefined ? "time left unknown" : `${fmtDuration(r.seconds_left)} left`),
          ),
          total ? h("progress", { max: total, value: r.records_copied }) : null,
        ),
      );
    }
    const check = status.consistency && status.consistency.progress;
    if (check && check.running) {
      const total = check.records_total;
      items.push(
        h(
          "div",
          { class: "work", "data-testid": "work-consistency", "data-value": check.records_read, "data-total": total },
          h("div", { class: "title" }, `Consistency check: collection ${fmtInt(check.collections_done + 1)} of ${fmtInt(check.collections_total)}${check.current_collection ? ` (${check.current_collection})` : ""}`),
          h(
            "div",
            { class: "detail" },
            `${fmtInt(check.records_read)} of ${total === null || total === undefined ? "?" : fmtInt(total)} records read · ${fmtRate(check.records_per_second)} records/s · ` +
              (check.seconds_left === null || check.seconds_left === undefined ? "time left unknown" : `${fmtDuration(check.seconds_left)} left`),
          ),
          total ? h("progress", { max: total, value: Math.min(total, check.records_read) }) : null,
        ),
      );
    }
    $("work-panel").hidden = items.length === 0;
    $("work").replaceChildren(...items);
  }

  function table(headings, rows) {
    return h("table", {}, h("thead", {}, h("tr", {}, headings.map((x) => h("th", {}, x)))), h("tbody", {}, rows.map((row) => h("tr", {}, row.map((x) => h("td", {}, x ?? ""))))));
  }

  /**
   * Alerts still firing: for each alert (event, instance, collection) the latest message,
   * when it is a warning or an error and not the one that says the condition cleared.
   * `instance_health` events are transitions, not alerts (the alert is `instance_down`).
   */
  function activeAlerts(events) {
    const time = (e) => (typeof e.at === "number" ? e.at : Date.parse(e.at));
    const latest = new Map();
    for (const e of events.filter((e) => e.event !== "instance_health").sort((a, b) => num(time(a)) - num(time(b)))) {
      latest.set(JSON.stringify([e.event, e.instance ?? null, e.collection ?? null]), e);
    }
    return [...latest.values()].filter((e) => alertLevels.has(String(e.level).toLowerCase()) && e.resolved !== true);
  }

  function renderEvents(result) {
    const el = $("events");
    if (result.status !== "fulfilled") {
      // Keep what is shown; say it may be stale.
      el.dataset.state = "unreachable";
      return;
    }
    const { status, body } = result.value;
    const events = body && Array.isArray(body.events) ? body.events.slice() : [];
    el.dataset.state = status === 404 ? "unavailable" : status >= 400 ? "error" : "ok";
    const alerts = activeAlerts(events);
    const badge = $("alerts-active");
    badge.dataset.count = String(alerts.length);
    badge.hidden = alerts.length === 0;
    badge.textContent = `${alerts.length} active alert${alerts.length === 1 ? "" : "s"}`;
    if (!events.length) {
      const why = status === 404 ? " (this chroma-lb has no GET /events)" : status >= 400 ? ` (GET /events answered ${status})` : "";
      el.replaceChildren(h("p", { class: "muted", "data-testid": "events-empty" }, `no events${why}`));
      return;
    }
    const time = (e) => (typeof e.at === "number" ? e.at : Date.parse(e.at));
    events.sort((a, b) => num(time(b)) - num(time(a)));
    el.replaceChildren(
      h(
        "ol",
        { class: "events" },
        events.slice(0, eventsShownMax).map((e) => {
          const level = String(e.level || "info").toLowerCase();
          return h(
            "li",
            { class: `event level-${level}${e.resolved ? " resolved" : ""}`, "data-testid": "event", "data-event": e.event, "data-level": level },
            h("time", {}, Number.isFinite(time(e)) ? clock(time(e)) : ""),
            h("span", { class: "level" }, level),
            h("span", { class: "name" }, e.event),
            e.instance ? h("span", { class: "tag" }, e.instance) : null,
            e.collection ? h("span", { class: "tag" }, e.collection) : null,
            e.resolved ? h("span", { class: "tag ok" }, "resolved") : null,
            h("div", { class: "message" }, e.message),
          );
        }),
      ),
    );
  }

  // ---- charts ---------------------------------------------------------------------------

  function renderCharts(now) {
    const names = previous ? (previous.status.instances || []).map((i) => i.name) : Object.keys(samples[samples.length - 1].owed);
    const byInstance = (pick) => names.map((name) => ({ name, color: colorFor(name), points: samples.map((s) => [s.at, pick(s)[name]]) }));
    drawChart("chart-requests", byInstance((s) => s.requests), now, { unit: "/s" });
    drawChart("chart-pending", byInstance((s) => s.owed), now, { unit: "", integer: true });
    drawChart("chart-replay", [{ name: "replayed", color: palette[2], points: samples.map((s) => [s.at, s.replay]) }], now, { unit: "/s" });
    drawChart("chart-memory", [{ name: "RSS", color: palette[4], points: samples.map((s) => [s.at, s.rssMb]) }], now, { unit: " MB", floorMax: 16 });
  }

  /** Rounds up to 1, 2 or 5 times a power of ten, so axis labels read well. */
  function niceCeiling(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function drawChart(testid, series, now, opts) {
    const figure = $(testid);
    const root = figure.querySelector("svg");
    const width = 320;
    const height = 120;
    const left = 34;
    const right = 6;
    const top = 8;
    const bottom = 18;
    const oldest = samples.length ? samples[0].at : now;
    const spanMs = chartSpansMs.find((span) => now - oldest <= span) || historyMs;
    const from = now - spanMs;
    const values = series.flatMap((s) => s.points.map((p) => p[1]).filter((v) => typeof v === "number" && Number.isFinite(v)));
    const yMax = niceCeiling(Math.max(opts.floorMax || 1, ...values));
    const x = (t) => left + ((t - from) / spanMs) * (width - left - right);
    const y = (v) => top + (1 - v / yMax) * (height - top - bottom);
    const label = (v) => (yMax >= 1000 ? `${v / 1000}k` : String(Math.round(v * 100) / 100));

    const nodes = [];
    for (const fraction of [0, 0.5, 1]) {
      const v = yMax * fraction;
      nodes.push(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
      const text = svg("text", { x: left - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" });
      text.textContent = label(v);
      nodes.push(text);
    }
    const before = (ms) => (ms >= 60_000 ? `−${ms / 60_000} min` : `−${ms / 1000} s`);
    for (const [t, text] of [[from, before(spanMs)], [now - spanMs / 2, before(spanMs / 2)], [now, "now"]]) {
      const el = svg("text", { x: x(t), y: height - 4, class: "axis", "text-anchor": t === from ? "start" : t === now ? "end" : "middle" });
      el.textContent = text;
      nodes.push(el);
    }
    for (const s of series) {
      // A gap (no value) breaks the line rather than drawing it at zero.
      let d = "";
      let pen = "M";
      for (const [t, v] of s.points) {
        if (typeof v !== "number" || !Number.isFinite(v)) {
          pen = "M";
          continue;
        }
        d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = "L";
      }
      if (d) nodes.push(svg("path", { d, class: "series", stroke: s.color, "data-series": s.name }));
    }
    root.replaceChildren(...nodes);

    const latest = (s) => {
      for (let i = s.points.length - 1; i >= 0; i--) if (typeof s.points[i][1] === "number") return s.points[i][1];
      return null;
    };
    figure.querySelector(".legend").replaceChildren(
      ...series.map((s) => {
        const v = latest(s);
        const shown = v === null ? "–" : opts.integer ? fmtInt(v) : opts.unit === " MB" ? v.toFixed(1) : fmtRate(v);
        return h("span", { class: "key" }, h("span", { class: "swatch", style: `background:${s.color}` }), `${s.name} `, h("b", {}, `${shown}${opts.unit}`));
      }),
    );
  }

  // ---- schedule -------------------------------------------------------------------------

  /** Polls on a fixed cadence: a slow poll delays the next one, never makes two overlap. */
  async function loop() {
    const startedMs = performance.now();
    try {
      await pollOnce();
    } catch (error) {
      console.error("dashboard poll failed", error);
    }
    setTimeout(loop, Math.max(0, pollIntervalMs - (performance.now() - startedMs)));
  }

  loop();
})();
