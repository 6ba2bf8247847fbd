"use strict";
// Shared helpers: decoding the embedded arrays, colours, drawing a map, building DOM.

const PAGE = JSON.parse(document.getElementById("page-data").textContent);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// base64 -> typed array of the given dtype ("uint8", "float32", "float64"); the
// embedded bytes are little-endian, as are the typed arrays of every browser we know.
function decode(text, dtype) {
  if (!LITTLE_ENDIAN) throw new Error("explore page: a big-endian browser cannot read the embedded arrays");
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  if (dtype === "uint8") return bytes;
  if (dtype === "float32") return new Float32Array(bytes.buffer);
  if (dtype === "float64") return new Float64Array(bytes.buffer);
  throw new Error("explore page: unknown dtype " + dtype);
}

// Create an element: el("td", {class: "x", "data-value": 1}, ["text", child]).
function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

// The precision every value is printed with; data-value attributes keep the full value.
const DIGITS = 4;
function fmt(value) { return Number(value).toFixed(DIGITS); }

// Diverging colour for a value in [lo, hi]: blue below zero, white at zero, red above
// (CNN Explainer's colours); with lo >= 0 (after ReLU) white to red.
function divergingColour(value, lo, hi) {
  const extent = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
  const t = Math.max(-1, Math.min(1, value / extent));
  if (t >= 0) return [255, Math.round(255 * (1 - t * 0.85)), Math.round(255 * (1 - t))];
  return [Math.round(255 * (1 + t)), Math.round(255 * (1 + t * 0.55)), 255];
}

// The smallest and largest of values[start .. start + count).
function range(values, start, count) {
  let lo = Infinity, hi = -Infinity;
  for (let i = start; i < start + count; i++) {
    if (values[i] < lo) lo = values[i];
    if (values[i] > hi) hi = values[i];
  }
  return [lo, hi];
}

// Draw channel `channel` of a (C, H, W) array into a canvas, `cell` screen pixels per value.
function drawMap(canvas, values, channel, h, w, cell, lo, hi, colour) {
  canvas.width = w * cell;
  canvas.height = h * cell;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const offset = channel * h * w;
  for (let k = 0; k < h * w; k++) {
    const [r, g, b] = colour(values[offset + k], lo, hi);
    image.data.set([r, g, b, 255], 4 * k);
  }
  // draw at 1:1 on a scratch canvas, then scale up without smoothing
  const scratch = document.createElement("canvas");
  scratch.width = w;
  scratch.height = h;
  scratch.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, 0, 0, w * cell, h * cell);
  return ctx;
}

function greyColour(value, lo, hi) {
  const v = Math.round(255 * (value - lo) / ((hi - lo) || 1));
  return [v, v, v];
}

// Screen pixels per map value, so that a map is about `target` pixels wide.
function cellSize(size, target) { return Math.max(1, Math.floor(target / size)); }

// A number table (rows x cols) whose cells carry their exact value in data-value.
function numberTable(values, rows, cols, className, mark) {
  const table = el("table", {class: "numbers " + (className || "")});
  for (let r = 0; r < rows; r++) {
    const tr = el("tr");
    for (let c = 0; c < cols; c++) {
      const v = values[r * cols + c];
      const td = el("td", {"data-value": String(v), text: fmt(v)});
      if (mark && mark(r, c)) td.classList.add("winner");
      tr.append(td);
    }
    table.append(tr);
  }
  return table;
}
