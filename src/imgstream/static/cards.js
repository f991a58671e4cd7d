// One card per file: thumbnail, status and elapsed time while it runs; then the result with
// its size, a before/after comparison and a download link; or the problem in plain words.

import { fetchResult, jobUrl } from "./api.js";
import { el, formatAgo, formatBytes, formatElapsed, sentence } from "./dom.js";
import { placeholderCanvas } from "./placeholder.js";

const STATUS_TEXT = {
  uploading: "Uploading",
  queued: "Queued",
  processing: "Processing",
  done: "Done",
  failed: "Failed",
  refused: "Not accepted",
  expired: "Expired",
  missing: "Not found",
};
const WAITING_TEXT = {
  uploading: "Sending the file…",
  queued: "Waiting for a worker…",
  processing: "A worker is processing it…",
};

/** "holiday.jpg", "webp" -> "holiday-imgstream.webp" (the name used for downloads). */
export function downloadName(fileName, format) {
  const base = (fileName || "image").replace(/\.[^.]+$/, "") || "image";
  const extension = format === "jpeg" ? "jpg" : format || "img";
  return `${base}-imgstream.${extension}`;
}

const milliseconds = (iso) => {
  const value = Date.parse(iso ?? "");
  return Number.isFinite(value) ? value : null;
};

export class JobCard {
  /**
   * name, size: the file's; original: a URL of the full original (or ""), thumb: a small one;
   * summary: the pipeline in words; earlier: a timestamp when restored from a past visit.
   */
  constructor({ name, size = 0, original = "", thumb = "", summary = "", earlier = null }) {
    this.name = name || "(unnamed file)";
    this.original = original || thumb;
    this.originalIsThumb = !original;
    this.finished = false;
    this.status = "";
    this.jobId = "";
    this.result = null;
    this.resultUrl = "";
    this.disposed = false;
    this.stopWatching = null;
    this.onChange = null;
    this.onRemove = null;
    this.onRetry = null;
    this.startedAt = performance.now();

    const picture = thumb || original;
    const blank = () => el("span", { class: "job-thumb job-thumb-none", "aria-hidden": "true", text: "?" });
    this.thumb = picture ? el("img", { class: "job-thumb", src: picture, alt: "", width: 64, height: 64 }) : blank();
    // Not every file is a picture the browser can show (that is for the server to say).
    this.thumb.addEventListener("error", () => this.thumb.replaceWith(blank()));
    this.pill = el("span", { class: "job-status" });
    this.elapsed = el("span", { class: "job-elapsed" });
    const details = [summary, size ? formatBytes(size) : "", earlier ? `sent ${formatAgo(earlier)}` : ""];
    this.subtitle = el("p", { class: "job-subtitle", text: details.filter(Boolean).join(" · ") });
    this.body = el("div", { class: "job-body" });
    this.actions = el("div", { class: "job-actions" });
    const remove = el("button", {
      type: "button", class: "icon-button job-remove", text: "✕",
      "aria-label": `Remove ${this.name} from the list`, title: "Remove from the list",
    });
    remove.addEventListener("click", () => this.onRemove?.(this));
    this.root = el("li", { class: "job-card" },
      el("div", { class: "job-head" },
        this.thumb,
        el("div", { class: "job-title" }, el("h3", { class: "job-name", text: this.name }), this.subtitle),
        el("p", { class: "job-state", "aria-live": "polite" }, this.pill, this.elapsed),
        remove),
      this.body,
      this.actions);
    if (earlier) this.root.classList.add("job-earlier");
  }

  /** Count the elapsed time on screen until the job ends (for jobs sent from this page). */
  startClock() {
    this.startedAt = performance.now();
    const tick = () => {
      this.elapsed.textContent = formatElapsed(performance.now() - this.startedAt);
    };
    tick();
    this.clock = setInterval(tick, 100);
  }

  setJobId(id) {
    this.jobId = id;
    this.root.dataset.jobId = id;
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.root.dataset.status = status;
    this.pill.textContent = STATUS_TEXT[status] ?? status;
    if (WAITING_TEXT[status]) {
      this.body.replaceChildren(el("div", { class: "job-progress", role: "presentation" }, el("span")),
        el("p", { class: "job-waiting", text: WAITING_TEXT[status] }));
    }
  }

  /** Apply a job document (from the event stream, a poll or a one-off read). */
  update(job) {
    if (this.finished || !job?.status) return;
    if (job.status === "done") this.showResult(job);
    else if (job.status === "failed") this.showFailure(job.error ? sentence(job.error) : "The job failed.", "Processing failed");
    else if (job.status === "expired") this.showExpired(job.withKey);
    else this.setStatus(job.status);
  }

  finish(job = null) {
    const ticking = Boolean(this.clock);
    const again = this.finished && !ticking; // e.g. a result that turned out to be gone
    this.finished = true;
    this.stopWatching?.();
    clearInterval(this.clock);
    this.clock = 0;
    if (again) return;
    const took = job && milliseconds(job.finished_at) - milliseconds(job.created_at);
    if (ticking) this.elapsed.textContent = formatElapsed(performance.now() - this.startedAt);
    else if (Number.isFinite(took) && took >= 0) this.elapsed.textContent = formatElapsed(took);
  }

  /** The upload was refused (413, 415, 422, 429, 503...) or never arrived. */
  showRefused({ title, detail, retryable }) {
    this.setStatus("refused");
    this.finish();
    this.body.replaceChildren(this.problem(title, detail));
    this.actions.replaceChildren();
    if (retryable && this.onRetry) {
      const retry = el("button", { type: "button", class: "button", text: "Try again" });
      retry.addEventListener("click", () => this.onRetry(this));
      this.actions.append(retry);
    }
  }

