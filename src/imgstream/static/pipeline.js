// The operation pipeline builder: steps mirroring the API's `operations` list, plus the
// output options; add, remove, reorder; remembered in localStorage between visits.

import { $, $$, el, readStored, writeStored } from "./dom.js";
import { currentLimits, isLossy } from "./limits.js";

const STORAGE_KEY = "imgstream.settings.v1";
const SIGMA_STEP = 0.5;
const maxSteps = () => currentLimits().max_steps;
const maxSigma = () => currentLimits().max_sigma;
const maxSide = () => currentLimits().max_dimension;
const FITS = [
  ["inside", "Inside (keep aspect)"],
  ["cover", "Cover (crop to fill)"],
  ["fill", "Fill (stretch)"],
  ["contain", "Contain (fit and pad)"],
];
const GRAVITIES = [
  ["centre", "Centre"], ["north", "Top"], ["south", "Bottom"], ["west", "Left"], ["east", "Right"],
  ["smart", "Smart (most detail)"],
];
const DIRECTIONS = [["horizontal", "Horizontal (mirror)"], ["vertical", "Vertical (upside down)"]];
const FORMATS = ["", "jpeg", "png", "webp", "avif", "gif"]; // TIFF too is accepted, but browsers cannot show it
const STEPS = {
  resize: { title: "Resize", defaults: () => ({ op: "resize", width: 800, height: null, fit: "inside", enlarge: false, gravity: "centre", background: "#ffffff" }) },
  crop: { title: "Crop", defaults: () => ({ op: "crop", left: 0, top: 0, width: 400, height: 300 }) },
  rotate: { title: "Rotate", defaults: () => ({ op: "rotate", angle: 90, background: "" }) },
  flip: { title: "Flip", defaults: () => ({ op: "flip", direction: "horizontal" }) },
  grayscale: { title: "Grayscale", defaults: () => ({ op: "grayscale" }) },
  blur: { title: "Blur", defaults: () => ({ op: "blur", sigma: 2 }) },
  sharpen: { title: "Sharpen", defaults: () => ({ op: "sharpen", sigma: 1 }) },
  pixelate: { title: "Pixelate", defaults: () => ({ op: "pixelate", size: 10 }) },
  adjust: { title: "Adjust colour", defaults: () => ({ op: "adjust", brightness: 1, contrast: 1, saturation: 1 }) },
  trim: { title: "Trim borders", defaults: () => ({ op: "trim", threshold: 10 }) },
};
const CHOICES = { fit: FITS, gravity: GRAVITIES, direction: DIRECTIONS };
const NUMBERS = {
  width: { min: () => 1, max: maxSide, integer: true },
  height: { min: () => 1, max: maxSide, integer: true },
  left: { min: () => 0, max: maxSide, integer: true },
  top: { min: () => 0, max: maxSide, integer: true },
  size: { min: () => 1, max: maxSide, integer: true },
  angle: { min: () => -360, max: () => 360 },
  sigma: { min: () => SIGMA_STEP, max: maxSigma },
  brightness: { min: () => 0, max: () => 3 },
  contrast: { min: () => 0, max: () => 3 },
  saturation: { min: () => 0, max: () => 3 },
  threshold: { min: () => 0, max: () => 255 },
};
const COLOUR = /^#[0-9a-f]{6}$/i;

let pipeline = [];
let nextKey = 1;

/** A number within the field's bounds, or null. */
function toNumber(name, value) {
  const bounds = NUMBERS[name];
  const number = Number(value);
  if (value === "" || value === null || !Number.isFinite(number)) return null;
  if (bounds.integer && !Number.isInteger(number)) return null;
  return number >= bounds.min() && number <= (bounds.max() ?? Infinity) ? number : null;
}

// Whatever localStorage holds is rebuilt field by field from the defaults, never trusted as is.
function sanitizeStep(raw) {
  if (!Object.hasOwn(STEPS, raw?.op)) return null;
  const step = STEPS[raw.op].defaults();
  for (const name of Object.keys(step)) {
    if (name === "op" || !Object.hasOwn(raw, name)) continue;
    const value = raw[name];
    if (Object.hasOwn(NUMBERS, name)) {
      const number = toNumber(name, value);
      if (number !== null || step[name] === null) step[name] = number;
    } else if (Object.hasOwn(CHOICES, name)) {
      if (CHOICES[name].some(([choice]) => choice === value)) step[name] = value;
    } else if (name === "background") {
      if (COLOUR.test(value ?? "")) step[name] = value.toLowerCase();
    } else if (typeof value === typeof step[name]) step[name] = value;
  }
  return step;
}

const withKey = (step) => ({ ...step, key: nextKey++ });

