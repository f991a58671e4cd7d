// imgstream dashboard: polls /api/stats every 2 s and redraws. No libraries, no CDN.
// All text from the server goes through textContent only; charts are SVG built by DOM.
// With IMGSTREAM_API_KEYS set, it asks for a key as the page does (keyform.js).

import { installKeyForm } from "./keyform.js";
import { apiFetch, keyEvents } from "./keys.js";

const REFRESH_MS = 2000;
const QUEUE_HISTORY = 300; // samples kept for the queue chart (10 minutes at 2 s)
const SVG = "http://www.w3.org/2000/svg";
const queueHistory = [];

const $ = (selector) => document.querySelector(selector);

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    tr.append(cell instanceof Node ? wrap(cell) : element("td", cell));
  }
  return tr;
}

function wrap(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.append(node);
  return td;
}

function fillTable(bodyId, emptyId, rows) {
  const body = $(bodyId);
  body.replaceChildren(...rows);
  if (emptyId) $(emptyId).hidden = rows.length > 0;
}

function when(unixSeconds) {
  if (!unixSeconds) return "–";
  return new Date(unixSeconds * 1000).toLocaleTimeString();
}

function bytes(count) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = count;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(1)} s`;
}

function renderTiles(stats) {
  const speed = stats.throughput || { per_second: 0, failure_rate: 0 };
  $("#backlog").textContent = stats.queue.backlog;
  $("#waiting").textContent = stats.queue.waiting;
  $("#pending").textContent = stats.queue.pending;
  $("#workers").textContent = stats.live_consumers;
  $("#workers").classList.toggle("bad", stats.live_consumers === 0);
  $("#throughput").textContent = speed.per_second.toFixed(2);
  $("#failure-rate").textContent = `${(speed.failure_rate * 100).toFixed(1)} %`;
  $("#failure-rate").classList.toggle("bad", speed.failure_rate > 0);
  $("#dead-count").textContent = stats.queue.dead_letters;
  $("#dead-count").classList.toggle("bad", stats.queue.dead_letters > 0);
  $("#jobs-done").textContent = stats.jobs.done;
  $("#jobs-note").textContent = `done · ${stats.jobs.failed} failed · ${stats.jobs.submitted} submitted`;
}

function renderWorkers(stats) {
  fillTable("#workers-body", "#workers-empty", stats.consumers.map((consumer) => row([
    element("code", consumer.name),
    consumer.pending,
    seconds(consumer.idle_seconds),
    consumer.seen_seconds === null ? "–" : `${seconds(consumer.seen_seconds)} ago`,
    element("span", consumer.live ? "live" : "not seen", consumer.live ? "state-live" : "state-dead"),
  ])));
}

function renderOperations(stats) {
  const operations = Object.entries(stats.jobs.by_operation);
  fillTable("#operations-body", null, operations.map(([name, counts]) => row([
    element("code", name), counts.submitted, counts.done, counts.failed,
    seconds(counts.mean_processing_seconds),
  ])));
}

function jobLink(jobId) {
  const link = element("a", jobId.slice(0, 12) + "…");
  link.href = `/api/jobs/${encodeURIComponent(jobId)}`;
  link.title = jobId;
  return link;
}

function renderStreams(stats) {
  fillTable("#streams-body", "#streams-empty", (stats.streams || []).map((figures) => row([
    figures.partition, element("code", figures.operation || "all"), figures.backlog,
    figures.waiting, figures.pending,
  ])));
}

function renderFailures(stats) {
  fillTable("#failures-body", "#failures-empty", stats.recent_failures.map((failure) => row([
    when(failure.at), jobLink(failure.job), element("code", failure.error_code),
    element("td", failure.error, "error-text"),
  ])));
}

function renderWebhooks(stats) {
  const webhooks = stats.webhooks || { pending: 0, undeliverable: [] };
  $("#webhooks-pending").textContent = webhooks.pending;
  fillTable("#webhooks-body", "#webhooks-empty", webhooks.undeliverable.map((failure) => row([
    failure.at, jobLink(failure.job), element("code", failure.url), failure.attempts,
    element("td", failure.error, "error-text"),
  ])));
}

function renderDeadLetters(stats) {
  fillTable("#dead-body", "#dead-empty", stats.dead_letters.map((letter) => {
    const button = element("button", "Retry");
    button.type = "button";
    button.addEventListener("click", () => retry(letter.entry_id, button));
    return row([
      letter.failed_at, jobLink(letter.job_id), letter.deliveries,
      element("td", letter.reason, "error-text"), button,
    ]);
  }));
}

async function retry(entryId, button) {
  button.disabled = true;
  const message = $("#retry-message");
  try {
    const response = await apiFetch(`/api/dead-letters/${encodeURIComponent(entryId)}/retry`, {
      method: "POST", headers: { Accept: "application/json" },
    });
    const body = await response.json().catch(() => ({}));
    message.textContent = response.ok
      ? `Queued again as entry ${body.entry}.`
      : `Could not retry: ${(body.error && body.error.message) || response.status}`;
  } catch (error) {
    message.textContent = `Could not retry: ${error.message}`;
  }
  refresh();
}

function renderStorage(stats) {
  const storage = stats.storage;
  $("#storage").textContent = storage
    ? `${storage.originals} originals (${bytes(storage.originals_bytes)}), ` +
      `${storage.results} results (${bytes(storage.results_bytes)}), ` +
      `${storage.temporary} temporary files; measured ${when(storage.scanned_at)}.`
    : "Not measured yet: the retention sweep has not run.";
}

function axes(chart, maximum, width, height) {
  chart.append(svg("line", { x1: 30, y1: height - 20, x2: width, y2: height - 20, class: "axis" }));
  chart.append(svg("line", { x1: 30, y1: 5, x2: 30, y2: height - 20, class: "axis" }));
  chart.append(svg("text", { x: 2, y: 14, class: "label" }, maximum));
  chart.append(svg("text", { x: 2, y: height - 22, class: "label" }, 0));
}

function renderOutcomeChart(stats) {
  const chart = $("#chart-outcomes");
  const history = stats.throughput && stats.throughput.history;
  chart.replaceChildren();
  if (!history) return;
  const [width, height] = [600, 160];
  const count = history.done.length;
  const maximum = Math.max(1, ...history.done.map((done, i) => done + history.failed[i]));
  axes(chart, maximum, width, height);
  const slot = (width - 32) / count;
  const scale = (height - 30) / maximum;
  history.done.forEach((done, i) => {
    const failed = history.failed[i];
    const x = 32 + i * slot;
    const doneHeight = done * scale;
    const failedHeight = failed * scale;
    const base = height - 20;
    if (done) chart.append(svg("rect", { x, y: base - doneHeight, width: Math.max(1, slot - 1), height: doneHeight, class: "bar-done" }));
    if (failed) chart.append(svg("rect", { x, y: base - doneHeight - failedHeight, width: Math.max(1, slot - 1), height: failedHeight, class: "bar-failed" }));
  });
  const minutes = Math.round((count * history.bucket_seconds) / 60);
  chart.append(svg("text", { x: 34, y: height - 5, class: "label" }, `${minutes} min ago`));
  chart.append(svg("text", { x: width - 30, y: height - 5, class: "label" }, "now"));
}

function renderQueueChart(stats) {
  queueHistory.push({ backlog: stats.queue.backlog, pending: stats.queue.pending });
  if (queueHistory.length > QUEUE_HISTORY) queueHistory.shift();
  const chart = $("#chart-queue");
  chart.replaceChildren();
  const [width, height] = [600, 160];
  const maximum = Math.max(1, ...queueHistory.map((sample) => sample.backlog));
  axes(chart, maximum, width, height);
  const step = (width - 32) / Math.max(1, QUEUE_HISTORY - 1);
  const offset = QUEUE_HISTORY - queueHistory.length;
  for (const series of ["backlog", "pending"]) {
    const points = queueHistory.map((sample, i) => {
      const x = 32 + (offset + i) * step;
      const y = height - 20 - (sample[series] / maximum) * (height - 30);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    chart.append(svg("polyline", { points: points.join(" "), class: `line line-${series}` }));
  }
  chart.append(svg("text", { x: width - 30, y: height - 5, class: "label" }, "now"));
}

function setConnection(ok, text) {
  const badge = $("#connection");
  badge.textContent = text;
  badge.classList.toggle("ok", ok);
  badge.classList.toggle("error", !ok);
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const response = await apiFetch("/api/stats", { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
    renderTiles(body);
    renderOutcomeChart(body);
    renderQueueChart(body);
    renderWorkers(body);
    renderOperations(body);
    renderStreams(body);
    renderFailures(body);
    renderDeadLetters(body);
    renderWebhooks(body);
    renderStorage(body);
    setConnection(true, "live");
    $("#updated").textContent = `updated ${when(body.at)}`;
  } catch (error) {
    setConnection(false, `stats unavailable: ${error.message}`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

// While a request waits for a key, say so; the stats come as soon as one is given.
keyEvents.addEventListener("needed", () => setConnection(false, "waiting for an API key"));
installKeyForm();
refresh();
