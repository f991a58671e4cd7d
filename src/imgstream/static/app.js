"use strict";

// imgstream web page: build a pipeline, upload one job per file, watch each job to the end.
// All text from files, the server or the user goes through textContent / setAttribute only.

const STORAGE_KEY = "imgstream.settings.v1";
const MAX_STEPS = 10;
const POLL_START_MS = 150;
const POLL_MAX_MS = 1000;
const MAX_NETWORK_FAILURES = 10;
const FITS = ["inside", "cover", "fill"];
const FORMATS = ["", "jpeg", "png", "webp"];
const TERMINAL = new Set(["done", "failed"]);
const RETRYABLE = new Set([429, 502, 503, 504]);
const STEP_TITLES = { resize: "Resize", grayscale: "Grayscale", blur: "Blur" };
const STEP_DEFAULTS = {
  resize: () => ({ op: "resize", width: 800, height: null, fit: "inside", enlarge: false }),
  grayscale: () => ({ op: "grayscale" }),
  blur: () => ({ op: "blur", sigma: 2 }),
};
const HTTP_LEADS = {
  404: "The job was not found.",
  413: "The file is too large.",
  415: "This is not a supported image.",
  422: "The settings were not accepted.",
  429: "The server is busy.",
  503: "The service is unavailable right now.",
};

const $ = (selector, root = document) => root.querySelector(selector);
let pipeline = [];
let nextKey = 1;

// ---------- small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

// A server message as a sentence: "backlog full" -> "Backlog full."
const sentence = (text) => text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
const kilobytes = (bytes) => `${(bytes / 1024).toLocaleString(undefined, { maximumFractionDigits: 1 })} KB`;

function formatElapsed(ms) {
  const seconds = Math.floor(ms / 100) / 10;
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
}

function toSide(value) {
  const number = Number(value);
  return Number.isInteger(number) && number >= 1 ? number : null;
}

// ---------- settings (pipeline + format), remembered in localStorage

// Whatever localStorage holds is rebuilt field by field from the defaults, never trusted as is.
function sanitizeStep(raw) {
  if (!Object.hasOwn(STEP_DEFAULTS, raw?.op)) return null;
  const step = STEP_DEFAULTS[raw.op]();
  if (step.op === "resize") {
    const fit = FITS.includes(raw.fit) ? raw.fit : "inside";
    Object.assign(step, { width: toSide(raw.width), height: toSide(raw.height), fit, enlarge: raw.enlarge === true });
  }
  if (step.op === "blur" && raw.sigma >= 0.5 && raw.sigma <= 20) step.sigma = Number(raw.sigma);
  return step;
}

const withKey = (step) => ({ ...step, key: nextKey++ });

function stepPayload({ key, ...step }) {
  if (step.op !== "resize") return step;
  const { width, height, ...rest } = step;
  return { ...rest, ...(width ? { width } : {}), ...(height ? { height } : {}) };
}

function loadSettings() {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(STORAGE_KEY));
  } catch {
    // storage disabled or corrupt: fall back to the defaults
  }
  const steps = Array.isArray(saved?.pipeline) ? saved.pipeline.map(sanitizeStep).filter(Boolean) : [];
  pipeline = (steps.length ? steps.slice(0, MAX_STEPS) : [STEP_DEFAULTS.resize()]).map(withKey);
  $("#format").value = FORMATS.includes(saved?.format) ? saved.format : "";
}

function saveSettings() {
  const settings = { pipeline: pipeline.map(stepPayload), format: $("#format").value };
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(settings));
  } catch {
    // not fatal: the settings just will not be remembered
  }
}

// ---------- pipeline builder

function renderPipeline(focusSelectors = []) {
  $("#pipeline").replaceChildren(...pipeline.map(renderStep));
  $("#pipeline-empty").hidden = pipeline.length > 0;
  for (const button of document.querySelectorAll(".add-step")) button.disabled = pipeline.length >= MAX_STEPS;
  const target = focusSelectors.map((selector) => $(selector)).find((node) => node && !node.disabled);
  target?.focus();
}

function renderStep(step, index) {
  const name = `step ${index + 1} (${step.op})`;
  const button = (action, text, label, disabled = false) =>
    el("button", { type: "button", class: "button icon-button", "data-action": action, "aria-label": label, title: label, disabled, text });
  const actions = el("div", { class: "step-actions" },
    button("up", "↑", `Move ${name} up`, index === 0),
    button("down", "↓", `Move ${name} down`, index === pipeline.length - 1),
    button("remove", "✕", `Remove ${name}`));
  const head = el("div", { class: "step-head" },
    el("h3", { class: "step-title", text: `${index + 1}. ${STEP_TITLES[step.op]}` }), actions);
  return el("li", { class: "step", "data-key": step.key, "data-op": step.op }, head, renderStepFields(step));
}

