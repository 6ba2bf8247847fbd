"use strict";
// Wiring: the header, the image chooser, the colour-scale switch, and one render of every view.

function renderAll() {
  renderOverview();
  renderDetail();
  renderOutput();
  renderSaliency();
}

function renderImageList() {
  const list = document.getElementById("image-list");
  list.textContent = "";
  const [, , w] = PAGE.input_shape;
  PAGE.images.forEach((image, n) => {
    const canvas = el("canvas");
    drawImage(canvas, n, cellSize(w, 56));
    const best = image.probabilities.indexOf(Math.max(...image.probabilities));
    const truth = image.label === null ? "" : "true: " + PAGE.classes[image.label];
    const thumb = el("div", {class: "thumb" + (n === STATE.image ? " selected" : ""), "data-image": String(n),
                             title: image.source}, [canvas, el("div", {text: "predicted: " + PAGE.classes[best]}),
                             el("div", {class: "muted", text: truth})]);
    thumb.addEventListener("click", () => {
      stopAnimation();
      STATE.image = n;
      STATE.pixel = STATE.pixel && STATE.layer !== null ? STATE.pixel : null;
      SALIENCY_CLASS = null;
      renderImageList();
      renderAll();
    });
    list.append(thumb);
  });
}

function main() {
  document.getElementById("title").textContent = PAGE.title;
  document.getElementById("source").textContent = PAGE.source + ". Classes: " + PAGE.classes.join(", ") +
    ". The maps, logits and gradients were computed by numbacnn's kernels (ReLU and pool maps rebuilt " +
    "here from them, exactly); sums worked out on this page are shown beside the values they recompute.";
  for (const radio of document.querySelectorAll('input[name="scale"]'))
    radio.addEventListener("change", () => { STATE.scale = radio.value; renderOverview(); });
  renderImageList();
  renderAll();
  renderCurves();
  renderConfusion();
  renderHyperForm();
  renderHyper();
  document.body.setAttribute("data-ready", "true");
}

main();
