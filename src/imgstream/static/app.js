// imgstream web page: pick or drop images, build a pipeline, one job per file (several files
// go as one batch), each followed live; results compared, downloaded one by one, all at once
// or as the batch's ZIP; recent jobs kept over reloads.

import { fetchJob, submitBatch, submitJob, TERMINAL } from "./api.js";
import { JobCard } from "./cards.js";
import { $ } from "./dom.js";
import { installKeyForm } from "./keyform.js";
import { apiFetch, currentKey } from "./keys.js";
import { batchesOf, loadLimits } from "./limits.js";
import { describeOperations, initPipeline, operationsPayload, outputOptions, pipelineProblem } from "./pipeline.js";
import { forget, forgetAll, loadRecent, remember, thumbnail } from "./recent.js";
import { watchJob } from "./watch.js";
import { zipStore } from "./zip.js";

const cards = new Set();
let pickedFiles = [];
let lastBatch = null; // {url, cards} of the latest batch sent, for its ZIP link

// ---------- the jobs list

function refreshList() {
  const all = [...cards];
  const done = all.filter((card) => card.result);
  const running = all.filter((card) => !card.finished).length;
  $("#jobs-empty").hidden = all.length > 0;
  $("#list-actions").hidden = all.length === 0;
  const downloadAll = $("#download-all");
  downloadAll.disabled = done.length === 0;
  downloadAll.textContent = done.length > 1 ? `Download all (${done.length})` : "Download all";
  const parts = [];
  if (running) parts.push(`${running} in progress`);
  if (done.length) parts.push(`${done.length} done`);
  const failed = all.filter((card) => card.finished && !card.result).length;
  if (failed) parts.push(`${failed} without result`);
  $("#jobs-summary").textContent = parts.join(" · ");
  const zipLink = $("#batch-zip");
  const members = lastBatch?.cards.filter((member) => cards.has(member)) ?? [];
  zipLink.hidden = !members.length || !members.every((member) => member.finished) || !members.some((member) => member.result);
}

function addCard(card, { atEnd = false } = {}) {
  cards.add(card);
  card.onRemove = removeCard;
  card.onChange = refreshList;
  if (atEnd) $("#jobs").append(card.root);
  else $("#jobs").prepend(card.root);
  refreshList();
}

function removeCard(card) {
  const next = card.root.nextElementSibling ?? card.root.previousElementSibling;
  cards.delete(card);
  if (card.jobId) forget(card.jobId);
  card.dispose();
  refreshList();
  (next?.querySelector(".job-remove") ?? $("#file-input")).focus();
}

function follow(card) {
  card.stopWatching = watchJob(card.jobId, (job) => {
    card.update(job);
    if (TERMINAL.has(job.status)) refreshList();
  });
}

// ---------- sending a batch

async function send(card, file, operations, output, submittedAt = Date.now()) {
  card.setStatus("uploading");
  const { job, error } = await submitJob(file, operations, output);
  if (error) {
    card.showRefused(error);
    refreshList();
    return;
  }
  await accepted(card, file, job, operations, output, submittedAt);
}

async function accepted(card, file, job, operations, output, submittedAt) {
  card.setJobId(job.id);
  // Done at once (from the result cache): the 202 names no result, its status does.
  if (TERMINAL.has(job.status)) job = (await fetchJob(job.id)) ?? job;
  card.update(job);
  remember({
    id: job.id, name: file.name, size: file.size, submittedAt,
    thumb: await thumbnail(file), summary: describeOperations(operations, output.format),
  });
  follow(card);
}

/**
 * Several files in one request. The server takes a batch whole or not at all: a file it
 * refuses gets its card's explanation, and the others are sent again as a batch.
 */
async function sendBatch(batchCards, files, operations, output, startedAt, zip = true) {
  let left = batchCards.map((card, index) => ({ card, file: files[index], index }));
  while (left.length) {
    const { batch, error, index } = await submitBatch(left.map((item) => item.file), operations, output);
    if (batch) {
      if (zip) {
        lastBatch = { url: batch.links.result, cards: left.map((item) => item.card) };
        $("#batch-zip").href = batch.links.result;
      }
      // Each job is remembered a millisecond apart, so a reload lists the batch in this order.
      await Promise.all(batch.jobs.map((job, k) =>
        accepted(left[k].card, left[k].file, job, operations, output, startedAt - left[k].index)));
      refreshList();
      return;
    }
    if (index === undefined) {
      for (const item of left) item.card.showRefused(error);
      refreshList();
      return;
    }
    left[index].card.showRefused(error);
    left = left.filter((_, k) => k !== index);
    refreshList();
  }
}

async function onSubmit(event) {
  event.preventDefault();
  const files = pickedFiles;
  const problem = files.length ? pipelineProblem() : "Choose at least one image first.";
  $("#form-error").textContent = problem;
  if (problem) {
    if (!files.length) $("#file-input").focus();
    return;
  }
  const operations = operationsPayload();
  const output = outputOptions();
  const summary = describeOperations(operations, output.format);
  const batch = files.map((file) => {
    const card = new JobCard({ name: file.name, size: file.size, original: URL.createObjectURL(file), summary });
    card.onRetry = () => {
      card.finished = false;
      card.startClock();
      send(card, file, operations, output);
    };
    card.setStatus("uploading");
    return card;
  });
  for (const card of [...batch].reverse()) addCard(card);
  for (const card of batch) card.startClock();
  setPicked([]);
  revealJobs();
  const submit = $("#submit");
  submit.disabled = true;
  try {
    // More files than one batch may carry go as several batches, one after the other.
    const startedAt = Date.now() + batch.length;
    const groups = batchesOf(files);
    // The server's ZIP holds one batch: for several, "Download all" is the one that covers them.
    const zip = groups.length === 1;
    if (!zip) lastBatch = null;
    let first = 0;
    for (const group of groups) {
      const groupCards = batch.slice(first, first + group.length);
      const groupStart = startedAt - first;
      if (files.length === 1) await send(groupCards[0], group[0], operations, output, groupStart);
      else await sendBatch(groupCards, group, operations, output, groupStart, zip);
      first += group.length;
    }
  } finally {
    submit.disabled = false;
  }
}

