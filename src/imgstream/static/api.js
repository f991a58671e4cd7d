// Talking to the imgstream API: uploads, one-off status reads, and errors in plain words.

import { formatBytes, sentence } from "./dom.js";
import { apiFetch, currentKey } from "./keys.js";
import { currentLimits } from "./limits.js";

export const TERMINAL = new Set(["done", "failed", "expired"]);
export const RETRYABLE = new Set([429, 502, 503, 504]);
export const jobUrl = (id) => `/api/jobs/${encodeURIComponent(id)}`;

/**
 * What a 404 for job `id` means to the page: {id, status: "expired"}, and `withKey` when an
 * API key was in use, since then the job may as well belong to another key (the server says
 * 404 for both, on purpose).
 */
export const expiredJob = (id) => ({ id, status: "expired", withKey: Boolean(currentKey()) });

const TITLES = {
  401: "API key needed",
  404: "Not found",
  413: "File too large",
  415: "Not a supported image",
  422: "Settings not accepted",
  429: "Server busy",
  503: "Service unavailable",
};
/** Titles by the error's code, where one status covers several things. */
const CODE_TITLES = {
  invalid_request: "Upload not accepted",
  rate_limited: "Too many uploads at once",
};

/** The title of a refusal: about the image when it is the image, about the settings when not. */
function titleFor(status, code, message) {
  if (code === "limit_exceeded") return /frames/.test(message) ? "Too many frames" : "Image too large";
  return CODE_TITLES[code] ?? TITLES[status] ?? `Request failed (HTTP ${status})`;
}

/** Seconds the server asked us to wait (Retry-After), 0 when it did not say. */
export function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After")?.trim();
  if (!value) return 0;
  const seconds = /^\d+$/.test(value) ? Number(value) : (Date.parse(value) - Date.now()) / 1000;
  return Number.isFinite(seconds) && seconds > 0 ? Math.ceil(seconds) : 0;
}

// Operator hints such as "(IMGSTREAM_MAX_UPLOAD_BYTES)" mean nothing to the person uploading.
const plain = (message) => sentence(String(message).replace(/\s*\(IMGSTREAM_[A-Z_]+\)/g, ""));

/**
 * An error answer as {title, detail, retryable}: a short title, then what happened and what
 * to do, in words a person understands. `file` (optional) lets a 413 say how big it was.
 */
export async function describeHttpError(response, file = null) {
  let message = "";
  let code = "";
  try {
    const error = (await response.json())?.error;
    message = String(error?.message ?? "");
    code = String(error?.code ?? "");
  } catch {
    // not JSON (a proxy's page, say): the status has to do
  }
  const status = response.status;
  const retry = retryAfterSeconds(response);
  const title = titleFor(status, code, message);
  let detail = message ? plain(message) : "";
  if (status === 413) {
    const most = currentLimits().max_upload_bytes;
    const limit = most === undefined ? "" : `: at most ${formatBytes(most)} per image`;
    detail = file
      ? `This file (${formatBytes(file.size)}) is more than the server accepts${limit}.`
      : `The file is more than the server accepts${limit}.`;
  } else if (status === 415) {
    const formats = "JPEG, PNG, WebP, GIF, TIFF and HEIF/AVIF";
    if (!/JPEG/.test(detail)) detail = [detail, `The server reads ${formats} images.`].filter(Boolean).join(" ");
  } else if (code === "limit_exceeded") {
    detail = [detail, "Use a smaller image."].filter(Boolean).join(" ");
  } else if (code === "rate_limited") {
    detail = "This browser sent more images than the server takes at once.";
  } else if (status === 429) {
    detail = "The queue is full right now.";
  } else if (status === 503) {
    detail = "The server cannot reach its job store.";
  }
  if (RETRYABLE.has(status)) detail += retry ? ` Try again in ${retry} s.` : " Try again shortly.";
  return { title, detail: detail.trim(), retryable: RETRYABLE.has(status) };
}