function field(id, labelText, control, extraClass = "") {
  return el("div", { class: `field ${extraClass}`.trim() }, el("label", { for: id, text: labelText }), control);
}

function renderStepFields(step) {
  const id = (name) => `step-${step.key}-${name}`;
  if (step.op === "grayscale") return el("p", { class: "step-note", text: "Converts the image to shades of grey." });
  if (step.op === "blur") {
    const range = el("input", { type: "range", id: id("sigma"), min: 0.5, max: 20, step: 0.5, value: step.sigma, "data-field": "sigma" });
    const output = el("output", { class: "range-value", for: id("sigma"), text: step.sigma.toFixed(1) });
    return el("div", { class: "fields" }, field(id("sigma"), "Strength (sigma)", el("div", { class: "range-row" }, range, output), "field-wide"));
  }
  const side = (name) => el("input", {
    type: "number", id: id(name), min: 1, max: 20000, step: 1, inputmode: "numeric",
    placeholder: "auto", value: step[name] ?? "", "data-field": name,
  });
  const fit = el("select", { id: id("fit"), "data-field": "fit" },
    ...FITS.map((value) => el("option", { value, selected: value === step.fit, text: value })));
  const enlarge = el("label", { class: "check" },
    el("input", { type: "checkbox", id: id("enlarge"), "data-field": "enlarge", checked: step.enlarge }),
    " Allow enlarging");
  return el("div", { class: "fields" },
    field(id("width"), "Width (px)", side("width")),
    field(id("height"), "Height (px)", side("height")),
    field(id("fit"), "Fit", fit),
    el("div", { class: "field field-check" }, enlarge));
}

const stepIndexFor = (node) => pipeline.findIndex((step) => String(step.key) === node.closest(".step")?.dataset.key);

function onStepInput(event) {
  const input = event.target;
  const step = pipeline[stepIndexFor(input)];
  const name = input.dataset.field;
  if (!step || !name) return;
  if (name === "enlarge") step.enlarge = input.checked;
  else if (name === "fit") step.fit = input.value;
  else if (name === "sigma") {
    step.sigma = Number(input.value);
    $(".range-value", input.closest(".step")).textContent = step.sigma.toFixed(1);
  } else step[name] = toSide(input.value);
  saveSettings();
}

function onStepAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const index = stepIndexFor(button);
  const step = pipeline[index];
  const action = button.dataset.action;
  if (action === "remove") {
    pipeline.splice(index, 1);
    const next = pipeline[Math.min(index, pipeline.length - 1)];
    renderPipeline(next ? [`[data-key="${next.key}"] [data-action="remove"]`] : ["#add-resize"]);
  } else {
    const to = action === "up" ? index - 1 : index + 1;
    if (to < 0 || to >= pipeline.length) return;
    [pipeline[index], pipeline[to]] = [pipeline[to], pipeline[index]];
    const other = action === "up" ? "down" : "up";
    renderPipeline([`[data-key="${step.key}"] [data-action="${action}"]`, `[data-key="${step.key}"] [data-action="${other}"]`]);
  }
  saveSettings();
}

function addStep(op) {
  if (pipeline.length >= MAX_STEPS) return;
  const step = withKey(STEP_DEFAULTS[op]());
  pipeline.push(step);
  renderPipeline([`[data-key="${step.key}"] input`, `[data-key="${step.key}"] [data-action="remove"]`]);
  saveSettings();
}

function pipelineProblem() {
  if (!pipeline.length) return "Add at least one step to the pipeline.";
  const invalid = $("#pipeline input:invalid");
  if (invalid) {
    invalid.focus();
    const label = $(`label[for="${invalid.id}"]`)?.textContent ?? "A value";
    return `Step ${stepIndexFor(invalid) + 1}, ${label}: ${invalid.validationMessage}`;
  }
  const index = pipeline.findIndex((step) => step.op === "resize" && !step.width && !step.height);
  if (index < 0) return "";
  $(`[data-key="${pipeline[index].key}"] input`).focus();
  return `Step ${index + 1} (resize) needs a width, a height or both.`;
}

// ---------- file picking and drag-and-drop