// On a phone the list is below the form: bring the new cards into view.
function revealJobs() {
  const heading = $("#jobs-heading");
  if (heading.getBoundingClientRect().top < window.innerHeight * 0.8) return;
  const smooth = !matchMedia("(prefers-reduced-motion: reduce)").matches;
  heading.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
}

// ---------- picking files (button or drag and drop)

function setPicked(files) {
  pickedFiles = files;
  const names = files.map((file) => file.name);
  const shown = names.slice(0, 3).join(", ") + (names.length > 3 ? `, and ${names.length - 3} more` : "");
  $("#file-summary").textContent = names.length
    ? `${names.length} ${names.length === 1 ? "image" : "images"} ready: ${shown}`
    : "No images chosen yet.";
  $("#drop-zone").classList.toggle("has-files", names.length > 0);
  if (!files.length) $("#file-input").value = "";
}

const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");

function setupDropZone() {
  const zone = $("#drop-zone");
  const highlight = (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    zone.classList.add("is-dragging");
  };
  zone.addEventListener("dragenter", highlight);
  zone.addEventListener("dragover", highlight);
  zone.addEventListener("dragleave", (event) => zone.contains(event.relatedTarget) || zone.classList.remove("is-dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("is-dragging");
    if (event.dataTransfer.files.length) setPicked([...event.dataTransfer.files]);
  });
  // A file dropped beside the zone must not make the browser navigate away from the page.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => carriesFiles(event) && event.preventDefault());
  }
  $("#file-input").addEventListener("change", (event) => setPicked([...event.target.files]));
}

// ---------- download all, as one ZIP built here

async function downloadAll() {
  const button = $("#download-all");
  const finished = [...cards].filter((card) => card.result);
  if (!finished.length) return;
  button.disabled = true;
  $("#list-status").textContent = "Preparing the ZIP file…";
  const used = new Set();
  const entries = [];
  let missing = 0;
  for (const card of finished) {
    // Fetched already (with the API key, if one is in use) when the card showed the result.
    const blob = await card.result?.blob;
    if (!blob) {
      missing += 1;
      continue;
    }
    let name = card.result.name;
    for (let n = 2; used.has(name); n += 1) name = card.result.name.replace(/(\.[^.]+)?$/, `-${n}$1`);
    used.add(name);
    entries.push({ name, bytes: new Uint8Array(await blob.arrayBuffer()) });
  }
  if (entries.length) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(zipStore(entries));
    link.download = "imgstream-results.zip";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  }
  $("#list-status").textContent = missing
    ? `${missing} of ${finished.length} results could not be fetched; the ZIP holds the others.`
    : `ZIP file with ${entries.length} ${entries.length === 1 ? "result" : "results"} ready.`;
  button.disabled = false;
}

// ---------- the latest batch's ZIP, streamed by the server

async function downloadBatchZip(event) {
  if (!currentKey()) return; // a plain link: the browser streams the ZIP to disk itself
  event.preventDefault(); // with a key, fetched here so that it can carry the key
  const link = event.currentTarget;
  $("#list-status").textContent = "Fetching the batch's ZIP file…";
  try {
    const response = await apiFetch(lastBatch.url);
    if (!response.ok) throw new Error(String(response.status));
    const save = document.createElement("a");
    save.href = URL.createObjectURL(await response.blob());
    save.download = link.download;
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(save.href), 60_000);
    $("#list-status").textContent = "The batch's ZIP file is ready.";
  } catch {
    $("#list-status").textContent = "The batch's ZIP file could not be fetched; try again, or use Download all.";
  }
}

function clearList() {
  for (const card of [...cards]) {
    cards.delete(card);
    card.dispose();
  }
  forgetAll();
  $("#list-status").textContent = "List cleared.";
  refreshList();
  $("#file-input").focus();
}

// ---------- recent jobs from earlier visits

async function restoreRecent() {
  for (const entry of loadRecent()) {
    const card = new JobCard({
      name: entry.name, size: entry.size, thumb: entry.thumb, summary: entry.summary, earlier: entry.submittedAt,
    });
    card.setJobId(entry.id);
    card.setStatus("queued");
    addCard(card, { atEnd: true });
    fetchJob(entry.id).then((job) => {
      if (!job) {
        card.showFailure("Could not ask the server about this job right now. Reload to try again.", "No connection");
      } else {
        card.update(job);
        if (!TERMINAL.has(job.status)) follow(card);
      }
      refreshList();
    });
  }
}

async function init() {
  installKeyForm();
  await loadLimits(); // the controls offer what the server accepts
  initPipeline();
  setupDropZone();
  $("#job-form").addEventListener("submit", onSubmit);
  $("#download-all").addEventListener("click", downloadAll);
  $("#batch-zip").addEventListener("click", downloadBatchZip);
  $("#clear-list").addEventListener("click", clearList);
  setPicked([]);
  restoreRecent();
  refreshList();
  document.documentElement.dataset.ready = "true";
}

init();
