"use strict";
// The hyperparameter view: input size, padding, kernel size and stride chosen freely,
// the kernel's slide animated, the output size, and the symmetric-slide verdict with
// its suggested fixes. explainConv is a line-by-line port of numbacnn.shapes.explain_conv
// (and its _axis_fixes), the one rule `numbacnn explain conv` prints; the tests run both
// on a grid of cases and require equal answers.

const DIVISOR_SEARCH = 100000;  // shapes._DIVISOR_SEARCH
const MAX_DRAWN_CELLS = 64;     // larger padded inputs get the arithmetic, not the picture

function floorDiv(a, b) { return Math.floor(a / b); }
function mod(a, b) { return ((a % b) + b) % b; }

function axisFixes(inSize, kernel, stride, padding, dilation, search = 4, count = 3) {
  const span = dilation * (kernel - 1) + 1;
  // paddings: 2p = span - in (mod stride), p >= ceil((span - in) / 2) so the kernel fits
  const lowest = Math.max(0, -floorDiv(inSize - span, 2));
  const highest = padding + search * stride;
  const residue = mod(span - inSize, stride);
  let period, first;
  if (stride % 2) { period = stride; first = mod(residue * ((stride + 1) / 2), stride); }
  else { period = stride / 2; first = residue % 2 === 0 ? residue / 2 : null; }
  let paddings = [];
  if (first !== null && lowest <= highest) {
    const centre = Math.min(Math.max(padding, lowest), highest);
    const k = floorDiv(centre - first, period);
    for (let j = k - count - 1; j < k + count + 2; j++) {
      const p = first + j * period;
      if (lowest <= p && p <= highest) paddings.push(p);
    }
    paddings.sort((a, b) => (Math.abs(a - padding) - Math.abs(b - padding)) || (a - b));
  }
  // strides: divisors of the covered length (every stride when it is 0)
  const length = inSize + 2 * padding - span;
  const top = Math.max(stride + search, 2 * stride);
  const strides = new Set();
  if (length === 0) {
    for (let offset = 0; offset <= count; offset++) { strides.add(stride - offset); strides.add(stride + offset); }
  } else if (length > 0) {
    const root = Math.min(Math.floor(Math.sqrt(length)), DIVISOR_SEARCH);
    for (let d = 1; d <= root; d++) if (length % d === 0) { strides.add(d); strides.add(length / d); }
    const near = DIVISOR_SEARCH / 100;
    for (let s = stride - near; s <= stride + near; s++) if (s >= 1 && length % s === 0) strides.add(s);
  }
  const ordered = [...strides].filter((s) => s >= 1 && s <= top)
    .sort((a, b) => (Math.abs(a - stride) - Math.abs(b - stride)) || (b - a));
  return [paddings.slice(0, count), ordered.slice(0, count)];
}

// input, kernel, stride, padding, dilation: [h, w] pairs. Returns the fields of
// numbacnn.shapes.ConvExplanation that the view shows.
function explainConv(input, kernel, stride, padding, dilation = [1, 1]) {
  const axes = [0, 1].map((a) => [input[a], kernel[a], stride[a], padding[a], dilation[a]]);
  const outputs = axes.map(([i, k, s, p, d]) => floorDiv(i + 2 * p - (d * (k - 1) + 1), s) + 1);
  const uncovered = axes.map(([i, k, s, p, d]) => {
    const span = i + 2 * p - (d * (k - 1) + 1);
    return span >= 0 ? span % s : 0;
  });
  const fits = outputs.every((o) => o >= 1);
  const symmetric = fits && uncovered[0] === 0 && uncovered[1] === 0;
  const fixes = axes.map((axis) => axisFixes(...axis));
  const zip = (a, b) => a.slice(0, Math.min(a.length, b.length)).map((x, n) => [x, b[n]]);
  let paddings = zip(fixes[0][0], fixes[1][0]).slice(0, 3);
  if (!paddings.length && fixes[0][0].length && fixes[1][0].length) paddings = [[fixes[0][0][0], fixes[1][0][0]]];
  const strides = zip(fixes[0][1], fixes[1][1]).slice(0, 3);
  return {output_size: outputs, symmetric, uncovered, suggested_paddings: paddings, suggested_strides: strides};
}

const HYPER = {input: 7, padding: 0, kernel: 3, stride: 2, position: 0, timer: null};

function pairText(p) { return p[0] === p[1] ? String(p[0]) : p[0] + "," + p[1]; }

