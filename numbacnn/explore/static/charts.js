"use strict";
// Training curves from the checkpoint's history, and the confusion matrix of its test set.

function renderCurves() {
  const box = document.getElementById("curves");
  box.textContent = "";
  const history = PAGE.history || [];
  if (!history.length) { box.append(el("p", {class: "muted", text: "no training history in the checkpoint"})); return; }
  for (const [title, keys] of [["loss", ["train_loss", "val_loss"]], ["accuracy", ["train_accuracy", "val_accuracy"]]]) {
    const canvas = el("canvas", {class: "curve", width: 320, height: 200});
    const ctx = canvas.getContext("2d");
    const points = keys.map((key) => history.map((h) => h[key]).filter((v) => typeof v === "number"));
    const all = points.flat();
    if (!all.length) continue;
    let lo = Math.min(...all), hi = Math.max(...all);
    if (hi === lo) { lo -= 0.5; hi += 0.5; }
    const x = (e) => 40 + (history.length > 1 ? e / (history.length - 1) : 0.5) * 260;
    const y = (v) => 170 - (v - lo) / (hi - lo) * 150;
    ctx.font = "11px sans-serif";
    ctx.fillText(title + " per epoch (" + lo.toPrecision(3) + " to " + hi.toPrecision(3) + ")", 40, 12);
    ["#2a6", "#c52"].forEach((colour, n) => {
      if (!points[n].length) return;
      ctx.strokeStyle = ctx.fillStyle = colour;
      ctx.beginPath();
      points[n].forEach((v, e) => (e ? ctx.lineTo(x(e), y(v)) : ctx.moveTo(x(e), y(v))));
      ctx.stroke();
      points[n].forEach((v, e) => ctx.fillRect(x(e) - 2, y(v) - 2, 4, 4));
      ctx.fillText(keys[n].replace("_", " "), 40 + 120 * n, 194);
    });
    box.append(canvas);
  }
}

function renderConfusion() {
  const box = document.getElementById("confusion");
  box.textContent = "";
  const confusion = PAGE.confusion || {};
  if (!confusion.matrix) { box.append(el("p", {class: "muted", text: "no confusion matrix: " + (confusion.missing || "")})); return; }
  const matrix = confusion.matrix, k = matrix.length;
  const correct = matrix.reduce((s, row, t) => s + row[t], 0);
  box.append(el("p", {class: "muted", text: `${confusion.images.toLocaleString("en")} test images (${confusion.where}), accuracy ` +
    `${(100 * correct / confusion.images).toFixed(2)}%. Rows: true class; columns: predicted.`}));
  const table = el("table", {class: "confusion", id: "confusion-table"});
  table.append(el("tr", {}, [el("th"), ...PAGE.classes.map((name) => el("th", {text: name.slice(0, 8)}))]));
  for (let t = 0; t < k; t++) {
    const total = matrix[t].reduce((a, b) => a + b, 0) || 1;
    table.append(el("tr", {}, [el("th", {text: PAGE.classes[t]}), ...matrix[t].map((n, p) => {
      const share = n / total;
      const colour = p === t ? `rgba(40,150,80,${share})` : `rgba(200,60,40,${Math.min(1, 3 * share)})`;
      return el("td", {style: "background:" + colour, text: String(n)});
    })]));
  }
  box.append(table);
}
