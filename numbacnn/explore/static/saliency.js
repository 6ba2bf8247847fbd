"use strict";
// Saliency: |d logit_k / d input| (largest over channels), from numbacnn's backward
// kernels, for the predicted class or any class clicked. Each class's map is scaled
// by its own largest value (embedded as 0..255).

let SALIENCY_CLASS = null;  // null: the predicted class

function renderSaliency() {
  const image = PAGE.images[STATE.image];
  const predicted = image.probabilities.indexOf(Math.max(...image.probabilities));
  const k = SALIENCY_CLASS === null ? predicted : SALIENCY_CLASS;
  const buttons = document.getElementById("saliency-classes");
  buttons.textContent = "";
  PAGE.classes.forEach((name, c) => {
    const button = el("button", {"data-class": String(c), text: name + (c === predicted ? " (predicted)" : ""),
                                 onclick: () => { SALIENCY_CLASS = c; renderSaliency(); }});
    if (c === k) button.classList.add("selected");
    buttons.append(button);
  });
  const [, h, w] = PAGE.input_shape;
  const maps = decode(image.saliency, "uint8");
  const body = document.getElementById("saliency-body");
  body.textContent = "";
  const cell = cellSize(w, 200);
  const picture = el("canvas");
  drawImage(picture, STATE.image, cell);
  const heat = el("canvas", {id: "saliency-canvas"});
  drawMap(heat, maps, k, h, w, cell, 0, 255, (v) => [255, Math.round(255 - 0.8 * v), Math.round(255 - v)]);
  body.append(picture, heat, el("p", {class: "muted", text: `class ${PAGE.classes[k]}: the brightest red is ` +
    `|d logit / d pixel| = ${image.saliency_peaks[k].toExponential(3)} (largest over channels; white is 0).`}));
}
