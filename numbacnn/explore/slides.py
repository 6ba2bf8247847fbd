"""The hyperparameter view's answers, computed by :func:`numbacnn.shapes.explain_conv`
(the one rule ``numbacnn explain conv`` prints) for every square case in the view's
range, and embedded in the page: the page looks answers up instead of carrying a
second copy of the rule, so the two cannot disagree.

Encoding (compact: the range has 62,304 cases):

- ``fields``: ``[name, kind]`` for every ConvExplanation field that is a fact of the
  rule (booleans and integers; not the case itself, the output size, or text);
  kind ``value`` (a bool or int), ``pair`` (``(h, w)``, stored once: h == w in a square
  case) or ``pairs`` (a tuple of pairs, stored as a list of one number each);
- ``answers``: the distinct answers, each a list in ``fields`` order;
- ``index``: per case a little-endian uint16 index into ``answers``, cases ordered by
  (input, kernel, stride, padding), each from 1 (padding from 0) up to ``limits``.

The page computes the output size with the formula; the tests hold it equal too. A
field added to ConvExplanation reaches the page without a change here.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from typing import Any

import numpy as np

from numbacnn.shapes import ConvExplanation, explain_conv

# The view's range: inputs to 64, kernels to 11, strides to 8, paddings to 10
# (beyond it the page draws the slide and names the command that explains it).
LIMITS = {"input": 64, "kernel": 11, "stride": 8, "padding": 10}
# The case itself and values the page computes from it.
NOT_ANSWERS = ("input_size", "kernel_size", "stride", "padding", "dilation", "output_size")


# ConvExplanation's field types (as annotated) -> how the page stores them; other
# types (text) are left out.
KINDS = {"bool": "value", "int": "value", "tuple[int,int]": "pair", "tuple[tuple[int,int],...]": "pairs"}


def fact_fields() -> list[tuple[str, str]]:
    """``(name, kind)`` of ConvExplanation's facts, from its annotations (see the module docstring)."""
    found = []
    for f in dataclasses.fields(ConvExplanation):
        kind = KINDS.get(str(f.type).replace(" ", "").replace("Tuple", "tuple"))
        if f.name not in NOT_ANSWERS and kind is not None:
            found.append((f.name, kind))
    return found


def _square(pair: tuple[int, int], case: tuple[int, ...]) -> int:
    if pair[0] != pair[1]:
        raise ValueError(f"slide_table: a square case {case} gave different axes {pair}")
    return int(pair[0])


def encode_answer(explanation: ConvExplanation, fields: list[tuple[str, str]], case: tuple[int, ...]) -> list:
    """One answer in ``fields`` order, pairs stored once."""
    encoded: list[Any] = []
    for name, kind in fields:
        value = getattr(explanation, name)
        if kind == "value":
            encoded.append(bool(value) if isinstance(value, (bool, np.bool_)) else int(value))
        elif kind == "pair":
            encoded.append(_square(value, case))
        else:
            encoded.append([_square(pair, case) for pair in value])
    return encoded


def cases(limits: dict[str, int] = LIMITS):
    """Every square (input, kernel, stride, padding) of the range, in the table's order."""
    for size in range(1, limits["input"] + 1):
        for kernel in range(1, limits["kernel"] + 1):
            for stride in range(1, limits["stride"] + 1):
                for padding in range(0, limits["padding"] + 1):
                    yield size, kernel, stride, padding


def slide_table(limits: dict[str, int] = LIMITS) -> dict[str, Any]:
    """``{"limits", "fields", "answers", "index"}``: see the module docstring (a few
    seconds at the default limits; kept for the process, explain_conv being pure)."""
    return _slide_table(tuple(sorted(limits.items())))


@functools.lru_cache(maxsize=2)
def _slide_table(limit_items: tuple[tuple[str, int], ...]) -> dict[str, Any]:
    limits = dict(limit_items)
    fields = fact_fields()
    answers: dict[str, int] = {}
    index = []
    for case in cases(limits):
        key = json.dumps(encode_answer(explain_conv(*case), fields, case), separators=(",", ":"))
        index.append(answers.setdefault(key, len(answers)))
    if len(answers) > np.iinfo(np.uint16).max:
        raise ValueError(f"slide_table: {len(answers)} distinct answers do not fit a uint16 index")
    return {"limits": dict(limits), "fields": [list(f) for f in fields],
            "answers": [json.loads(key) for key in answers],
            "index": base64.b64encode(np.asarray(index, dtype="<u2").tobytes()).decode("ascii")}


__all__ = ["LIMITS", "cases", "encode_answer", "fact_fields", "slide_table"]