const PATIENCE = { attempts: 6, maxWaitSeconds: 30 };
const pause = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

const NO_CONNECTION = { title: "No connection", detail: "Could not reach the server. Check the connection and try again.", retryable: true };
const NONSENSE = { title: "Unexpected answer", detail: "The server's answer made no sense; the job may not have started.", retryable: true };

/**
 * POST a form to `url`, a 429 (this client's upload rate, or a full queue) waited out as
 * Retry-After says, a few times, so a large batch paces itself instead of failing. The
 * response, or null when the server could not be reached.
 */
async function postPatiently(url, makeBody) {
  for (let attempt = 1; ; attempt += 1) {
    let response;
    try {
      response = await apiFetch(url, { method: "POST", body: makeBody(), headers: { Accept: "application/json" } });
    } catch {
      return null;
    }
    const wait = retryAfterSeconds(response);
    if (response.status !== 429 || attempt >= PATIENCE.attempts || wait > PATIENCE.maxWaitSeconds) return response;
    await pause(wait || 1);
  }
}

function uploadForm(files, operations, output) {
  const body = new FormData();
  for (const file of files) body.append("image", file, file.name);
  body.append("operations", JSON.stringify(operations));
  for (const [name, value] of Object.entries(output)) if (value) body.append(name, value);
  return body;
}

/** Upload one file as one job: {job} when accepted, else {error: {title, detail, retryable}}. */
export async function submitJob(file, operations, output = {}) {
  const response = await postPatiently("/api/jobs", () => uploadForm([file], operations, output));
  if (!response) return { error: NO_CONNECTION };
  if (!response.ok) return { error: await describeHttpError(response, file) };
  const job = await response.json().catch(() => null);
  if (!job?.id) return { error: NONSENSE };
  return { job };
}

// The server names the refused part of a batch: "image 4 (huge.png): …".
const REFUSED_PART = /^image (\d+) \([^)]*\):\s*/i;

/**
 * Upload several files as one batch (a job each, all or nothing): {batch} when accepted;
 * else {error, index}, `index` the file the server refused (the others were not taken and
 * may be sent again), or no index when the batch as a whole was refused.
 */
export async function submitBatch(files, operations, output = {}) {
  const response = await postPatiently("/api/batches", () => uploadForm(files, operations, output));
  if (!response) return { error: NO_CONNECTION };
  if (!response.ok) {
    const message = String((await response.clone().json().catch(() => null))?.error?.message ?? "");
    const part = REFUSED_PART.exec(message);
    const index = part ? Number(part[1]) - 1 : undefined;
    const error = await describeHttpError(response, files[index] ?? null);
    error.detail = sentence(error.detail.replace(REFUSED_PART, ""));
    return index >= 0 && index < files.length ? { error, index } : { error };
  }
  const batch = await response.json().catch(() => null);
  if (!batch?.id || batch.jobs?.length !== files.length) return { error: NONSENSE };
  return { batch };
}

/**
 * The job's current state, once: the job document, expiredJob(id) when the server no longer
 * knows it (or not for this key), or null when it could not be asked (network, 5xx).
 */
export async function fetchJob(id) {
  try {
    const response = await apiFetch(jobUrl(id), { headers: { Accept: "application/json" }, cache: "no-store" });
    if (response.status === 404) return expiredJob(id);
    if (!response.ok) return null;
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * A job's result image, fetched with the API key (an <img> or a link could not send it):
 * {blob}, {expired: true} when the server no longer has it (404), else {error: {title, detail}}.
 */
export async function fetchResult(url) {
  let response;
  try {
    response = await apiFetch(url);
  } catch {
    return { error: { title: "No connection", detail: "Could not fetch the result. Check the connection and reload the page." } };
  }
  if (response.status === 404) return { expired: true };
  if (!response.ok) return { error: await describeHttpError(response) };
  try {
    return { blob: await response.blob() };
  } catch {
    return { error: { title: "No connection", detail: "The result broke off while it was fetched. Reload the page to try again." } };
  }
}
