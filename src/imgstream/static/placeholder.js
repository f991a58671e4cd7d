// A finished job's placeholder, painted at once while its result downloads: the dominant
// colour behind a BlurHash decoded onto a small canvas (https://blurha.sh, the reference
// decoder's arithmetic), stretched by CSS to the result's aspect ratio.

import { el } from "./dom.js";

const BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
const SIDE = 32;

const decode83 = (text) => [...text].reduce((value, char) => value * 83 + BASE83.indexOf(char), 0);
const toLinear = (value) => {
  const v = value / 255;
  return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
};
const toSrgb = (value) => {
  const v = Math.max(0, Math.min(1, value));
  return Math.round(v <= 0.0031308 ? v * 12.92 * 255 : (1.055 * v ** (1 / 2.4) - 0.055) * 255);
};
const signedSquare = (value) => Math.sign(value) * value * value;

/** RGBA pixels of a BlurHash at `width` x `height`, or null for text that is not one. */
export function decodeBlurhash(hash, width, height) {
  if (typeof hash !== "string" || hash.length < 6 || [...hash].some((c) => !BASE83.includes(c))) return null;
  const size = decode83(hash[0]);
  const across = (size % 9) + 1;
  const down = Math.floor(size / 9) + 1;
  if (hash.length !== 4 + 2 * across * down) return null;
  const maximum = (decode83(hash[1]) + 1) / 166;
  const dc = decode83(hash.slice(2, 6));
  const colours = [[toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]];
  for (let index = 1; index < across * down; index += 1) {
    const value = decode83(hash.slice(4 + index * 2, 6 + index * 2));
    const quantised = [Math.floor(value / 361), Math.floor(value / 19) % 19, value % 19];
    colours.push(quantised.map((q) => signedSquare((q - 9) / 9) * maximum));
  }
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const sum = [0, 0, 0];
      for (let j = 0; j < down; j += 1) {
        for (let i = 0; i < across; i += 1) {
          const basis = Math.cos((Math.PI * x * i) / width) * Math.cos((Math.PI * y * j) / height);
          const colour = colours[i + j * across];
          for (let band = 0; band < 3; band += 1) sum[band] += colour[band] * basis;
        }
      }
      const at = 4 * (x + y * width);
      pixels.set([toSrgb(sum[0]), toSrgb(sum[1]), toSrgb(sum[2]), 255], at);
    }
  }
  return pixels;
}

/** A canvas with the job's placeholder at the result's aspect ratio, or null if it has none. */
export function placeholderCanvas(result, label) {
  const placeholder = result?.placeholder;
  if (!placeholder || !result.width || !result.height) return null;
  const landscape = result.width >= result.height;
  const width = landscape ? SIDE : Math.max(1, Math.round((SIDE * result.width) / result.height));
  const height = landscape ? Math.max(1, Math.round((SIDE * result.height) / result.width)) : SIDE;
  const canvas = el("canvas", { class: "job-placeholder", width, height, role: "img", "aria-label": label });
  if (/^#[0-9a-f]{6}$/i.test(placeholder.dominant_color ?? "")) canvas.style.backgroundColor = placeholder.dominant_color;
  const pixels = decodeBlurhash(placeholder.blurhash, width, height);
  const context = pixels && canvas.getContext("2d");
  if (context) context.putImageData(new ImageData(pixels, width, height), 0, 0);
  return canvas;
}
