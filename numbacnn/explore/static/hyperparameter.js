"use strict";
// The hyperparameter view: input size, padding, kernel size and stride chosen freely,
// the kernel's slide animated, the output size, and the slide's verdict with its
// suggested fixes. The verdicts are not computed here: numbacnn.shapes.explain_conv
// (the one rule `numbacnn explain conv` prints) answered every square case of the
// view's range when the page was written (numbacnn.explore.slides); the page looks
// them up, so the two cannot disagree. Outside the range it names the command.

function floorDiv(a, b) { return Math.floor(a / b); }

const MAX_DRAWN_CELLS = 64;  // larger padded inputs get the arithmetic, not the picture
const SLIDE_INDEX = decode(PAGE.slides.index, "uint8");

// explain_conv's answer for a square case, with the output size; null outside the range.
// Pairs are stored once (h == w in a square case) and expanded back here.
function explainConv(size, kernel, stride, padding) {
  const limits = PAGE.slides.limits;
  if (size < 1 || size > limits.input || kernel < 1 || kernel > limits.kernel || stride < 1 ||
      stride > limits.stride || padding < 0 || padding > limits.padding) return null;
  // cases in (input, kernel, stride, padding) order, padding from 0, the rest from 1
  const n = (((size - 1) * limits.kernel + (kernel - 1)) * limits.stride + (stride - 1)) * (limits.padding + 1) + padding;
  const answer = PAGE.slides.answers[SLIDE_INDEX[2 * n] + 256 * SLIDE_INDEX[2 * n + 1]];
  const output = floorDiv(size + 2 * padding - kernel, stride) + 1;
  const result = {output_size: [output, output]};
  PAGE.slides.fields.forEach(([name, kind], k) => {
    const value = answer[k];
    result[name] = kind === "pair" ? [value, value] : kind === "pairs" ? value.map((v) => [v, v]) : value;
  });
  return result;
}

// Whether the rule accepts the slide: "sound" where explain_conv reports it, else "symmetric".
function slideAccepted(e) { return "sound" in e ? e.sound : e.symmetric; }

// The failed checks in words, from the rule's facts (rows and columns alike: a square case).
function slideProblems(e, padding) {
  const problems = [];
  const lost = e.uncovered[0];
  if (lost) {
    const inputLost = lost - Math.min(lost, padding);
    problems.push(`the last ${lost} row(s) and column(s) of the padded input are never covered` +
      (inputLost ? ` (${inputLost} of them input pixels, silently dropped)` : " (zero padding only, but the borders are treated differently)"));
  }
  if (e.unread && e.unread[0]) problems.push(`${e.unread[0]} input row(s) and column(s) are never read`);
  if (e.padding_only && e.padding_only[0])
    problems.push(`${e.padding_only[0]} kernel position(s) per row and column see only zero padding`);
  return problems;
}

const HYPER = {input: 7, padding: 0, kernel: 3, stride: 3, position: 0, timer: null};

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
  const text = document.getElementById("hyper-text");
  text.textContent = "";
  const covered = input + 2 * padding - kernel;
  const output = floorDiv(covered, stride) + 1;
  text.append(el("p", {class: "equation", id: "hyper-arithmetic",
    text: `output size = (input + 2*padding - kernel) / stride + 1 = (${input} + 2*${padding} - ${kernel}) / ${stride} + 1 = ` +
          `${output}` + (covered >= 0 && covered % stride ? "  (floored)" : "")}));
  const command = `numbacnn explain conv --input ${input} --kernel ${kernel} --stride ${stride} --padding ${padding}`;
  const e = explainConv(input, kernel, stride, padding);
  if (e === null) {
    const limits = PAGE.slides.limits;
    text.append(el("p", {id: "hyper-verdict", "data-accepted": "", text: `This page holds the verdicts for inputs up to ` +
      `${limits.input}, kernels up to ${limits.kernel}, strides up to ${limits.stride} and paddings up to ` +
      `${limits.padding}; for this one run: ${command}`}));
    drawSlide();
    return;
  }
  const accepted = slideAccepted(e);
  let verdict;
  if (output < 1) verdict = `IMPOSSIBLE: the kernel ${kernel}x${kernel} is larger than the padded input ${input + 2 * padding}x${input + 2 * padding}.`;
  else if (accepted) verdict = `symmetric: the ${output}x${output} kernel positions cover every row and column of the padded input.`;
  else verdict = "NOT " + ("sound" in e ? "sound" : "symmetric") + ": " + slideProblems(e, padding).join("; ") + ".";
  text.append(el("p", {class: "verdict", id: "hyper-verdict", "data-accepted": String(accepted),
                       "data-output": String(output), text: "verdict: " + verdict}));
  if (!accepted && output >= 1) {
    const list = el("ul", {id: "hyper-suggestions"});
    for (const p of e.suggested_paddings) list.append(el("li", {"data-padding": pairText(p), text: "--padding " + pairText(p)}));
    for (const s of e.suggested_strides) list.append(el("li", {"data-stride": pairText(s), text: "--stride " + pairText(s)}));
    if (list.children.length) text.append(el("p", {text: "suggestions:"}), list);
    else text.append(el("p", {text: "no nearby padding or stride fixes both axes; change the input or kernel size."}));
  }
  text.append(el("p", {class: "muted", text: "The same verdict as: " + command}));
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
    const outputCanvas = document.getElementById("hyper-output");
    outputCanvas.getContext("2d").clearRect(0, 0, outputCanvas.width, outputCanvas.height);
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
  drawOutputGrid(out, i, j);
}

// The output grid, the cell the kernel's current position writes in green.
function drawOutputGrid(out, i, j) {
  const canvas = document.getElementById("hyper-output");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const cell = Math.max(1, Math.floor(canvas.width / out));
  for (let y = 0; y < out; y++)
    for (let x = 0; x < out; x++) {
      ctx.fillStyle = y === i && x === j ? "#5c5" : "#bbb";
      ctx.fillRect(x * cell, y * cell, cell - 1, cell - 1);
    }
}