function showSelection() {
  const names = [...$("#file-input").files].map((file) => file.name);
  const shown = names.slice(0, 3).join(", ") + (names.length > 3 ? ", …" : "");
  $("#file-summary").textContent = names.length ? `${names.length} selected: ${shown}` : "No images selected.";
}

const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");

function setupDropZone() {
  const zone = $("#drop-zone");
  const highlight = (event) => carriesFiles(event) && (event.preventDefault(), zone.classList.add("is-dragging"));
  zone.addEventListener("dragenter", highlight);
  zone.addEventListener("dragover", highlight);
  zone.addEventListener("dragleave", (event) => zone.contains(event.relatedTarget) || zone.classList.remove("is-dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("is-dragging");
    if (!event.dataTransfer.files.length) return;
    $("#file-input").files = event.dataTransfer.files;
    showSelection();
  });
  // A file dropped next to the zone must not make the browser navigate away from the page.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => carriesFiles(event) && event.preventDefault());
}

// ---------- talking to the API

function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After")?.trim();
  if (!value) return 0;
  const seconds = /^\d+$/.test(value) ? Number(value) : (Date.parse(value) - Date.now()) / 1000;
  return Number.isFinite(seconds) && seconds > 0 ? Math.ceil(seconds) : 0;
}

async function describeHttpError(response) {
  let message = "";
  try {
    message = String((await response.json())?.error?.message ?? "");
  } catch {
    // the body was not JSON; the status alone has to do
  }
  const lead = HTTP_LEADS[response.status] ?? `The request failed (HTTP ${response.status}).`;
  const retry = retryAfterSeconds(response);
  return [lead, message && sentence(message), retry ? `Try again in ${retry} s.` : ""].filter(Boolean).join(" ");
}

/**
 * Follow job `id` until it is done or failed, calling onUpdate(job) with each job document
 * (the same shape as GET /api/jobs/{id}). Returns a function that stops watching.
 * Today this polls with back-off; a Server-Sent Events transport (/api/jobs/{id}/events)
 * can replace the body of this function without touching its callers.
 */
function watchJob(id, onUpdate) {
  const url = `/api/jobs/${encodeURIComponent(id)}`;
  const fail = (message) => onUpdate({ id, status: "failed", error: message, error_code: "client" });
  let stopped = false;
  let timer = 0;
  let delay = POLL_START_MS;
  let failures = 0;

  async function poll() {
    let wait = delay;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (stopped) return;
      if (response.ok) {
        const job = await response.json();
        failures = 0;
        onUpdate(job);
        if (TERMINAL.has(job.status)) return;
      } else if (RETRYABLE.has(response.status)) {
        wait = Math.max(wait, retryAfterSeconds(response) * 1000);
      } else {
        return fail(await describeHttpError(response));
      }
    } catch {
      if (stopped) return;
      failures += 1;
      if (failures > MAX_NETWORK_FAILURES) return fail("Lost contact with the server while waiting for the result.");
      wait = POLL_MAX_MS * failures;
    }
    delay = Math.min(delay * 1.5, POLL_MAX_MS);
    if (!stopped) timer = setTimeout(poll, wait);
  }

  timer = setTimeout(poll, delay);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------- job cards

function createCard(file) {
  const card = { file, startedAt: performance.now(), finished: false, stop: null };
  card.status = el("span", { class: "job-status", "aria-live": "polite", text: "uploading" });
  card.elapsed = el("span", { class: "job-elapsed", text: formatElapsed(0) });
  card.alerts = el("div", { class: "job-alerts", "aria-live": "polite" });
  card.placeholder = el("div", { class: "job-placeholder", text: "Uploading…" });
  card.after = el("figure", { class: "job-after" }, card.placeholder);
  card.actions = el("div", { class: "job-actions" });
  const original = el("img", { class: "job-original", src: URL.createObjectURL(file), alt: `Original: ${file.name}` });
  const originalMeta = el("figcaption", { class: "job-caption", text: `Original · ${kilobytes(file.size)}` });
  original.addEventListener("load", () => {
    originalMeta.textContent = `Original · ${original.naturalWidth} × ${original.naturalHeight} px · ${kilobytes(file.size)}`;
  });
  card.root = el("li", { class: "job-card", "data-status": "uploading" },
    el("div", { class: "job-head" },
      el("h3", { class: "job-name", text: file.name || "(unnamed file)" }),
      el("p", { class: "job-state" }, card.status, " ", card.elapsed)),
    card.alerts,
    el("div", { class: "job-compare" }, el("figure", { class: "job-before" }, original, originalMeta), card.after),
    card.actions);
  card.timer = setInterval(showElapsed, 100, card);
  return card;
}

