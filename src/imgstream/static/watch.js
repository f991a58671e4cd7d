// Following a job to its end: Server-Sent Events first, polling when the stream cannot work.
// The stream is read with fetch() (eventstream.js), not EventSource, so that it can carry
// the API key; with or without a key it is the same code.

import { describeHttpError, expiredJob, jobUrl, RETRYABLE, retryAfterSeconds, TERMINAL } from "./api.js";
import { EventStreamParser, isEventStream, readEventStream } from "./eventstream.js";
import { apiFetch } from "./keys.js";

// Over HTTP/1.1 a browser opens at most six connections to one server, and every open event
// stream holds one. Four streams leave room for uploads and images; more jobs are polled.
const MAX_STREAMS = 4;
const MAX_RECONNECTS = 3;
const RECONNECT_MS = 2000; // until the server says otherwise (the "retry" field)
const POLL_START_MS = 200;
const POLL_MAX_MS = 1500;
const MAX_NETWORK_FAILURES = 10;

let openStreams = 0;

/** How the page is following jobs right now, for the curious (and the tests). */
export const watchStats = { streams: 0, polls: 0, fallbacks: 0 };

/**
 * Follow job `id` until it is done or failed, calling onUpdate(job) with each job document
 * (the shape of GET /api/jobs/{id}); {id, status: "expired"} when the server no longer knows
 * it. Uses /api/jobs/{id}/events and falls back to polling when that connection fails.
 * Returns a function that stops watching.
 */
export function watchJob(id, onUpdate) {
  let stopped = false;
  let stopCurrent = () => {};
  const stop = () => {
    stopped = true;
    stopCurrent();
  };
  const deliver = (job) => {
    if (stopped) return;
    onUpdate(job);
    if (TERMINAL.has(job.status)) stop();
  };
  const poll = () => {
    if (stopped) return;
    watchStats.polls += 1;
    stopCurrent = pollJob(id, deliver);
  };
  if (typeof ReadableStream === "function" && openStreams < MAX_STREAMS) {
    watchStats.streams += 1;
    stopCurrent = streamJob(id, deliver, () => {
      watchStats.fallbacks += 1;
      poll();
    });
  } else {
    poll();
  }
  return stop;
}

/**
 * Read the job's event stream, as EventSource would: an answer that is not a 200 event stream,
 * or a first connection that fails, gives up at once (fallBack, to polling); a stream that
 * breaks off after it opened is reconnected after the server's retry delay, a few times.
 */
function streamJob(id, deliver, fallBack) {
  const controller = new AbortController();
  openStreams += 1;
  let closed = false;
  let opened = false;
  let failures = 0;
  let retryMs = RECONNECT_MS;
  let lastEventId = "";
  let timer = 0;
  const close = () => {
    if (closed) return;
    closed = true;
    openStreams -= 1;
    clearTimeout(timer);
    controller.abort();
  };
  const giveUp = () => {
    if (closed) return;
    close();
    fallBack();
  };
  const onEvent = ({ type, data, lastEventId: eventId }) => {
    lastEventId = eventId;
    if (closed) return;
    if (type === "gone") {
      close();
      deliver(expiredJob(id));
    } else if (type === "status") {
      let job;
      try {
        job = JSON.parse(data);
      } catch {
        return;
      }
      failures = 0;
      if (TERMINAL.has(job.status)) close(); // the server ends the stream now
      deliver(job);
    }
  };
  const onRetry = (ms) => {
    retryMs = ms;
  };

  async function connect() {
    const headers = { Accept: "text/event-stream" };
    if (lastEventId) headers["Last-Event-ID"] = lastEventId;
    let response;
    try {
      response = await apiFetch(`${jobUrl(id)}/events`, { headers, cache: "no-store", signal: controller.signal });
    } catch {
      return broken();
    }
    if (closed) return;
    if (!response.ok || !isEventStream(response) || !response.body) {
      response.body?.cancel().catch(() => {});
      return giveUp(); // refused, blocked, 404, 503...: the status requests will say what
    }
    opened = true;
    try {
      await readEventStream(response, new EventStreamParser({ onEvent, onRetry, lastEventId }));
    } catch {
      // broken off (or closed by us: then `closed` says so)
    }
    broken();
  }

  function broken() {
    if (closed) return;
    failures += 1;
    if (!opened || failures > MAX_RECONNECTS) giveUp();
    else timer = setTimeout(connect, retryMs);
  }

  connect();
  return close;
}

function pollJob(id, deliver) {
  const controller = new AbortController();
  const { signal } = controller;
  let stopped = false;
  let timer = 0;
  let delay = POLL_START_MS;
  let failures = 0;
  const fail = (message) => deliver({ id, status: "failed", error: message, error_code: "client" });

  async function poll() {
    let wait = delay;
    try {
      const response = await apiFetch(jobUrl(id), { headers: { Accept: "application/json" }, cache: "no-store", signal });
      if (stopped) return;
      if (response.ok) {
        const job = await response.json();
        failures = 0;
        deliver(job);
        if (TERMINAL.has(job.status)) return;
      } else if (response.status === 404) {
        return deliver(expiredJob(id));
      } else if (RETRYABLE.has(response.status)) {
        wait = Math.max(wait, retryAfterSeconds(response) * 1000);
      } else {
        const { title, detail } = await describeHttpError(response);
        return fail(`${title}. ${detail}`.trim());
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

  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    controller.abort();
  };
}
