"""``numbacnn explore``: CNN Explainer's interactive views on a trained checkpoint,
as one self-contained HTML page (data, styles and scripts inlined; nothing fetched).

One job per module:

- :mod:`numbacnn.explore.images`: which images the page shows (the checkpoint's test
  set, one per class, or the user's files), checked against the model's input;
- :mod:`numbacnn.explore.collect`: every number the page shows, computed by numbacnn's
  own kernels (activations, logits, probabilities, the conv weights);
- :mod:`numbacnn.explore.saliency`: input gradients of every class score through
  ``Module.backward`` (numbacnn's backward kernels);
- :mod:`numbacnn.explore.page`: the page data (compact binary arrays as base64) and
  the HTML written atomically, with ``static/`` (HTML, CSS, JS) inlined;
- :mod:`numbacnn.explore.run`: :func:`explore`, the whole command as a function.
"""

from numbacnn.explore.collect import ImageRecord, PageLayer, collect_image, describe_page_layers
from numbacnn.explore.page import PAGE_MARKER, build_page_data, render_page, write_page
from numbacnn.explore.run import ExploreResult, explore
from numbacnn.explore.saliency import input_gradients

__all__ = ["ExploreResult", "ImageRecord", "PAGE_MARKER", "PageLayer", "build_page_data", "collect_image",
           "describe_page_layers", "explore", "input_gradients", "render_page", "write_page"]
