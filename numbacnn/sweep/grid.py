"""A sweep's grid: parsing ``name=v1,v2`` items, the cartesian product, trial identity.

A grid maps TrainConfig field names to lists of values. :func:`expand` lays the
product over a base configuration, in the grid's own order (the last name varies
fastest), and gives every trial an identity: a hash of its whole configuration,
so a re-run of the same sweep recognises the trials it has already finished and a
trial keeps its identity whichever worker ran it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from numbacnn.train import TrainConfig

ID_LENGTH = 12  # hex digits of SHA-256: 48 bits, no collision in any grid a person writes


@dataclass(frozen=True)
class Trial:
    """One training of a sweep.

    Attributes
    ----------
    id : str
        Hash of ``config`` (see :func:`trial_id`).
    values : dict
        The grid's values for this trial (the hyperparameters varied), in grid order.
    config : dict
        The whole TrainConfig as a dict (``dataclasses.asdict``), base plus values.
    """

    id: str
    values: dict[str, Any]
    config: dict[str, Any]


def config_fields() -> dict[str, Any]:
    """TrainConfig's field names and default values."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def field_name(name: str) -> str:
    """``kernel-size`` or ``kernel_size`` -> ``kernel_size``; unknown names raise ValueError."""
    fields = config_fields()
    key = name.strip().replace("-", "_")
    if key not in fields:
        raise ValueError(f"unknown hyperparameter {name!r}; a grid varies TrainConfig fields: {', '.join(fields)}")
    return key


def _coerce(name: str, text: str) -> Any:
    """A CLI value as the type of the field's default (int, float, str; None for data_dir)."""
    default = config_fields()[name]
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{name}={text!r}: expected true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name}={text!r}: expected a number") from None
    return text


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["kernel_size=3,5,7", "padding=0,1"]`` -> ``{"kernel_size": [3, 5, 7], "padding": [0, 1]}``.

    Values take the type of the TrainConfig field's default. Raises ValueError
    naming the item for a missing ``=``, an empty or unknown name, a value of the
    wrong type, or a name given twice.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ValueError(f"grid item {item!r} is not NAME=V1,V2,... (e.g. kernel_size=3,5,7)")
        key = field_name(name)
        if key in grid:
            raise ValueError(f"grid item {item!r}: {key} is given twice")
        grid[key] = [_coerce(key, v.strip()) for v in values.split(",") if v.strip()]
    return grid


def trial_id(config: Mapping[str, Any]) -> str:
    """Identity of a trial: SHA-256 of its configuration as sorted JSON, first 12 hex digits."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def absolute_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """The dataset folder the workers are told, absolute.

    Workers run elsewhere (another process, another machine) and in another
    folder: a relative ``data_dir`` would name a different place there, and
    ``$NUMBACNN_DATA`` may not be set. So ``data_dir`` is made absolute here, or,
    when None, replaced by ``$NUMBACNN_DATA`` (absolute) if that is set; the
    loaders' system folders are absolute already.
    """
    if data_dir is None:
        data_dir = os.environ.get("NUMBACNN_DATA") or None
    if data_dir is None:
        return None
    return str(Path(data_dir).expanduser().resolve())


def expand(grid: Mapping[str, Iterable[Any]], base: TrainConfig | None = None) -> list[Trial]:
    """The cartesian product of ``grid`` over ``base``, one Trial per combination.

    Parameters
    ----------
    grid : dict name -> list of values
        TrainConfig fields (``kernel_size``, ``padding``, ``stride``, ``seed``, ...).
        Each combination is validated with ``TrainConfig.validate``.
    base : TrainConfig or None
        Every other field (default: ``TrainConfig()``). Its ``data_dir`` is made
        absolute (:func:`absolute_data_dir`).

    Returns
    -------
    list of Trial
        In product order, the last name varying fastest; duplicates removed.

    Raises
    ------
    ValueError
        An unknown name, an empty value list, or a combination TrainConfig refuses.
    """
    base = base if base is not None else TrainConfig()
    names = [field_name(name) for name in grid]
    value_lists = [list(values) for values in grid.values()]
    for name, values in zip(names, value_lists):
        if not values:
            raise ValueError(f"grid: {name} has no values")
    base_dict = dataclasses.asdict(base)
    base_dict["data_dir"] = absolute_data_dir(base_dict.get("data_dir"))
    trials, seen = [], set()
    for combination in itertools.product(*value_lists):
        values = dict(zip(names, combination))
        config = dict(base_dict, **values)
        if "data_dir" in values:
            config["data_dir"] = absolute_data_dir(config["data_dir"])
        try:
            TrainConfig(**config).validate()
        except ValueError as exc:
            raise ValueError(f"grid: {values} is not a valid configuration: {exc}") from None
        identity = trial_id(config)
        if identity not in seen:
            seen.add(identity)
            trials.append(Trial(identity, values, config))
    return trials


__all__ = ["Trial", "absolute_data_dir", "config_fields", "expand", "field_name", "parse_grid", "trial_id"]
