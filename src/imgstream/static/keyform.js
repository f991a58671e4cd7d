// The "API key" form, shared by the page and the dashboard: shown when a request answers 401,
// with a line saying where the key is kept and a "Forget key" button while one is in use.
// Built into the page's <section id="api-key" hidden>; every text is set with textContent.

import { el } from "./dom.js";
import { forgetKey, keyEvents, keyPlace, keyProblem, keyWanted, useKey } from "./keys.js";

const PLACES = {
  tab: "An API key is in use in this tab; it is forgotten when the tab closes.",
  device: "An API key is in use and remembered on this device.",
};

/** Build the form into `#api-key` and keep it in step with the key; hidden while not needed. */
export function installKeyForm(panel = document.getElementById("api-key")) {
  const input = el("input", {
    id: "api-key-input", type: "password", autocomplete: "off", spellcheck: "false",
    autocapitalize: "off", "aria-describedby": "api-key-hint api-key-error",
  });
  const remember = el("input", { id: "api-key-remember", type: "checkbox" });
  const error = el("p", { id: "api-key-error", class: "apikey-error", "aria-live": "assertive" });
  // The input has no name: even a form sent by the browser itself could not carry the key.
  const form = el("form", { class: "apikey-form", "aria-labelledby": "api-key-heading", novalidate: true, hidden: true },
    el("h2", { id: "api-key-heading", class: "apikey-heading", text: "API key needed" }),
    el("p", {
      id: "api-key-hint", class: "apikey-hint",
      text: "This server answers only requests that carry an API key. Ask its operator for one. "
        + "It is kept in this tab until the tab closes, unless you tick the box below.",
    }),
    el("div", { class: "apikey-row" },
      el("label", { for: "api-key-input", class: "apikey-label", text: "API key" }),
      input,
      el("button", { type: "submit", class: "button button-primary apikey-use", text: "Use key" })),
    el("label", { class: "check apikey-remember" }, remember, " Remember on this device"),
    error);
  const place = el("span", { class: "apikey-place" });
  const forget = el("button", { type: "button", class: "button button-quiet apikey-forget", text: "Forget key" });
  const status = el("p", { class: "apikey-status", hidden: true }, place, " ", forget);
  const note = el("p", { class: "apikey-note", role: "status", tabindex: -1 });
  panel.replaceChildren(form, status, note);

  let returnFocus = null;
  const setText = (node, text) => {
    if (node.textContent !== text) node.textContent = text;
  };
  const showError = (text) => {
    setText(error, text);
    if (text) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  };
  const refresh = () => {
    const where = keyPlace();
    status.hidden = !where || !form.hidden;
    setText(place, PLACES[where] ?? "");
    panel.hidden = form.hidden && status.hidden && !note.textContent;
  };

  let noteTimer = 0;
  const say = (text, forMs = 0) => { // a short note under the form; some go after a while
    clearTimeout(noteTimer);
    setText(note, text);
    refresh();
    if (forMs) noteTimer = setTimeout(() => say(""), forMs);
  };

  keyEvents.addEventListener("needed", (event) => {
    const opening = form.hidden;
    form.hidden = false;
    say("");
    if (event.detail?.rejected) {
      // The key just tried is still in the box, selected: to retype, or to mend.
      showError("The server did not accept this key. Check it (a single character wrong is enough) and try again.");
      input.select();
    } else if (opening) {
      input.value = "";
      showError("");
    }
    refresh();
    if (opening) {
      returnFocus = document.activeElement;
      input.focus();
    }
  });
  keyEvents.addEventListener("changed", refresh);
  window.addEventListener("storage", refresh); // remembered or forgotten in another tab

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim().replace(/^Bearer\s+/i, "");
    const problem = keyProblem(key);
    showError(problem);
    if (problem) {
      input.focus();
      return;
    }
    const waited = keyWanted();
    form.hidden = true;
    useKey(key, { remember: remember.checked });
    say(waited ? "Key set. Sending again what needed it." : "Key set.", 5000);
    // Back to where the person was, if that can still take focus (not a disabled button).
    if (returnFocus && returnFocus !== document.body) returnFocus.focus();
    if (document.activeElement !== returnFocus || returnFocus === document.body) forget.focus();
    returnFocus = null;
  });
  forget.addEventListener("click", () => {
    forgetKey();
    input.value = "";
    say("Key forgotten. The page will ask for one when it needs it.");
    note.focus(); // the button it was on is gone
  });

  refresh();
}
