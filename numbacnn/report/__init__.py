"""What a CNN does to one image, layer by layer: tables and a self-contained HTML report.

CNN Explainer's overview as static files, in three parts:

- :mod:`numbacnn.report.layers`: the layer table without data
  (:func:`describe_layers`, :func:`format_layer_table`: what ``numbacnn explain
  model`` prints), and CNN Explainer's layer names (:func:`explainer_names`);
- :mod:`numbacnn.report.activations`: one image through the model, every Conv2d /
  ReLU / MaxPool2d output kept (:func:`layer_activations`), and :func:`softmax`;
- :mod:`numbacnn.report.page`: ``DIR/index.html`` and its images
  (:func:`write_report`, :func:`report_from_checkpoint`).

Every public name is importable from ``numbacnn.report`` as before the split.
"""

from numbacnn.report.activations import MAP_LAYERS, LayerActivation, layer_activations, softmax
from numbacnn.report.layers import LayerDescription, describe_layers, explainer_names, format_layer_table
from numbacnn.report.page import (IMAGES_DIR, INDEX_NAME, PROBABILITY_BAR_PIXELS, Report, ReportLayer,
                                  report_from_checkpoint, write_report)

__all__ = [
    "IMAGES_DIR", "INDEX_NAME", "MAP_LAYERS", "PROBABILITY_BAR_PIXELS",
    "LayerActivation", "LayerDescription", "Report", "ReportLayer", "describe_layers", "explainer_names",
    "format_layer_table", "layer_activations", "report_from_checkpoint",
    "softmax", "write_report",
]