  showFailure(message, title = "Failed") {
    this.setStatus("failed");
    this.finish();
    this.body.replaceChildren(this.problem(title, message));
  }

  /** Not known to the server (404); with an API key that may also mean another key's job. */
  showExpired(withKey = false) {
    this.setStatus(withKey ? "missing" : "expired");
    this.finish();
    this.body.replaceChildren(withKey
      ? this.problem("Not visible with this key",
        "The server has no such job for the API key in use: it has expired, or it was sent with another key. "
        + "Use that key to see it, or upload the image again.")
      : this.problem("Expired",
        "The server no longer keeps this job (results are kept for a limited time). Upload the image again to redo it."));
  }

  problem(title, detail) {
    return el("div", { class: "job-error", role: "alert" },
      el("strong", { class: "job-error-title", text: title }), " ", el("span", { text: detail }));
  }

  /**
   * The job is done: fetch its result (with the API key, which an <img> could not send), then
   * show it beside the original with a download link. `result.blob` resolves to the image
   * (null when it could not be had), for "download all".
   */
  showResult(job) {
    const result = job.result ?? {};
    const url = result.url ?? `${jobUrl(job.id)}/result`;
    const details = [
      result.width && result.height ? `${result.width} × ${result.height} px` : "",
      String(result.format ?? "").toUpperCase(), formatBytes(result.bytes),
      job.cached ? "from cache" : "",
    ].filter(Boolean);
    this.setStatus("done");
    this.finish(job);
    const preview = placeholderCanvas(result, `Preview of the result for ${this.name}, while it loads`);
    this.body.replaceChildren(...(preview ? [preview] : []),
      el("p", { class: "job-waiting", text: "Fetching the result…" }));
    this.result = { url, name: downloadName(this.name, result.format), blob: null };
    this.result.blob = fetchResult(url).then((fetched) => {
      if (this.disposed) return null;
      if (fetched.blob) {
        this.resultUrl = URL.createObjectURL(fetched.blob);
        this.renderResult(details);
      } else {
        this.result = null;
        if (fetched.expired) this.showExpired(); // removed by the retention sweep
        else this.body.replaceChildren(this.problem(fetched.error.title, fetched.error.detail));
      }
      this.onChange?.(this);
      return fetched.blob ?? null;
    });
  }

  renderResult(details) {
    const url = this.resultUrl;
    const resultImage = el("img", { class: "job-result", src: url, alt: `Result: ${this.name}`, decoding: "async" });
    const after = el("figure", { class: "compare-after" }, resultImage,
      el("figcaption", { class: "job-caption job-meta", text: `After · ${details.join(" · ")}` }));
    const before = this.original
      ? el("figure", { class: "compare-before" },
          this.beforeImage("job-original"),
          el("figcaption", { class: "job-caption", text: this.originalIsThumb ? "Before · small copy kept by this browser" : "Before" }))
      : null;
    if (before && !this.originalIsThumb) {
      const originalImage = before.querySelector("img");
      originalImage.addEventListener("load", () => {
        before.querySelector("figcaption").textContent = `Before · ${originalImage.naturalWidth} × ${originalImage.naturalHeight} px`;
      });
    }
    const sides = el("div", { class: "compare-sides" }, before, after);
    this.body.replaceChildren(sides);
    const download = el("a", {
      class: "button button-primary job-download", href: url, download: this.result.name,
      text: "Download", "aria-label": `Download the result for ${this.name}`,
    });
    this.actions.replaceChildren(download);
    if (before) this.actions.append(this.viewSwitch(sides, url));
  }

  beforeImage(className) {
    return el("img", { class: className, src: this.original, alt: `Original: ${this.name}`, decoding: "async" });
  }

  // Side by side, or one frame with a handle that reveals the result over the original.
  viewSwitch(sides, url) {
    const slider = el("input", {
      type: "range", class: "slider-input", min: 0, max: 100, value: 50,
      "aria-label": `Comparison of ${this.name}: left shows the original, right the result`,
    });
    const frame = el("div", { class: "slider-frame" },
      this.beforeImage("slider-before"),
      el("img", { class: "slider-after", src: url, alt: `Result: ${this.name}` }),
      el("span", { class: "slider-divider", "aria-hidden": "true" }));
    const place = () => frame.style.setProperty("--split", `${slider.value}%`);
    slider.addEventListener("input", place);
    place();
    const labels = el("p", { class: "slider-labels", "aria-hidden": "true" },
      el("span", { text: "← Before" }), el("span", { text: "After →" }));
    const sliderView = el("div", { class: "compare-slider" }, frame, slider, labels);
    sides.after(sliderView);
    const button = (view, text) => el("button", { type: "button", class: "segment", "data-view": view, text });
    const group = el("div", { class: "segmented", role: "group", "aria-label": "Comparison view" },
      button("sides", "Side by side"), button("slider", "Slider"));
    const show = (chosen) => {
      for (const other of group.querySelectorAll("button")) other.setAttribute("aria-pressed", String(other.dataset.view === chosen));
      sides.hidden = chosen !== "sides";
      sliderView.hidden = chosen !== "slider";
    };
    group.addEventListener("click", (event) => {
      const chosen = event.target.closest("button[data-view]")?.dataset.view;
      if (chosen) show(chosen);
    });
    // Two images stacked make a tall card on a phone: there the slider comes first.
    show(matchMedia("(max-width: 40rem)").matches ? "slider" : "sides");
    return group;
  }

  dispose() {
    this.finished = true;
    this.disposed = true;
    this.stopWatching?.();
    clearInterval(this.clock);
    if (this.original.startsWith("blob:")) URL.revokeObjectURL(this.original);
    if (this.resultUrl) URL.revokeObjectURL(this.resultUrl);
    this.root.remove();
  }
}