function renderHyperForm() {
  const form = document.getElementById("hyper-form");
  for (const [key, minimum] of [["input", 1], ["padding", 0], ["kernel", 1], ["stride", 1]]) {
    const input = el("input", {type: "number", id: "hyper-" + key, min: String(minimum), value: String(HYPER[key])});
    input.addEventListener("input", () => {
      const value = Number(input.value);
      if (Number.isInteger(value) && value >= minimum) { HYPER[key] = value; HYPER.position = 0; renderHyper(); }
    });
    form.append(el("label", {}, [key + " ", input]));
  }
  form.append(el("button", {id: "hyper-animate", text: "animate", onclick: () => {
    if (HYPER.timer !== null) { clearInterval(HYPER.timer); HYPER.timer = null; return; }
    HYPER.timer = setInterval(() => { HYPER.position += 1; drawSlide(); }, 500);
  }}));
}

function renderHyper() {
  const {input, padding, kernel, stride} = HYPER;
  const e = explainConv([input, input], [kernel, kernel], [stride, stride], [padding, padding]);
  const text = document.getElementById("hyper-text");
  text.textContent = "";
  const covered = input + 2 * padding - kernel;
  text.append(el("p", {class: "equation", id: "hyper-arithmetic",
    text: `output size = (input + 2*padding - kernel) / stride + 1 = (${input} + 2*${padding} - ${kernel}) / ${stride} + 1 = ` +
          `${e.output_size[0]}` + (covered >= 0 && covered % stride ? "  (floored)" : "")}));
  let verdict;
  if (e.output_size[0] < 1) verdict = `IMPOSSIBLE: the kernel ${kernel}x${kernel} is larger than the padded input ${input + 2 * padding}x${input + 2 * padding}.`;
  else if (e.symmetric) verdict = `symmetric: the ${e.output_size[0]}x${e.output_size[1]} kernel positions cover every row and column of the padded input.`;
  else {
    const lost = e.uncovered[0], inputLost = lost - Math.min(lost, padding);
    verdict = `NOT symmetric: the last ${lost} row(s) and column(s) of the padded input are never covered` +
      (inputLost ? ` (${inputLost} of them input pixels, silently dropped).` : " (zero padding only, but the borders are treated differently).");
  }
  text.append(el("p", {class: "verdict", id: "hyper-verdict", "data-symmetric": String(e.symmetric),
                       "data-output": String(e.output_size[0]), text: "verdict: " + verdict}));
  if (!e.symmetric && e.output_size[0] >= 1) {
    const list = el("ul", {id: "hyper-suggestions"});
    for (const p of e.suggested_paddings) list.append(el("li", {"data-padding": pairText(p), text: "--padding " + pairText(p)}));
    for (const s of e.suggested_strides) list.append(el("li", {"data-stride": pairText(s), text: "--stride " + pairText(s)}));
    if (list.children.length) text.append(el("p", {text: "suggestions (each slides symmetrically):"}), list);
    else text.append(el("p", {text: "no nearby padding or stride fixes both axes; change the input or kernel size."}));
  }
  text.append(el("p", {class: "muted", text: `The same as: numbacnn explain conv --input ${input} --kernel ${kernel} ` +
                                              `--stride ${stride} --padding ${padding}`}));
  drawSlide();
}

// The padded input (input pixels grey, padding white), the kernel at the current
// position (green) and the rows/columns no position covers (red).
function drawSlide() {
  const {input, padding, kernel, stride} = HYPER;
  const canvas = document.getElementById("hyper-canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const size = input + 2 * padding;
  const out = floorDiv(size - kernel, stride) + 1;
  if (size > MAX_DRAWN_CELLS || out < 1) {
    ctx.font = "13px sans-serif";
    ctx.fillStyle = "#444";
    ctx.fillText(out < 1 ? "the kernel does not fit" : `padded input ${size}x${size}: too large to draw`, 10, 20);
    return;
  }
  const cell = Math.floor(canvas.width / size);
  const reach = (out - 1) * stride + kernel;  // rows/columns some position covers
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const inside = y >= padding && y < padding + input && x >= padding && x < padding + input;
      ctx.fillStyle = (y >= reach || x >= reach) ? (inside ? "#e88" : "#fcc") : (inside ? "#bbb" : "#fff");
      ctx.fillRect(x * cell, y * cell, cell - 1, cell - 1);
    }
  const position = HYPER.position % (out * out);
  const i = Math.floor(position / out), j = position % out;
  ctx.strokeStyle = "#0a0";
  ctx.lineWidth = 3;
  ctx.strokeRect(j * stride * cell, i * stride * cell, kernel * cell - 1, kernel * cell - 1);
}
