// The operation pipeline builder: steps mirroring the API's `operations` list, plus the
// output format; add, remove, reorder; remembered in localStorage between visits.

import { $, $$, el, readStored, writeStored } from "./dom.js";
import { currentLimits } from "./limits.js";

const STORAGE_KEY = "imgstream.settings.v1";
const SIGMA_STEP = 0.5;
const maxSteps = () => currentLimits().max_steps;
const maxSigma = () => currentLimits().max_sigma;
const FITS = [
  ["inside", "Inside (keep aspect)"],
  ["cover", "Cover (crop to fill)"],
  ["fill", "Fill (stretch)"],
];
const FORMATS = ["", "jpeg", "png", "webp"]; // TIFF too is accepted, but browsers cannot show it
const STEP_TITLES = { resize: "Resize", grayscale: "Grayscale", blur: "Blur" };
const STEP_DEFAULTS = {
  resize: () => ({ op: "resize", width: 800, height: null, fit: "inside", enlarge: false }),
  grayscale: () => ({ op: "grayscale" }),
  blur: () => ({ op: "blur", sigma: 2 }),
};

let pipeline = [];
let nextKey = 1;

const toSide = (value) => {
  const number = Number(value);
  return value !== "" && Number.isInteger(number) && number >= 1 && number <= currentLimits().max_dimension ? number : null;
};

// Whatever localStorage holds is rebuilt field by field from the defaults, never trusted as is.
function sanitizeStep(raw) {
  if (!Object.hasOwn(STEP_DEFAULTS, raw?.op)) return null;
  const step = STEP_DEFAULTS[raw.op]();
  if (step.op === "resize") {
    const fit = FITS.some(([value]) => value === raw.fit) ? raw.fit : "inside";
    Object.assign(step, { width: toSide(raw.width), height: toSide(raw.height), fit, enlarge: raw.enlarge === true });
  }
  if (step.op === "blur" && raw.sigma >= SIGMA_STEP && raw.sigma <= maxSigma()) step.sigma = Number(raw.sigma);
  return step;
}

const withKey = (step) => ({ ...step, key: nextKey++ });

function stepPayload({ key, ...step }) {
  if (step.op !== "resize") return step;
  const { width, height, ...rest } = step;
  return { ...rest, ...(width ? { width } : {}), ...(height ? { height } : {}) };
}

/** The steps as the API's `operations` JSON list expects them. */
export const operationsPayload = () => pipeline.map(stepPayload);

/** The chosen output format, "" for the input's own. */
export const selectedFormat = () => $("#format").value;

/** "Resize to 800 px wide → Grayscale → WebP": a pipeline in a few words. */
export function describeOperations(operations, format) {
  const words = (operations ?? []).map((step) => {
    if (step?.op === "resize") {
      const box = step.width && step.height ? `${step.width} × ${step.height}` : step.width ? `${step.width} px wide` : `${step.height} px high`;
      return `Resize ${box}${step.fit && step.fit !== "inside" ? ` (${step.fit})` : ""}`;
    }
    if (step?.op === "blur") return `Blur ${Number(step.sigma ?? 2).toFixed(1)}`;
    return STEP_TITLES[step?.op] ?? "?";
  });
  if (format) words.push(String(format).toUpperCase());
  return words.join(" → ");
}

function load() {
  const saved = readStored(STORAGE_KEY, null);
  const steps = Array.isArray(saved?.pipeline) ? saved.pipeline.map(sanitizeStep).filter(Boolean) : [];
  pipeline = (steps.length ? steps.slice(0, maxSteps()) : [STEP_DEFAULTS.resize()]).map(withKey);
  $("#format").value = FORMATS.includes(saved?.format) ? saved.format : "";
}

function save() {
  writeStored(STORAGE_KEY, { pipeline: operationsPayload(), format: selectedFormat() });
}

function render(focusSelectors = []) {
  $("#pipeline").replaceChildren(...pipeline.map(renderStep));
  $("#pipeline-empty").hidden = pipeline.length > 0;
  for (const button of $$(".add-step")) button.disabled = pipeline.length >= maxSteps();
  $("#pipeline-limit").textContent = pipeline.length >= maxSteps() ? `At most ${maxSteps()} steps.` : "";
  const target = focusSelectors.map((selector) => $(selector)).find((node) => node && !node.disabled);
  target?.focus();
}

