"use strict";
// The elementary views (CNN Explainer's detail views): one output value of a
// convolution (patch x kernel, per-channel sums, bias), a ReLU, or a max pool,
// recomputed here from the embedded input maps and weights and shown beside the
// value numbacnn's kernel computed.

function selectMap(layerIndex, channel) {
  stopAnimation();
  STATE.layer = layerIndex;
  STATE.channel = channel;
  STATE.pixel = null;
  for (const c of document.querySelectorAll(".maps canvas.selected")) c.classList.remove("selected");
  const chosen = document.querySelector(`.maps canvas[data-layer="${layerIndex}"][data-channel="${channel}"]`);
  if (chosen) chosen.classList.add("selected");
  renderDetail();
}

function selectPixel(i, j) {
  STATE.pixel = [i, j];
  renderDetail();
}

function stopAnimation() {
  if (STATE.animation !== null) clearInterval(STATE.animation);
  STATE.animation = null;
}

// Slide over every output pixel of the selected map, one step every 400 ms.
function animate() {
  if (STATE.animation !== null) { stopAnimation(); renderDetail(); return; }
  const [, h, w] = PAGE.layers[STATE.layer].output_shape;
  let step = STATE.pixel ? STATE.pixel[0] * w + STATE.pixel[1] : -1;
  STATE.animation = setInterval(() => {
    step = (step + 1) % (h * w);
    STATE.pixel = [Math.floor(step / w), step % w];
    renderDetail();
  }, 400);
}

const DETAIL_CELL_TARGET = 300;

function renderDetail() {
  const hint = document.getElementById("detail-hint");
  const mapBox = document.getElementById("detail-map");
  const body = document.getElementById("detail-body");
  mapBox.textContent = "";
  body.textContent = "";
  if (STATE.layer === null) return;
  const layer = PAGE.layers[STATE.layer];
  const [, h, w] = layer.output_shape;
  hint.textContent = layer.explainer_name + " (" + layer.kind + "), map " + STATE.channel +
    ": click a pixel of the map below" + (layer.kind === "Conv2d" ? ", or animate the kernel's slide." : ".");
  const values = mapsOf(STATE.image, layer.index);
  const [lo, hi] = range(values, 0, values.length);
  const cell = cellSize(Math.max(h, w), DETAIL_CELL_TARGET);
  const canvas = el("canvas", {id: "detail-canvas", "data-cell": String(cell)});
  const ctx = drawMap(canvas, values, STATE.channel, h, w, cell, lo, hi, divergingColour);
  if (STATE.pixel) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 2;
    ctx.strokeRect(STATE.pixel[1] * cell + 1, STATE.pixel[0] * cell + 1, cell - 2, cell - 2);
  }
  canvas.addEventListener("click", (event) => {
    const rect = canvas.getBoundingClientRect();
    const j = Math.floor((event.clientX - rect.left) * canvas.width / rect.width / cell);
    const i = Math.floor((event.clientY - rect.top) * canvas.height / rect.height / cell);
    if (i >= 0 && i < h && j >= 0 && j < w) { stopAnimation(); selectPixel(i, j); }
  });
  mapBox.append(canvas);
  if (layer.kind === "Conv2d")
    mapBox.append(el("button", {id: "animate", onclick: animate,
                                text: STATE.animation === null ? "animate the slide" : "stop"}));
  if (!STATE.pixel) return;
  const [i, j] = STATE.pixel;
  const value = values[(STATE.channel * h + i) * w + j];
  if (layer.kind === "Conv2d") body.append(convolutionView(layer, i, j, value));
  else if (layer.kind === "ReLU") body.append(reluView(layer, i, j, value));
  else if (layer.kind === "MaxPool2d") body.append(poolView(layer, i, j, value));
  else if (layer.kind === "BatchNorm2d" && layer.bn_scale) body.append(batchNormView(layer, i, j, value));
}

// Eval-mode batch norm: the running statistics and the affine weights folded into
// x * scale + shift per channel, as numbacnn's kernel applies them.
function batchNormView(layer, i, j, value) {
  const [, h, w] = layerShape(layer.input_index);
  const x = mapsOf(STATE.image, layer.input_index)[(STATE.channel * h + i) * w + j];
  const scale = decode(layer.bn_scale, "float64")[STATE.channel], shift = decode(layer.bn_shift, "float64")[STATE.channel];
  return el("div", {id: "batch-norm-view", class: "equation"}, [
    "batch norm (eval): x * scale + shift, scale = weight / sqrt(running var + eps), shift = bias - running mean * scale: ",
    el("span", {id: "bn-input", "data-value": String(x), text: fmt(x)}), " * " + fmt(scale) + " + " + fmt(shift) + " = ",
    el("b", {id: "bn-output", "data-value": String(value), text: fmt(value)})]);
}

// The input position a kernel tap reads, or null in the zero padding.
function tapPosition(layer, i, j, u, v, h, w) {
  const y = i * layer.hyper.stride[0] - layer.hyper.padding[0] + u * layer.hyper.dilation[0];
  const x = j * layer.hyper.stride[1] - layer.hyper.padding[1] + v * layer.hyper.dilation[1];
  return (y < 0 || y >= h || x < 0 || x >= w) ? null : [y, x];
}

