// The jobs this browser submitted, kept in localStorage so a reload lists them again.
// Each entry holds what the server does not keep: the file's name and a small thumbnail.

import { readStored, writeStored } from "./dom.js";

const STORAGE_KEY = "imgstream.recent.v1";
const MAX_ENTRIES = 30;
const THUMB_SIDE = 160;
const JOB_ID = /^[0-9a-f]{32}$/;

/** The remembered jobs, newest first; anything malformed in storage is dropped. */
export function loadRecent() {
  const saved = readStored(STORAGE_KEY, []);
  if (!Array.isArray(saved)) return [];
  return saved
    .filter((entry) => JOB_ID.test(entry?.id ?? ""))
    .map((entry) => ({
      id: entry.id,
      name: String(entry.name ?? ""),
      size: Number(entry.size) || 0,
      submittedAt: Number(entry.submittedAt) || Date.now(),
      thumb: typeof entry.thumb === "string" && entry.thumb.startsWith("data:image/") ? entry.thumb : "",
      summary: String(entry.summary ?? ""),
    }))
    .sort((a, b) => b.submittedAt - a.submittedAt)
    .slice(0, MAX_ENTRIES);
}

function store(entries) {
  // A full storage quota drops thumbnails first, then the oldest entries.
  let kept = entries.slice(0, MAX_ENTRIES);
  if (writeStored(STORAGE_KEY, kept)) return;
  kept = kept.map((entry) => ({ ...entry, thumb: "" }));
  while (kept.length && !writeStored(STORAGE_KEY, kept)) kept.pop();
}

export function remember(entry) {
  store([entry, ...loadRecent().filter((other) => other.id !== entry.id)]);
}

export function forget(id) {
  store(loadRecent().filter((entry) => entry.id !== id));
}

export function forgetAll() {
  store([]);
}

/** A small JPEG data URL of an image file, "" when the browser cannot decode it. */
export async function thumbnail(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, THUMB_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL("image/jpeg", 0.75);
  } catch {
    return "";
  }
}