function renderStep(step, index) {
  const name = `step ${index + 1} (${step.op})`;
  const button = (action, text, label, disabled = false) =>
    el("button", { type: "button", class: "icon-button", "data-action": action, "aria-label": label, title: label, disabled, text });
  const actions = el("div", { class: "step-actions" },
    button("up", "↑", `Move ${name} up`, index === 0),
    button("down", "↓", `Move ${name} down`, index === pipeline.length - 1),
    button("remove", "✕", `Remove ${name}`));
  const head = el("div", { class: "step-head" },
    el("span", { class: "step-number", "aria-hidden": "true", text: index + 1 }),
    el("h3", { class: "step-title", text: STEP_TITLES[step.op] }), actions);
  return el("li", { class: "step", "data-key": step.key, "data-op": step.op }, head, renderFields(step));
}

function field(id, labelText, control, extraClass = "") {
  return el("div", { class: `field ${extraClass}`.trim() }, el("label", { for: id, text: labelText }), control);
}

function renderFields(step) {
  const id = (name) => `step-${step.key}-${name}`;
  if (step.op === "grayscale") return el("p", { class: "step-note", text: "Shades of grey; transparency is kept." });
  if (step.op === "blur") {
    const range = el("input", { type: "range", id: id("sigma"), min: SIGMA_STEP, max: maxSigma(), step: SIGMA_STEP, value: step.sigma, "data-field": "sigma" });
    const output = el("output", { class: "range-value", for: id("sigma"), text: step.sigma.toFixed(1) });
    return el("div", { class: "fields" }, field(id("sigma"), "Strength (sigma)", el("div", { class: "range-row" }, range, output), "field-wide"));
  }
  const side = (name) => el("input", {
    type: "number", id: id(name), min: 1, max: currentLimits().max_dimension, step: 1, inputmode: "numeric",
    placeholder: "auto", value: step[name] ?? "", "data-field": name,
  });
  const fit = el("select", { id: id("fit"), "data-field": "fit" },
    ...FITS.map(([value, text]) => el("option", { value, selected: value === step.fit, text })));
  const enlarge = el("label", { class: "check" },
    el("input", { type: "checkbox", id: id("enlarge"), "data-field": "enlarge", checked: step.enlarge }),
    " Allow enlarging");
  return el("div", { class: "fields fields-resize" },
    field(id("width"), "Width (px)", side("width")),
    field(id("height"), "Height (px)", side("height")),
    field(id("fit"), "Fit", fit, "field-wide"),
    el("div", { class: "field field-check field-wide" }, enlarge));
}

const stepIndexFor = (node) => pipeline.findIndex((step) => String(step.key) === node.closest(".step")?.dataset.key);

function onInput(event) {
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
  save();
}

function onAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const index = stepIndexFor(button);
  const step = pipeline[index];
  const action = button.dataset.action;
  if (action === "remove") {
    pipeline.splice(index, 1);
    const next = pipeline[Math.min(index, pipeline.length - 1)];
    render(next ? [`[data-key="${next.key}"] [data-action="remove"]`] : ["#add-resize"]);
  } else {
    const to = action === "up" ? index - 1 : index + 1;
    if (to < 0 || to >= pipeline.length) return;
    [pipeline[index], pipeline[to]] = [pipeline[to], pipeline[index]];
    const other = action === "up" ? "down" : "up";
    render([`[data-key="${step.key}"] [data-action="${action}"]`, `[data-key="${step.key}"] [data-action="${other}"]`]);
  }
  save();
}

function addStep(op) {
  if (pipeline.length >= maxSteps()) return;
  const step = withKey(STEP_DEFAULTS[op]());
  pipeline.push(step);
  render([`[data-key="${step.key}"] input`, `[data-key="${step.key}"] [data-action="remove"]`]);
  save();
}

/** What stops the pipeline from being sent, in words (and focus on the culprit); "" if nothing. */
export function pipelineProblem() {
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

export function initPipeline() {
  load();
  render();
  $("#pipeline").addEventListener("input", onInput);
  $("#pipeline").addEventListener("change", onInput);
  $("#pipeline").addEventListener("click", onAction);
  for (const button of $$(".add-step")) button.addEventListener("click", () => addStep(button.dataset.op));
  $("#format").addEventListener("change", save);
}
