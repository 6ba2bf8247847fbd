"""The hyperparameter view's answers, computed by :func:`numbacnn.shapes.explain_conv`
(the one rule ``numbacnn explain conv`` prints) for every square case in the view's
range, and embedded in the page: the page looks answers up instead of carrying a
second copy of the rule, so the two cannot disagree.

Encoding: the distinct answers once (a JSON list), and per case a uint16 index into
it, cases ordered by (input, kernel, stride, padding), each from 1 (padding from 0)
up to its limit. The output size is left out of the answers (it differs in nearly
every case); the page computes it with the formula and the tests hold it equal.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import numpy as np

from numbacnn.shapes import ConvExplanation, explain_conv

# The view's range: inputs to 64, kernels to 11, strides to 8, paddings to 10
# (beyond it the page draws the slide and names the command that explains it).
LIMITS = {"input": 64, "kernel": 11, "stride": 8, "padding": 10}
# ConvExplanation fields that are not the rule's answer (the case itself, or text made
# from it) and are left out; every other field is embedded, so a field added to
# ConvExplanation reaches the page without a change here.
NOT_ANSWERS = ("input_size", "kernel_size", "stride", "padding", "dilation", "output_size", "arithmetic", "message")


def answer_of(explanation: ConvExplanation) -> dict[str, Any]:
    """The fields of one explanation the page shows (JSON-ready: tuples become lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value.item() if isinstance(value, np.generic) else value

    return {f.name: plain(getattr(explanation, f.name)) for f in dataclasses.fields(explanation)
            if f.name not in NOT_ANSWERS}


def cases(limits: dict[str, int] = LIMITS):
    """Every square (input, kernel, stride, padding) of the range, in the table's order."""
    for size in range(1, limits["input"] + 1):
        for kernel in range(1, limits["kernel"] + 1):
            for stride in range(1, limits["stride"] + 1):
                for padding in range(0, limits["padding"] + 1):
                    yield size, kernel, stride, padding


def slide_table(limits: dict[str, int] = LIMITS) -> dict[str, Any]:
    """``{"limits", "answers", "index"}``: see the module docstring (62,000 cases at the
    default limits, a few seconds; kept for the process, explain_conv being pure)."""
    return _slide_table(tuple(sorted(limits.items())))


@functools.lru_cache(maxsize=2)
def _slide_table(limit_items: tuple[tuple[str, int], ...]) -> dict[str, Any]:
    import base64

    limits = dict(limit_items)
    answers: dict[str, int] = {}
    index = []
    for size, kernel, stride, padding in cases(limits):
        key = json.dumps(answer_of(explain_conv(size, kernel, stride, padding)), separators=(",", ":"),
                         sort_keys=True)
        index.append(answers.setdefault(key, len(answers)))
    if len(answers) > np.iinfo(np.uint16).max:
        raise ValueError(f"slide_table: {len(answers)} distinct answers do not fit a uint16 index")
    return {"limits": dict(limits), "answers": [json.loads(key) for key in answers],
            "index": base64.b64encode(np.asarray(index, dtype="<u2").tobytes()).decode("ascii")}


__all__ = ["LIMITS", "answer_of", "cases", "slide_table"]
