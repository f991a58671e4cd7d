// The API key, for a service that runs with IMGSTREAM_API_KEYS: kept in sessionStorage (this
// tab), or in localStorage when the person asks to be remembered on this device; sent only in
// the Authorization header, only to this origin. Never put in a URL, never logged.
//
// apiFetch() is fetch() for /api: when the answer is 401 it asks for a key (keyEvents "needed",
// which keyform.js shows as a form), waits for one, and sends the same request again. A 401
// comes from the key gate before the request is read, so sending it again is always safe.

const STORAGE_NAME = "imgstream.api-key.v1";
const TAB = "sessionStorage";
const DEVICE = "localStorage";
const KEY_SHAPE = /^[\x21-\x7e]+$/; // what an HTTP header value can carry: no spaces, no controls

let unstored = ""; // the key, when the browser refuses both storages
let waiting = null; // {promise, resolve} while requests wait for a key

/** "needed" (detail: {rejected}) when a key is asked for; "changed" when it is set or forgotten. */
export const keyEvents = new EventTarget();

// Storage by name: merely naming window.localStorage throws where the browser forbids it.
function stored(name) {
  try {
    return window[name].getItem(STORAGE_NAME) ?? "";
  } catch {
    return "";
  }
}

function store(name, key) {
  try {
    if (key) window[name].setItem(STORAGE_NAME, key);
    else window[name].removeItem(STORAGE_NAME);
    return true;
  } catch {
    return false;
  }
}

/** The key in use ("" for none): this tab's first, then the one remembered on this device. */
export function currentKey() {
  return stored(TAB) || stored(DEVICE) || unstored;
}

/** Where the key is kept: "device", "tab", or "" when there is none. */
export function keyPlace() {
  if (stored(TAB)) return "tab";
  if (stored(DEVICE)) return "device";
  return unstored ? "tab" : "";
}

/** What is wrong with a key typed by a person, in words; "" when it may be tried. */
export function keyProblem(key) {
  if (!key) return "Enter the API key first.";
  if (!KEY_SHAPE.test(key)) return "An API key has no spaces or special characters. Check that it was copied whole.";
  return "";
}

/** Use `key` from now on (remembered on this device when `remember`); waiting requests go on. */
export function useKey(key, { remember = false } = {}) {
  forgetKey({ quiet: true });
  if (!store(remember ? DEVICE : TAB, key)) unstored = key;
  keyEvents.dispatchEvent(new CustomEvent("changed"));
  const resumed = waiting;
  waiting = null;
  resumed?.resolve();
}

export function forgetKey({ quiet = false } = {}) {
  store(TAB, "");
  store(DEVICE, "");
  unstored = "";
  if (!quiet) keyEvents.dispatchEvent(new CustomEvent("changed"));
}

/** Whether a request for `url` may carry the key: only requests to this page's own server. */
function sameOrigin(url) {
  try {
    return new URL(url, location.href).origin === location.origin;
  } catch {
    return false;
  }
}

function withKey(init, key) {
  const headers = new Headers(init.headers);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return { ...init, headers };
}

function abortError() {
  return new DOMException("The request was stopped.", "AbortError");
}

/** Wait until a key other than `rejected` is in use; asks for one (once for every waiter). */
function keyNeeded(rejected, signal) {
  const key = currentKey();
  if (key && key !== rejected) return Promise.resolve(); // set meanwhile: just try it
  if (rejected && key === rejected) forgetKey({ quiet: true }); // the server said no: drop it
  if (!waiting) {
    let resolve;
    const promise = new Promise((done) => {
      resolve = done;
    });
    waiting = { promise, resolve };
  }
  keyEvents.dispatchEvent(new CustomEvent("needed", { detail: { rejected: Boolean(rejected) } }));
  const { promise } = waiting;
  if (!signal) return promise;
  return new Promise((resolve, reject) => {
    const stop = () => reject(abortError());
    if (signal.aborted) return stop();
    signal.addEventListener("abort", stop, { once: true });
    promise.then(() => {
      signal.removeEventListener("abort", stop);
      resolve();
    });
  });
}

/** Whether requests are waiting for a key right now. */
export const keyWanted = () => waiting !== null;

/**
 * fetch() with the API key: `init` as for fetch (its body must be one that can be sent twice,
 * such as FormData or a string). A 401 waits for a key and sends the request again; an abort
 * through init.signal ends the wait as it ends a fetch. Never resolves with a 401.
 */
export async function apiFetch(url, init = {}) {
  if (!sameOrigin(url)) return fetch(url, init);
  for (;;) {
    const key = currentKey();
    const response = await fetch(url, withKey(init, key));
    if (response.status !== 401) return response;
    response.body?.cancel().catch(() => {});
    await keyNeeded(key, init.signal);
  }
}
