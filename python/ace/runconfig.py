"""The settings of an `ace pretrain` run, from a YAML or JSON file, `--set KEY=VALUE` overrides
and command-line options, resolved into one flat mapping that is saved with the run.

Keys are the command's options by their long names with underscores (`batch_size`,
`checkpoint_every`) and every `ace.PretrainConfig` field; `grid` and `augment` nest their
fields (`grid.window` on the command line). `preset` and `image_size` are the options' names
for the fields `encoder` and `grid.image_size`. Later sources win: the recipe's values, the
modality's (`modality: fundus`), then the file, then `--set`, then options.
"""
import copy
import dataclasses
import difflib
import json
import math
import re
from pathlib import Path

import yaml

from .config import MODALITIES, RECIPES, layer_settings, AugmentConfig, GridConfig, PretrainConfig
from .errors import ACEError
from .validate import UINT64_MAX, require_choice, require_int

# `objective` shorthands: PretrainConfig.objective and its losses.
OBJECTIVES = {
    "ace": ("ace", ["global", "comp", "decomp"]),
    "dino": ("dino", ["global"]),
    "comp": ("ace", ["comp"]),
    "comp+decomp": ("ace", ["comp", "decomp"]),
    "comp+decomp+global": ("ace", ["global", "comp", "decomp"]),
}
# The run's own settings (not PretrainConfig fields) and their defaults. steps None: run
# for `epochs`.
RUN_DEFAULTS = {"data": None, "out": "runs/ace", "steps": None, "seed": 0, "threads": None,
                "checkpoint_every": 100, "recipe": "paper", "modality": "xray"}