function stepPayload({ key, ...step }) {
  if (step.op === "resize") {
    const { width, height, gravity, background, ...rest } = step;
    return {
      ...rest, ...(width ? { width } : {}), ...(height ? { height } : {}),
      ...(step.fit === "cover" && gravity !== "centre" ? { gravity } : {}),
      ...(step.fit === "contain" ? { background } : {}),
    };
  }
  if (step.op === "rotate") {
    const { background, ...rest } = step;
    return background ? step : rest;
  }
  return step;
}

/** The steps as the API's `operations` JSON list expects them. */
export const operationsPayload = () => pipeline.map(stepPayload);

/** The chosen output format, "" for the input's own. */
export const selectedFormat = () => $("#format").value;

/** The output options as form fields: format, quality, max_bytes, strip ("" when default). */
export function outputOptions() {
  const format = selectedFormat();
  const lossy = format === "" || isLossy(format);
  const quality = lossy ? $("#quality").value.trim() : "";
  const kilobytes = lossy ? Number($("#max-kb").value) : 0;
  return {
    format,
    quality,
    max_bytes: kilobytes > 0 ? String(Math.round(kilobytes * 1000)) : "",
    strip: $("#strip").checked ? "" : "false",
  };
}

const number = (value, digits = 1) => Number(value ?? 0).toFixed(digits);

/** "Resize to 800 px wide → Grayscale → WebP": a pipeline in a few words. */
export function describeOperations(operations, format) {
  const words = (operations ?? []).map((step) => {
    switch (step?.op) {
      case "resize": {
        const box = step.width && step.height ? `${step.width} × ${step.height}` : step.width ? `${step.width} px wide` : `${step.height} px high`;
        return `Resize ${box}${step.fit && step.fit !== "inside" ? ` (${step.fit})` : ""}`;
      }
      case "blur": return `Blur ${number(step.sigma ?? 2)}`;
      case "sharpen": return `Sharpen ${number(step.sigma ?? 1)}`;
      case "crop": return `Crop ${step.width} × ${step.height}`;
      case "rotate": return `Rotate ${step.angle}°`;
      case "flip": return `Flip ${step.direction}`;
      case "pixelate": return `Pixelate ${step.size ?? 10} px`;
      default: return STEPS[step?.op]?.title ?? "?";
    }
  });
  if (format) words.push(String(format).toUpperCase());
  return words.join(" → ");
}

function load() {
  const saved = readStored(STORAGE_KEY, null);
  const steps = Array.isArray(saved?.pipeline) ? saved.pipeline.map(sanitizeStep).filter(Boolean) : [];
  pipeline = (steps.length ? steps.slice(0, maxSteps()) : [STEPS.resize.defaults()]).map(withKey);
  $("#format").value = FORMATS.includes(saved?.format) ? saved.format : "";
  const quality = Number(saved?.quality);
  $("#quality").value = Number.isInteger(quality) && quality >= 1 && quality <= 100 ? String(quality) : "";
  const kilobytes = Number(saved?.maxKb);
  $("#max-kb").value = Number.isFinite(kilobytes) && kilobytes > 0 ? String(kilobytes) : "";
  $("#strip").checked = saved?.strip !== false;
  syncOutput();
}

function save() {
  writeStored(STORAGE_KEY, {
    pipeline: operationsPayload(), format: selectedFormat(), quality: $("#quality").value,
    maxKb: $("#max-kb").value, strip: $("#strip").checked,
  });
}

// Quality and a size budget mean nothing to a lossless format.
function syncOutput() {
  const format = selectedFormat();
  const lossless = format !== "" && !isLossy(format);
  for (const input of [$("#quality"), $("#max-kb")]) input.disabled = lossless;
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
    el("h3", { class: "step-title", text: STEPS[step.op].title }), actions);
  return el("li", { class: "step", "data-key": step.key, "data-op": step.op }, head, renderFields(step));
}

function field(id, labelText, control, extraClass = "") {
  return el("div", { class: `field ${extraClass}`.trim() }, el("label", { for: id, text: labelText }), control);
}