function convolutionView(layer, i, j, kernelValue) {
  const [cin, h, w] = layerShape(layer.input_index);
  const [filters, cpg, kh, kw] = layer.weight_shape;
  const weight = decode(layer.weight, PAGE.dtype), bias = decode(layer.bias, PAGE.dtype);
  const f = STATE.channel;
  const group = Math.floor(f / (filters / (cin / cpg)));  // groups = cin / cpg
  const source = mapsOf(STATE.image, layer.input_index);
  const inputName = layer.input_index < 0 ? "input" : PAGE.layers[layer.input_index].explainer_name;
  const box = el("div", {id: "conv-view"});
  box.append(el("p", {text: `${layer.explainer_name}[${f}] at row ${i}, column ${j}: each of the ${cpg} ` +
    `input channels of ${inputName} gives a ${kh}x${kw} patch; patch x kernel elementwise, summed, plus the bias.`}));
  let total = 0;
  const sums = [];
  for (let c = 0; c < cpg; c++) {
    const channel = group * cpg + c;
    const patch = new Float64Array(kh * kw), kernel = new Float64Array(kh * kw), products = new Float64Array(kh * kw);
    let sum = 0;
    for (let u = 0; u < kh; u++)
      for (let v = 0; v < kw; v++) {
        const at = tapPosition(layer, i, j, u, v, h, w);
        const k = u * kw + v;
        patch[k] = at ? source[(channel * h + at[0]) * w + at[1]] : 0;
        kernel[k] = weight[((f * cpg + c) * kh + u) * kw + v];
        products[k] = patch[k] * kernel[k];
        sum += products[k];
      }
    sums.push(sum);
    total += sum;
    // the input map with the kernel's position drawn on it
    const mini = el("canvas");
    const cell = cellSize(Math.max(h, w), 84);
    const [lo, hi] = range(source, channel * h * w, h * w);
    const ctx = drawMap(mini, source, channel, h, w, cell, lo, hi, layer.input_index < 0 ? greyColour : divergingColour);
    const y0 = i * layer.hyper.stride[0] - layer.hyper.padding[0], x0 = j * layer.hyper.stride[1] - layer.hyper.padding[1];
    const spanH = (kh - 1) * layer.hyper.dilation[0] + 1, spanW = (kw - 1) * layer.hyper.dilation[1] + 1;
    ctx.strokeStyle = "#0a0";
    ctx.lineWidth = 2;
    ctx.strokeRect(x0 * cell, y0 * cell, spanW * cell, spanH * cell);
    box.append(el("div", {class: "channel row", "data-channel": String(channel)}, [
      el("div", {}, [el("div", {class: "muted", text: inputName + "[" + channel + "]"}), mini]),
      el("div", {}, [el("div", {class: "muted", text: "patch"}), numberTable(patch, kh, kw, "patch")]),
      el("div", {}, [el("div", {class: "muted", text: "kernel"}), numberTable(kernel, kh, kw, "kernel")]),
      el("div", {}, [el("div", {class: "muted", text: "patch x kernel"}), numberTable(products, kh, kw, "products")]),
      el("div", {class: "equation"}, ["sum = ", el("span", {class: "channel-sum", "data-value": String(sum), text: fmt(sum)})]),
    ]));
  }
  const b = bias[f];
  total += b;
  box.append(el("div", {class: "equation"}, [
    "sum of the " + cpg + " channel sums " + fmt(total - b) + " + bias ",
    el("span", {id: "conv-bias", "data-value": String(b), text: fmt(b)}), " = ",
    el("b", {id: "conv-recomputed", "data-value": String(total), text: fmt(total)}), " (recomputed here);  numbacnn's conv2d kernel: ",
    el("b", {id: "conv-kernel-value", "data-value": String(kernelValue), text: fmt(kernelValue)}),
    fmt(total) === fmt(kernelValue) ? "  (equal)" : "  (differs in the last digit: rounding of float32 sums)"]));
  return box;
}

function reluView(layer, i, j, value) {
  const [, h, w] = layerShape(layer.input_index);
  const x = mapsOf(STATE.image, layer.input_index)[(STATE.channel * h + i) * w + j];
  return el("div", {id: "relu-view", class: "equation"}, [
    "ReLU(x) = max(0, x):  max(0, ", el("span", {id: "relu-input", "data-value": String(x), text: fmt(x)}), ") = ",
    el("b", {id: "relu-output", "data-value": String(value), text: fmt(value)})]);
}

function poolView(layer, i, j, value) {
  const [, h, w] = layerShape(layer.input_index);
  const [kh, kw] = layer.hyper.kernel;
  const source = mapsOf(STATE.image, layer.input_index);
  const window = new Float64Array(kh * kw);
  let best = -Infinity, winner = -1;
  for (let u = 0; u < kh; u++)
    for (let v = 0; v < kw; v++) {
      const at = tapPosition(layer, i, j, u, v, h, w);
      const x = at ? source[(STATE.channel * h + at[0]) * w + at[1]] : -Infinity;
      window[u * kw + v] = x;
      if (x > best) { best = x; winner = u * kw + v; }
    }
  return el("div", {id: "pool-view", class: "row"}, [
    el("div", {}, [el("div", {class: "muted", text: kh + "x" + kw + " window (the winner is marked)"}),
                   numberTable(window, kh, kw, "window", (r, c) => r * kw + c === winner)]),
    el("div", {class: "equation"}, ["max = ", el("b", {id: "pool-output", "data-value": String(value), text: fmt(value)})])]);
}