NESTED = {"grid": GridConfig, "augment": AugmentConfig}
# Option names that differ from the field they set.
ALIASES = {"preset": ("encoder",), "image_size": ("grid", "image_size")}
CONFIG_FIELDS = [f.name for f in dataclasses.fields(PretrainConfig)]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` as a string (its floats need a dot); read it as the number users mean."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_file(path):
    """The settings in a YAML or JSON file (JSON when the name ends in .json)."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ACEError(f"--config {path} is not a text file: {e}") from None
    except OSError as e:
        raise ACEError(f"--config {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_Loader)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ACEError(f"--config {path} is not valid {kind}: {e}") from None
    if data is None:                    # an empty file
        return {}
    if not isinstance(data, dict):
        raise ACEError(f"--config {path} must hold a mapping of settings (key: value), got {type(data).__name__}")
    return data


def parse_overrides(items):
    """`KEY=VALUE` strings -> settings; dotted keys nest (grid.window=5), values are YAML."""
    layer = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ACEError(f"--set expects KEY=VALUE (e.g. lr=0.001 or grid.window=5), got {item!r}")
        try:
            value = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as e:
            raise ACEError(f"--set {item}: the value is not valid YAML: {e}") from None
        *parents, name = key.split(".")
        node = layer
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ACEError(f"--set {item}: {part} is set twice, as a value and as a group")
        node[name] = value
    return layer


def check_layer(source, layer):
    """One source's settings, checked (unknown keys, types) and normalized: aliases replaced by
    their fields, an `objective` shorthand expanded to objective and losses. Errors name
    `source`."""
    layer = copy.deepcopy(layer)
    for alias, target in ALIASES.items():
        if alias in layer:
            _apply_alias(source, layer, alias, target)
    _reject_unknown(source, layer)
    if layer.get("steps") is not None and "epochs" in layer:
        raise ACEError(f"{source}: give steps or epochs, not both")
    if "objective" in layer:
        _expand_objective(source, layer)
    for key in RUN_DEFAULTS.keys() & layer.keys():
        layer[key] = _check_run_key(source, key, layer[key])
    fields = {k: v for k, v in layer.items() if k not in RUN_DEFAULTS}
    try:
        PretrainConfig.from_dict(fields)
    except ACEError as e:
        raise ACEError(f"{source}: {e}") from None
    return layer


def _apply_alias(source, layer, alias, target):
    value = layer.pop(alias)
    node = layer
    for part in target[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return                      # reported as a bad group by the field check
    if target[-1] in node:
        raise ACEError(f"{source}: {alias} sets {'.'.join(target)}; give one of them, not both")
    node[target[-1]] = value


def _reject_unknown(source, layer):
    known = list(RUN_DEFAULTS) + CONFIG_FIELDS + list(ALIASES)
    unknown = [str(key) for key in layer if key not in known]
    for group, cls in NESTED.items():
        if isinstance(layer.get(group), dict):
            names = [f.name for f in dataclasses.fields(cls)]
            unknown += [f"{group}.{key}" for key in layer[group] if key not in names]
            known += [f"{group}.{name}" for name in names]
    if unknown:
        raise ACEError(f"{source}: unknown keys: {', '.join(_with_hint(key, known) for key in unknown)}")


def _with_hint(key, known):
    close = difflib.get_close_matches(key, known, n=1)
    return f"{key} (did you mean {close[0]}?)" if close else key


def _expand_objective(source, layer):
    name = require_choice(f"{source}: objective", layer["objective"], list(OBJECTIVES))
    objective, losses = OBJECTIVES[name]
    if "losses" in layer and name != objective:
        raise ACEError(f"{source}: objective {name} sets the losses ({', '.join(losses)}); with an explicit "
                       f"losses list use objective ace or dino")
    layer["objective"] = objective
    layer.setdefault("losses", losses)


def _check_run_key(source, key, value):
    name = f"{source}: {key}"
    if value is None and key in ("data", "steps", "threads"):
        return None
    if key in ("data", "out"):
        if not isinstance(value, str) or not value:
            raise ACEError(f"{name} must be a path, got {value!r}")
        return value
    if key == "recipe":
        return require_choice(name, value, list(RECIPES))
    if key == "modality":
        return require_choice(name, value, list(MODALITIES))
    limits = {"steps": (1, 2**62), "seed": (0, UINT64_MAX), "threads": (1, 1024), "checkpoint_every": (1, 2**62)}
    return require_int(name, value, *limits[key])


def merge(layers):
    """Checked layers, later ones winning; grid/augment merge field by field, and steps and
    epochs replace each other (both say how long the run is)."""
    merged = {}
    for layer in layers:
        if layer.get("steps") is not None:
            merged.pop("epochs", None)
        if "epochs" in layer:
            merged.pop("steps", None)
        for key, value in layer.items():
            if key in NESTED:
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    return merged


class RunSettings:
    """The resolved settings: `run` (RUN_DEFAULTS' keys) and `config` (a PretrainConfig).

    `fit_to_data` then sets what depends on the data set's size; `to_yaml` writes the
    settings that repeat the run."""

    def __init__(self, merged):
        self._given = merged
        self.run = {key: merged.get(key, default) for key, default in RUN_DEFAULTS.items()}
        fields = {key: value for key, value in merged.items() if key not in RUN_DEFAULTS}
        # The modality's settings sit under the user's own (groups merge field by field).
        self.config = PretrainConfig.recipe(self.run["recipe"],
                                            **layer_settings([MODALITIES[self.run["modality"]], fields]))

    def fit_to_data(self, steps_per_epoch):
        """Epoch length from the data (unless given), epochs from steps (when steps are
        given); returns the number of steps the run takes."""
        cfg = self.config
        if "steps_per_epoch" not in self._given:
            cfg.steps_per_epoch = steps_per_epoch
        steps = self.run["steps"]
        if steps is not None:
            # The schedules span whole epochs; the run stops after exactly `steps` steps.
            cfg.epochs = max(1, math.ceil(steps / cfg.steps_per_epoch))
        cfg.validate()
        return steps if steps is not None else cfg.total_steps

    def to_dict(self):
        """Every setting, for `--config`: derived values (epochs from steps, the epoch length
        from the data) are left to be derived again, the data path is made absolute, and the
        output folder is left out so a repeat does not overwrite this run."""
        run = {key: value for key, value in self.run.items() if key != "out"}
        if run["data"] is not None:
            run["data"] = str(Path(run["data"]).absolute())
        fields = self.config.to_dict()
        if self.run["steps"] is not None:
            del fields["epochs"]
        if "steps_per_epoch" not in self._given:
            del fields["steps_per_epoch"]
        return {**run, **fields}

    def to_yaml(self):
        header = ("# Resolved settings of an `ace pretrain` run. Repeat it with:\n"
                  "#   ace pretrain --config config.yaml --out NEW_FOLDER\n")
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
