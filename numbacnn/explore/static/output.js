"use strict";
// Flatten, linear and softmax: the last maps as one row of values, the logits
// numbacnn's linear kernel computed, and the softmax worked out step by step.

function renderOutput() {
  const body = document.getElementById("output-body");
  body.textContent = "";
  const image = PAGE.images[STATE.image];
  const flatten = PAGE.layers.find((layer) => layer.kind === "Flatten");
  if (flatten) {
    const before = PAGE.layers[flatten.input_index];
    body.append(el("p", {text: `flatten: the ${before.output_shape.join("x")} maps of ${before.explainer_name} ` +
      `become one row of ${flatten.output_shape[0]} values; the output layer multiplies it by a ` +
      `${PAGE.classes.length}x${flatten.output_shape[0]} weight matrix and adds a bias: one logit per class.`}));
  }
  const top = Math.max(...image.logits);
  const exps = image.logits.map((z) => Math.exp(z - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  const table = el("table", {class: "numbers", id: "softmax-table"}, [el("tr", {}, [
    el("th", {text: "class"}), el("th", {text: "logit z"}), el("th", {text: "exp(z - max z)"}),
    el("th", {text: "exp / sum"}), el("th", {text: "numbacnn softmax"})])]);
  PAGE.classes.forEach((name, k) => {
    table.append(el("tr", {"data-class": name}, [
      el("td", {text: name}), el("td", {"data-value": String(image.logits[k]), text: fmt(image.logits[k])}),
      el("td", {text: fmt(exps[k])}), el("td", {class: "page-probability", text: fmt(exps[k] / sum)}),
      el("td", {class: "probability", "data-value": String(image.probabilities[k]), text: fmt(image.probabilities[k])})]));
  });
  table.append(el("tr", {}, [el("td", {text: "sum"}), el("td"), el("td", {id: "softmax-sum", text: fmt(sum)}),
                             el("td", {text: fmt(1)}), el("td")]));
  body.append(table);
}
