"use strict";
// The overview: the input and every layer's maps for the selected image (CNN
// Explainer's main view). Maps the page data does not embed are rebuilt here from
// their input layer's maps with the rule numbacnn.explore.collect.derived_maps
// checked bit for bit before the page was written.

const STATE = {image: 0, scale: "layer", layer: null, channel: 0, pixel: null, animation: null};
const MAP_CACHE = new Map();  // "image:layer" -> typed array (C*H*W)

function layerShape(index) {
  return index < 0 ? PAGE.input_shape : PAGE.layers[index].output_shape;
}

function deriveMaps(layer, source) {
  const [c, oh, ow] = layer.output_shape;
  const out = PAGE.dtype === "float64" ? new Float64Array(c * oh * ow) : new Float32Array(c * oh * ow);
  if (layer.derive === "relu") {
    for (let k = 0; k < out.length; k++) out[k] = source[k] > 0 ? source[k] : 0;
    return out;
  }
  if (layer.derive === "batch_norm") {
    // x * scale + shift in float64 (numbacnn's kernel), rounded to the maps' dtype on store
    const scale = decode(layer.bn_scale, "float64"), shift = decode(layer.bn_shift, "float64");
    for (let ch = 0; ch < c; ch++)
      for (let k = ch * oh * ow; k < (ch + 1) * oh * ow; k++) out[k] = source[k] * scale[ch] + shift[ch];
    return out;
  }
  // max pool: the largest value of each window; padding never wins
  const [, h, w] = layerShape(layer.input_index);
  const [kh, kw] = layer.hyper.kernel, [sh, sw] = layer.hyper.stride, [ph, pw] = layer.hyper.padding;
  for (let ch = 0; ch < c; ch++)
    for (let i = 0; i < oh; i++)
      for (let j = 0; j < ow; j++) {
        let best = -Infinity;
        for (let u = 0; u < kh; u++)
          for (let v = 0; v < kw; v++) {
            const y = i * sh - ph + u, x = j * sw - pw + v;
            if (y < 0 || y >= h || x < 0 || x >= w) continue;
            const value = source[(ch * h + y) * w + x];
            if (value > best) best = value;
          }
        out[(ch * oh + i) * ow + j] = best;
      }
  return out;
}

// The (C, H, W) values of a layer's output (-1: the normalised input) for an image.
function mapsOf(imageIndex, layerIndex) {
  const key = imageIndex + ":" + layerIndex;
  if (MAP_CACHE.has(key)) return MAP_CACHE.get(key);
  const image = PAGE.images[imageIndex];
  let values;
  if (layerIndex < 0) values = decode(image.input, PAGE.dtype);
  else {
    const layer = PAGE.layers[layerIndex];
    values = layer.derive ? deriveMaps(layer, mapsOf(imageIndex, layer.input_index))
                          : decode(image.maps[String(layerIndex)], PAGE.dtype);
  }
  MAP_CACHE.set(key, values);
  return values;
}

function pixelsOf(imageIndex) { return decode(PAGE.images[imageIndex].pixels, "uint8"); }

// An RGB or grey picture of the uint8 (C, H, W) image.
function drawImage(canvas, imageIndex, cell) {
  const [c, h, w] = PAGE.input_shape;
  const pixels = pixelsOf(imageIndex);
  canvas.width = w * cell;
  canvas.height = h * cell;
  const scratch = document.createElement("canvas");
  scratch.width = w;
  scratch.height = h;
  const image = scratch.getContext("2d").createImageData(w, h);
  for (let k = 0; k < h * w; k++) {
    const r = pixels[k], g = c === 3 ? pixels[h * w + k] : r, b = c === 3 ? pixels[2 * h * w + k] : r;
    image.data.set([r, g, b, 255], 4 * k);
  }
  scratch.getContext("2d").putImageData(image, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, 0, 0, w * cell, h * cell);
}

function kernelSourceText(layer) {
  const sources = PAGE.kernel_sources || {};
  const where = layer.kernel_source || sources[layer.name];
  return where ? "kernel: " + where : "";
}

function renderOverview() {
  const root = document.getElementById("layers");
  root.textContent = "";
  const [c, h, w] = PAGE.input_shape;
  const inputCanvas = el("canvas", {class: "input-image"});
  drawImage(inputCanvas, STATE.image, cellSize(w, 96));
  root.append(el("div", {class: "layer", "data-layer": "input"}, [
    el("div", {class: "layer-head"}, [el("b", {text: "input"}), " " + c + "x" + h + "x" + w]),
    el("div", {class: "row"}, [inputCanvas])]));
  for (const layer of PAGE.layers) root.append(renderLayer(layer));
}

function renderLayer(layer) {
  const shape = layer.output_shape;
  const head = el("div", {class: "layer-head"}, [
    el("b", {text: layer.explainer_name}), " " + layer.kind + " " + shape.join("x") + "  (" + layer.name +
    (layer.parameters ? ", " + layer.parameters.toLocaleString("en") + " parameters" : "") + ")",
    el("span", {class: "kernel-source", text: kernelSourceText(layer)})]);
  if (!layer.symmetric) head.append(el("span", {class: "warn", text: "  asymmetric slide"}));
  const box = el("div", {class: "layer", "data-layer": String(layer.index), "data-name": layer.explainer_name},
                 [head]);
  if (!layer.has_maps) {
    if (layer.kind === "Flatten") box.append(el("div", {class: "muted", text: "-> " + shape[0] + " values in a row"}));
    if (layer.kind === "Linear") box.append(probabilityBars(STATE.image));
    return box;
  }
  const [c, h, w] = shape;
  const values = mapsOf(STATE.image, layer.index);
  const [layerLo, layerHi] = range(values, 0, values.length);
  const maps = el("div", {class: "maps row"});
  const cell = cellSize(w, 64);
  for (let ch = 0; ch < c; ch++) {
    const canvas = el("canvas", {"data-layer": String(layer.index), "data-channel": String(ch),
                                 title: layer.explainer_name + " map " + ch});
    const [lo, hi] = STATE.scale === "map" ? range(values, ch * h * w, h * w) : [layerLo, layerHi];
    drawMap(canvas, values, ch, h, w, cell, lo, hi, divergingColour);
    if (STATE.layer === layer.index && STATE.channel === ch) canvas.classList.add("selected");
    canvas.addEventListener("click", () => selectMap(layer.index, ch));
    maps.append(canvas);
  }
  box.append(maps);
  return box;
}

function probabilityBars(imageIndex) {
  const image = PAGE.images[imageIndex];
  const best = image.probabilities.indexOf(Math.max(...image.probabilities));
  const rows = el("div", {class: "probabilities"});
  PAGE.classes.forEach((name, k) => {
    const p = image.probabilities[k];
    rows.append(el("div", {class: "prob-row", "data-class": name}, [
      el("span", {class: "bar", style: "width:" + Math.round(150 * p) + "px"}),
      " " + (100 * p).toFixed(1) + "% " + name + (k === best ? "  <- predicted" : "")]));
  });
  return rows;
}