function showElapsed(card) {
  card.elapsed.textContent = formatElapsed(performance.now() - card.startedAt);
}

function setStatus(card, status) {
  if (card.status.textContent === status) return;
  card.status.textContent = status;
  card.root.dataset.status = status;
  const waiting = { queued: "Waiting in the queue…", processing: "Processing…", failed: "No result" }[status];
  if (waiting) card.placeholder.textContent = waiting;
}

function finish(card) {
  card.finished = true;
  card.stop?.();
  clearInterval(card.timer);
  showElapsed(card);
}

function showFailure(card, message) {
  if (card.finished) return;
  setStatus(card, "failed");
  card.alerts.replaceChildren(el("p", { class: "job-error", text: message }));
  finish(card);
}

function downloadName(fileName, format) {
  const base = fileName.replace(/\.[^.]+$/, "") || "image";
  const extension = format === "jpeg" ? "jpg" : format || fileName.match(/\.([^.]+)$/)?.[1] || "img";
  return `${base}-imgstream.${extension}`;
}

function showResult(card, job) {
  const result = job.result ?? {};
  const url = result.url ?? job.links?.result ?? `/api/jobs/${encodeURIComponent(job.id)}/result`;
  const size = result.width && result.height ? `${result.width} × ${result.height} px` : "";
  const bytes = Number.isFinite(result.bytes) ? kilobytes(result.bytes) : "";
  const details = [size, String(result.format ?? "").toUpperCase(), bytes].filter(Boolean);
  const image = el("img", { class: "job-result", src: url, alt: `Result: ${card.file.name}` });
  card.after.replaceChildren(image, el("figcaption", { class: "job-caption job-meta", text: ["Result", ...details].join(" · ") }));
  card.actions.replaceChildren(el("a", {
    class: "button job-download", href: url, download: downloadName(card.file.name, result.format),
    text: "Download", "aria-label": `Download result for ${card.file.name}`,
  }));
}

function applyUpdate(card, job) {
  if (card.finished || !job?.status) return;
  if (job.status === "done") showResult(card, job);
  if (job.status === "failed") {
    const message = job.error ? sentence(String(job.error)) : "The job failed.";
    showFailure(card, message);
    return;
  }
  setStatus(card, job.status);
  if (TERMINAL.has(job.status)) finish(card);
}

async function uploadJob(card, operations, format) {
  const body = new FormData();
  body.append("image", card.file, card.file.name);
  body.append("operations", operations);
  if (format) body.append("format", format);
  let response;
  try {
    response = await fetch("/api/jobs", { method: "POST", body, headers: { Accept: "application/json" } });
  } catch {
    return showFailure(card, "Could not reach the server. Check the connection and try again.");
  }
  if (!response.ok) return showFailure(card, await describeHttpError(response));
  const job = await response.json().catch(() => null);
  if (!job?.id) return showFailure(card, "The server gave an unexpected answer; the job may not have started.");
  card.root.dataset.jobId = job.id;
  applyUpdate(card, job);
  if (!card.finished) card.stop = watchJob(job.id, (update) => applyUpdate(card, update));
}

// ---------- form

async function onSubmit(event) {
  event.preventDefault();
  const files = [...$("#file-input").files];
  const problem = files.length ? pipelineProblem() : "Choose at least one image first.";
  $("#form-error").textContent = problem;
  if (problem) return;
  const operations = JSON.stringify(pipeline.map(stepPayload));
  const format = $("#format").value;
  const batch = files.map(createCard);
  $("#jobs").prepend(...batch.map((card) => card.root));
  $("#jobs-empty").hidden = true;
  const submit = $("#submit");
  submit.disabled = true;
  try {
    for (const card of batch) await uploadJob(card, operations, format);
  } finally {
    submit.disabled = false;
  }
}

function init() {
  loadSettings();
  renderPipeline();
  setupDropZone();
  $("#file-input").addEventListener("change", showSelection);
  $("#pipeline").addEventListener("input", onStepInput);
  $("#pipeline").addEventListener("change", onStepInput);
  $("#pipeline").addEventListener("click", onStepAction);
  for (const button of document.querySelectorAll(".add-step")) button.addEventListener("click", () => addStep(button.dataset.op));
  $("#format").addEventListener("change", saveSettings);
  $("#job-form").addEventListener("submit", onSubmit);
  showSelection();
}

init();