function renderFields(step) {
  const id = (name) => `step-${step.key}-${name}`;
  const numberInput = (name, { placeholder = "", step: increment = 1 } = {}) => {
    const bounds = NUMBERS[name];
    return el("input", {
      type: "number", id: id(name), min: bounds.min(), max: bounds.max(), step: increment,
      inputmode: bounds.integer ? "numeric" : "decimal", placeholder, value: step[name] ?? "", "data-field": name,
    });
  };
  const range = (name, label, increment, digits = 1) => {
    const bounds = NUMBERS[name];
    const input = el("input", { type: "range", id: id(name), min: bounds.min(), max: bounds.max(), step: increment, value: step[name], "data-field": name });
    const output = el("output", { class: "range-value", for: id(name), "data-digits": digits, text: number(step[name], digits) });
    return field(id(name), label, el("div", { class: "range-row" }, input, output), "field-wide");
  };
  const select = (name, label) => field(id(name), label, el("select", { id: id(name), "data-field": name },
    ...CHOICES[name].map(([value, text]) => el("option", { value, selected: value === step[name], text }))), "field-wide");
  const colour = (name, label) => field(id(name), label,
    el("input", { type: "color", id: id(name), value: step[name] || "#ffffff", "data-field": name }));
  const fields = (...children) => el("div", { class: "fields" }, ...children);
  switch (step.op) {
    case "grayscale": return el("p", { class: "step-note", text: "Shades of grey; transparency is kept." });
    case "blur": return fields(range("sigma", "Strength (sigma)", SIGMA_STEP));
    case "sharpen": return fields(range("sigma", "Sharpness (sigma)", SIGMA_STEP));
    case "pixelate": return fields(field(id("size"), "Block size (px)", numberInput("size")));
    case "trim": return fields(range("threshold", "Tolerance", 1, 0));
    case "flip": return fields(select("direction", "Direction"));
    case "adjust": return fields(
      range("brightness", "Brightness", 0.05, 2), range("contrast", "Contrast", 0.05, 2),
      range("saturation", "Saturation (0: grey)", 0.05, 2));
    case "rotate": return fields(
      field(id("angle"), "Angle (° clockwise)", numberInput("angle", { step: "any" })),
      colour("background", "Corner colour"));
    case "crop": return el("div", { class: "fields fields-resize" },
      field(id("left"), "Left", numberInput("left")), field(id("top"), "Top", numberInput("top")),
      field(id("width"), "Box width", numberInput("width")), field(id("height"), "Box height", numberInput("height")));
    default: break;
  }
  const enlarge = el("label", { class: "check" },
    el("input", { type: "checkbox", id: id("enlarge"), "data-field": "enlarge", checked: step.enlarge }),
    " Allow enlarging");
  return el("div", { class: "fields fields-resize" },
    field(id("width"), "Width (px)", numberInput("width", { placeholder: "auto" })),
    field(id("height"), "Height (px)", numberInput("height", { placeholder: "auto" })),
    select("fit", "Fit"),
    ...(step.fit === "cover" ? [select("gravity", "Keep")] : []),
    ...(step.fit === "contain" ? [colour("background", "Padding colour")] : []),
    el("div", { class: "field field-check field-wide" }, enlarge));
}

const stepIndexFor = (node) => pipeline.findIndex((step) => String(step.key) === node.closest(".step")?.dataset.key);

function onInput(event) {
  const input = event.target;
  const step = pipeline[stepIndexFor(input)];
  const name = input.dataset.field;
  if (!step || !name) return;
  if (input.type === "checkbox") step[name] = input.checked;
  else if (Object.hasOwn(CHOICES, name) || name === "background") step[name] = input.value;
  else step[name] = toNumber(name, input.value);
  if (input.type === "range") {
    const output = $(`output[for="${input.id}"]`);
    output.textContent = number(step[name], Number(output.dataset.digits));
  }
  if (name === "fit" && event.type === "change") render([`#${input.id}`]); // gravity or padding appear
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
  const step = withKey(STEPS[op].defaults());
  pipeline.push(step);
  render([`[data-key="${step.key}"] input`, `[data-key="${step.key}"] select`, `[data-key="${step.key}"] [data-action="remove"]`]);
  save();
}

/** What stops the pipeline from being sent, in words (and focus on the culprit); "" if nothing. */
export function pipelineProblem() {
  if (!pipeline.length) return "Add at least one step to the pipeline.";
  const invalid = $("#pipeline input:invalid") ?? $("#output-options input:invalid");
  if (invalid) {
    invalid.focus();
    const label = $(`label[for="${invalid.id}"]`)?.textContent ?? "A value";
    const where = invalid.closest(".step") ? `Step ${stepIndexFor(invalid) + 1}, ` : "";
    return `${where}${label}: ${invalid.validationMessage}`;
  }
  const needs = (index, text) => {
    $(`[data-key="${pipeline[index].key}"] input`).focus();
    return `Step ${index + 1} (${pipeline[index].op}) needs ${text}.`;
  };
  const resize = pipeline.findIndex((step) => step.op === "resize" && !step.width && !step.height);
  if (resize >= 0) return needs(resize, "a width, a height or both");
  const crop = pipeline.findIndex((step) => step.op === "crop" && (!step.width || !step.height));
  if (crop >= 0) return needs(crop, "a box width and height");
  const rotate = pipeline.findIndex((step) => step.op === "rotate" && step.angle === null);
  if (rotate >= 0) return needs(rotate, "an angle");
  return "";
}

export function initPipeline() {
  load();
  render();
  $("#pipeline").addEventListener("input", onInput);
  $("#pipeline").addEventListener("change", onInput);
  $("#pipeline").addEventListener("click", onAction);
  for (const button of $$(".add-step")) button.addEventListener("click", () => addStep(button.dataset.op));
  $("#format").addEventListener("change", () => { syncOutput(); save(); });
  for (const input of [$("#quality"), $("#max-kb"), $("#strip")]) input.addEventListener("change", save);
}
