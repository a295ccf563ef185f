"""Hypothesis strategies that generate fuzz cases (plain, picklable dicts for worker.py).

Arrays, files and checkpoints are described, not built: {"__array__": spec} becomes an
array in the worker (a zero-stride view for huge shapes, so "a 4096 x 4096 image" or "10^8
pixels" costs nothing to describe), {"__path__": kind} a file or folder inside the case's
own folder, and checkpoint cases carry mutation ops applied to a valid checkpoint the
worker writes itself. Values mix what a user would plausibly pass (to get past the first
check and into the core) with hostile ones: wrong types, None, NaN/Inf, huge integers,
negative numbers, NumPy scalars, strings.
"""
import json
import math
import os
from decimal import Decimal
from fractions import Fraction

import numpy as np
from hypothesis import strategies as st

from .worker import ARRAY, DROP, PATH, TINY, repeat

NAN, INF = float("nan"), float("inf")

# ----------------------------------------------------------------------------- scalars

INT_EDGES = [0, 1, 2, 3, -1, -2, 7, 16, 31, 32, 33, 64, 1000, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62,
             2**63 - 1, 2**63, 2**64, -2**63, 10**12, 10**100]
FLOAT_EDGES = [0.0, -0.0, 0.5, 1.0, 1.5, 32.7, -1.0, 1e-30, 5e-324, 1e-45, 3.4e38, 3.5e38, 1e308, NAN, INF, -INF]

edge_ints = st.sampled_from(INT_EDGES)
edge_floats = st.sampled_from(FLOAT_EDGES)
numpy_scalars = st.sampled_from([np.int64(32), np.int32(2), np.uint8(3), np.float32(0.5), np.float32(NAN),
                                 np.float16(INF), np.float64(1e-3), np.bool_(True), np.int64(-1),
                                 np.uint64(2**64 - 1), np.longdouble(1.5)])
odd_values = st.sampled_from([None, True, False, "", "x", "32", "nan", "vit_nano", b"32", [32], (32,), {}, [],
                              1 + 2j, Fraction(1, 3), Decimal("NaN"), Decimal("32"), Decimal("1e400"),
                              range(3), frozenset()])
_wild = st.one_of(edge_ints, edge_floats, numpy_scalars, odd_values, st.integers(-10, 100),
                  st.floats(allow_nan=True, allow_infinity=True))
# deferred: one branch where it is combined with others (hypothesis flattens nested
# one_of, which would make hostile values outnumber plausible ones six to one).
wild = st.deferred(lambda: _wild)


def weighted(*pairs):
    """One of the strategies, chosen with the given weights: [(weight, strategy), ...].
    (st.one_of does not keep proportions: hypothesis's search for novel examples favours
    the alternative with the most room, here almost always the hostile values.)"""
    total = sum(w for w, _ in pairs)
    bounds, acc = [], 0
    for w, strategy in pairs:
        acc += w
        bounds.append((acc, strategy))

    def pick(i):
        return next(strategy for bound, strategy in bounds if i < bound)

    return st.integers(0, total - 1).flatmap(pick)


def plausible_or_wild(*plausible, percent=80):
    """A value from `plausible` (most of the time, so that most cases pass the first check
    and reach deeper) or any wild value."""
    return weighted((percent, st.sampled_from(list(plausible))), (100 - percent, wild))


# ----------------------------------------------------------------------------- arrays

DTYPE_NAMES = ["float32"] * 6 + ["float64", "float16", "longdouble", "uint8", "uint16", "uint32", "uint64", "int8",
                                 "int16", "int32", "int64", "bool", "complex64", "complex128", "object", "str",
                                 "bytes", "datetime64", "timedelta64", "void", "record"]
IMAGE_DTYPES = ["uint8", "uint8", "uint16", "float32", "float32", "float64", "float16"] + DTYPE_NAMES[6:]
LAYOUTS = ["c"] * 8 + ["broadcast", "fortran", "reversed", "strided", "unaligned", "readonly", "list", "ragged",
                       "masked", "scalar"]
FILLS = ["normal"] * 4 + ["unit", "ramp", 0.0, 1.0, -3.0, 300.0, 1e30, 3.4e38, "nan", "inf", "-inf", "denormal",
                          "unit_nan", "unit_big", 2**70]
IMAGE_FILLS = ["unit"] * 4 + ["bytes", "words", "ramp", 0.0, 1.0, 0.5, -0.5, 255.0, 65535.0, "nan", "inf",
                              "unit_nan", "unit_big", "tiny_over", "normal", 1e30]


def array(dtype=None, shape=None, fill=None, layout=None):
    return st.fixed_dictionaries({
        "dtype": dtype if dtype is not None else st.sampled_from(DTYPE_NAMES),
        "shape": shape if shape is not None else st.lists(st.integers(0, 40), max_size=4),
        "fill": fill if fill is not None else st.sampled_from(FILLS),
        "layout": layout if layout is not None else st.sampled_from(LAYOUTS),
    }).map(lambda spec: {ARRAY: spec})


side = st.sampled_from(["S", "S", "S", 16, 32, 0, 1, 15, 17, 48, 64, "S+1", "S*2", "S/2"])
HUGE_4D = [[1, 1, 4096, 4096], [1, 1, 65536, 16], [2**20, 1, 16, 16], [1, 1, 2**31, 16], [1, 1, 16, 2**40],
           [1, 3, 1024, 1024], [2**31, "C", "S", "S"], [1, 2**20, 16, 16]]
encoder_input_shapes = st.one_of(
    st.tuples(st.sampled_from([1, 2, 2, 3, 0]), st.sampled_from(["C", "C", "C", 1, 3, 0, 2]), side, side).map(list),
    st.sampled_from(HUGE_4D),
    st.lists(st.sampled_from([1, 2, 16, 32, "S", "C"]), max_size=6),
)
encoder_inputs = array(
    dtype=st.sampled_from(["float32"] * 8 + DTYPE_NAMES[6:]),
    shape=encoder_input_shapes,
    fill=st.sampled_from(FILLS),
    layout=st.sampled_from(LAYOUTS))

image_shapes = st.one_of(
    st.tuples(st.sampled_from([1, 2, 3, 0]), st.sampled_from([32, 40, 64, 1, 2, 0, 17, 100, 300]),
              st.sampled_from([32, 40, 64, 1, 2, 0, 33, 100, 300])).map(list),
    st.tuples(st.sampled_from([1, 2]), st.sampled_from([32, 48]), st.sampled_from([32, 48]),
              st.sampled_from([1, 2, 3, 4, 5, 0])).map(list),
    st.sampled_from([[1, 100_000_000, 1], [1, 1, 70_000], [1, 65537, 1], [1, 16384, 16384], [1, 65536, 4096],
                     [3, 16384, 16384], [2**31, 8, 8], [1, 2**32, 2**32], [64], [8, 8], [1, 1, 8, 8, 1]]),
    st.lists(st.integers(0, 50), max_size=5),
)
images = array(dtype=st.sampled_from(IMAGE_DTYPES), shape=image_shapes, fill=st.sampled_from(IMAGE_FILLS),
               layout=st.sampled_from(LAYOUTS))
good_images = array(dtype=st.sampled_from(["uint8", "uint16", "float32", "float64"]),
                    shape=st.sampled_from([["B", "S", "S"], [2, 64, 64], [2, 80, 70], [3, 50, 90], [1, 64, 64],
                                           [2, 64, 64, 3]]),
                    fill=st.sampled_from(["unit", "bytes", "words", "ramp"]), layout=st.just("c"))


def path(kind):
    return {PATH: kind}


read_paths = st.sampled_from([path("encoder_ckpt"), path("trainer_ckpt"), path("empty_file"), path("dir"),
                              path("missing_dir"), path(("garbage_file", b"\x08" + b"\x00" * 7 + b"{}")),
                              path(("garbage_file", b"\xff" * 8 + b"{}")), path("pathlib"), path("bytes"),
                              path("nul"), path("long"), path("surrogate"), "/dev/null", "/", "/proc/self/status",
                              None, 5, 1.5, b"\xff", ["x"]])
write_paths = st.sampled_from([path("new"), path("new"), path("dir"), path("missing_dir"), path("pathlib"),
                               path("bytes"), path("nul"), path("long"), path("surrogate"), None, 5, 1.5, ["x"]])

# ----------------------------------------------------------------------------- ace.Encoder

presets = weighted((85, st.just("vit_nano")), (4, st.sampled_from(["vit_tiny", "vit_small", "vit_base"])),
                   (4, st.sampled_from(["", "VIT_NANO", "vit_huge", "vit_nano "])), (7, wild))
encoder_kwargs = st.fixed_dictionaries({}, optional={
    "in_chans": plausible_or_wild(1, 3, 2, 0, -1, 4),
    "img_size": plausible_or_wild(16, 32, 48, 64, 17, 0, 8, 96, 4096, 65536, 1_600_000, 2**31 - 1, 2**31),
    "drop_path": plausible_or_wild(0.0, 0.1, 0.5, 0.99, 1.0, -0.1, NAN),
    "seed": plausible_or_wild(0, 1, 2**64 - 1, 2**64, -1),
    "mean": plausible_or_wild(0.5, 0.0, -1.0, 1e30, NAN, INF),
    "std": plausible_or_wild(0.2, 1.0, 0.0, -0.2, 1e-30, 1e30, NAN, INF),
    "precision": st.sampled_from(["auto", "bf16", "fp32", "fp16", "", None, "FP32", 32]),
}).map(lambda kw: {"img_size": 32, **kw})

lrs = plausible_or_wild(1e-3, 1e-4, 0.0, -1e-3, 1.0, 1e10, 1e30, 3.4e38, NAN, INF)
state_edits = st.lists(st.one_of(
    st.tuples(st.sampled_from(["drop", "add", "rename"]), st.integers(0, 200)),
    st.tuples(st.just("value"), st.integers(0, 200), st.one_of(array(), wild)),
    st.tuples(st.just("shape"), st.integers(0, 200), st.lists(st.sampled_from([0, 1, 3, 96, 97, 384, -1]),
                                                            max_size=4)),
    st.tuples(st.just("dtype"), st.integers(0, 200), st.sampled_from(DTYPE_NAMES),
              st.sampled_from(["normal", "nan", 1e30, 0.0])),
    st.tuples(st.just("poke"), st.integers(0, 200), st.integers(0, 10**6),
              st.sampled_from([NAN, INF, -INF, 3.5e38, 1e38, 0.0])),
), max_size=3)
state_specs = st.one_of(
    st.fixed_dictionaries({"base": st.just("self"), "edits": state_edits}),
    st.fixed_dictionaries({"base": st.sampled_from(["none", "list", "empty"])}),
).map(lambda s: {"__state__": s})

encoder_call = st.one_of(
    st.tuples(st.sampled_from(["forward_features", "forward_train"]), st.tuples(encoder_inputs)),
    st.tuples(st.just("forward_train"), st.tuples(array(dtype=st.just("float32"), shape=st.just([2, "C", "S", "S"]),
                                                        fill=st.just("normal"), layout=st.just("c")))),
    st.tuples(st.just("backward"), st.just(("match",)),
              st.fixed_dictionaries({}, optional={"dtype": st.sampled_from(DTYPE_NAMES),
                                                  "fill": st.sampled_from(FILLS),
                                                  "layout": st.sampled_from(LAYOUTS)})),
    st.tuples(st.just("backward"), st.tuples(st.one_of(encoder_inputs, array(), wild))),
    st.tuples(st.just("embed"), st.tuples(images),
              st.fixed_dictionaries({}, optional={"batch_size": plausible_or_wild(1, 2, 64, 0, -1, 2**31)})),
    st.tuples(st.just("preprocess"), st.tuples(images)),
    st.tuples(st.just("load_state_dict"), st.tuples(state_specs)),
    st.tuples(st.just("adamw_step"), st.tuples(lrs),
              st.fixed_dictionaries({}, optional={"weight_decay": plausible_or_wild(0.0, 0.05, 1.0, -1.0, 1e30,
                                                                                    NAN)})),
    st.tuples(st.just("precision"), st.tuples(st.sampled_from(["auto", "bf16", "fp32", "fp16", None, 1]))),
    st.tuples(st.just("save"), st.tuples(write_paths)),
    st.tuples(st.just("load"), st.tuples(read_paths)),
    st.tuples(st.sampled_from(["copy", "config", "repr", "state_dict"]), st.just(())),
)
# A valid training forward, its backward and an update, so that these are reached too.
train_triplet = st.just([("forward_train", ({ARRAY: {"dtype": "float32", "shape": [2, "C", "S", "S"],
                                                     "fill": "normal", "layout": "c"}},)),
                         ("backward", ("match",), {}), ("adamw_step", (1e-3,), {})])
encoder_calls = st.one_of(st.lists(encoder_call, max_size=4),
                          st.tuples(train_triplet, st.lists(encoder_call, max_size=2)).map(lambda t: t[0] + t[1]))
encoder_cases = st.fixed_dictionaries({"op": st.just("encoder"), "preset": presets, "kwargs": encoder_kwargs,
                                       "calls": encoder_calls})

# ----------------------------------------------------------------------------- ace.PretrainConfig / Trainer

INT_FIELDS = {
    "in_chans": [1, 3, 2], "local_hidden": [0, 8, 64], "head_hidden": [16, 32, 2**20, 2**31 - 1],
    "head_bottleneck": [8, 16, 2**31 - 1], "head_prototypes": [2, 64, 4096, 10**7, 2**31 - 1],
    "batch_size": [1, 2, 3, 8, 2**31 - 1], "epochs": [1, 2, 2**31 - 1], "steps_per_epoch": [1, 10, 2**31 - 1],
    "freeze_last_layer_epochs": [0, 1, 5, 2**31 - 1],
}
FLOAT_FIELDS = {
    "drop_path": [0.0, 0.1, 0.99, 1.0], "global_weight": [0.0, 0.1, 1e30], "comp_weight": [0.0, 1.0, -1.0],
    "decomp_weight": [0.0, 1.0], "alpha_comp": [0.0, 0.9, 1.0, 2.0], "alpha_decomp": [0.99, 1.0, -1.0],
    "logit_scale": [14.3, 0.0, 1e30, -1.0], "student_temp": [0.1, 0.0, 1e-30, -0.1], "teacher_temp": [0.04, 0.0, 1e-30],
    "center_momentum": [0.9, 1.0, 0.0, 2.0], "lr": [5e-4, 0.0, -1.0, 1e30, 3.4e38], "min_lr": [1e-6, 1.0, -1.0],
    "warmup_fraction": [0.1, 0.0, 1.0, 2.0, -1.0], "weight_decay": [0.04, -1.0, 1e30],
    "weight_decay_end": [0.4, 1e30], "momentum_teacher": [0.996, 1.0, 0.0, 2.0, -1.0],
    "clip_grad": [0.8, 0.0, -1.0, 1e-30], "mean": [0.757, 0.0, 1e30], "std": [0.2, 0.0, -0.2, 1e-30, 1e30],
    "dino_scale_min": [0.4, 0.0, 1.0, 2.0, -1.0], "dino_scale_max": [1.0, 0.1, 0.0, 5.0],
    "pre_crop_scale_min": [1.0, 0.85, 0.0, -1.0, 2.0],
}
STR_FIELDS = {
    "encoder": ["vit_nano", "vit_tiny", "vit_base", "vit_huge", ""], "local_head": ["mlp", "authors", "x"],
    "precision": ["auto", "bf16", "fp32", "fp16"], "objective": ["ace", "dino", "comp", ""],
    "clip_mode": ["per_tensor", "global", "x"],
}
GRID_FIELDS = {
    "image_size": [64, 32, 128, 65, 0, 2**16, 2**31 - 1], "grid_cells": [8, 4, 16, 3, 1, 64, 2**31 - 1],
    "fine_cells": [2, 1, 3, 4, 8, 2**31 - 1], "input_size": [32, 16, 48, 17, 4096, 2**31 - 1],
    "min_overlap": [1, 0, 2, 4, 2**31 - 1], "window": [3, 1, 0, 5, 2, 2**31 - 1], "sigma": [1.0, 1e-30, 0.0, 1e30],
    "decomp_window": [0, 5, 4, 2**31 - 1],
}
AUGMENT_FIELDS = {
    "brightness_contrast_p": [0.5, 1.0, 2.0, -1.0], "brightness": [0.2, 1e30, -1.0], "contrast": [0.2, 10.0],
    "blur_p": [0.5, 1.0], "blur_sigma_min": [0.1, 0.0, -1.0, 1e30], "blur_sigma_max": [2.0, 0.0, 1e30, 1e-30],
    "sharpen_p": [1.0, 0.3], "sharpen_amount": [1.0, 1e30, -5.0], "gamma_p": [1.0, 0.0],
    "gamma_min": [0.7, 0.0, -1.0], "gamma_max": [1.5, 1e30, 0.0], "clahe_p": [1.0, 0.3, 0.0],
    "clahe_clip": [4.0, 0.0, 1e30, -1.0], "clahe_tiles": [8.0, 0.0, 1.0, 1e6, 0.5, 1e30],
}


def _field_values(plausible):
    return plausible_or_wild(*plausible, percent=85)


config_field = st.one_of(
    *[st.tuples(st.just(k), _field_values(v)) for k, v in {**INT_FIELDS, **FLOAT_FIELDS, **STR_FIELDS}.items()],
    st.tuples(st.just("losses"), st.sampled_from([["global"], ["comp"], ["comp", "decomp"], [], ["x"], "comp",
                                                  None, ["comp", "comp"], ("global",), 5])),
    st.tuples(st.just("weight_decay_tokens"), st.sampled_from([True, False, 1, "yes", None, np.bool_(True)])),
    st.tuples(st.just("grid"), st.one_of(
        st.dictionaries(st.sampled_from(sorted(GRID_FIELDS) + ["nope"]),
                        st.one_of(*[_field_values(v) for v in GRID_FIELDS.values()]), min_size=1, max_size=3),
        st.sampled_from([None, 5, "x", [], {}]))),
    st.tuples(st.just("augment"), st.one_of(
        st.dictionaries(st.sampled_from(sorted(AUGMENT_FIELDS)),
                        st.one_of(*[_field_values(v) for v in AUGMENT_FIELDS.values()]), min_size=1, max_size=3),
        st.sampled_from([None, 5, "x", []]))),
)
config_fields = st.lists(config_field, max_size=3).map(dict)
setattr_fields = st.lists(st.one_of(
    config_field,
    st.tuples(st.sampled_from([f"grid.{k}" for k in GRID_FIELDS]), st.one_of(*[_field_values(v)
                                                                               for v in GRID_FIELDS.values()])),
    st.tuples(st.sampled_from([f"augment.{k}" for k in AUGMENT_FIELDS]),
              st.one_of(*[_field_values(v) for v in AUGMENT_FIELDS.values()])),
), min_size=1, max_size=3).map(dict)
builds = weighted((50, st.just("ctor")), (15, st.just("from_dict")), (10, st.just("from_json")),
                  (20, st.sampled_from([("recipe", "paper"), ("recipe", "authors")])),
                  (5, st.sampled_from([("recipe", "x"), ("recipe", None)])))

trainer_call = st.one_of(
    st.tuples(st.just("step"), st.tuples(good_images)),
    st.tuples(st.just("step"), st.tuples(st.one_of(images, wild))),
    st.tuples(st.just("save"), st.tuples(write_paths)),
    st.tuples(st.just("load"), st.tuples(read_paths)),
    st.tuples(st.sampled_from(["save_load", "steps_done", "precision"]), st.just(())),
    st.tuples(st.just("grid_crops"), st.tuples(st.fixed_dictionaries({}, optional={
        "n": plausible_or_wild(0, 1, 2, 3), "seed": plausible_or_wild(0, 7, 2**64 - 1)}))),
    st.tuples(st.sampled_from(["student", "teacher"]), st.lists(encoder_call, max_size=2)),
    st.tuples(st.sampled_from(["student", "teacher"]), train_triplet),
)
first_step = st.just(("step", ({ARRAY: {"dtype": "float32", "shape": [2, 64, 64], "fill": "unit", "layout": "c"}},)))

config_cases = weighted(
    (75, st.fixed_dictionaries({"op": st.just("trainer"), "build": builds, "fields": config_fields,
                           "calls": st.tuples(first_step, st.lists(trainer_call, max_size=1)).map(
                               lambda t: [t[0]] + t[1])})),
    (15, st.fixed_dictionaries({"op": st.just("trainer"), "build": st.just("setattr"), "fields": setattr_fields,
                                "calls": st.just([("step", ({ARRAY: {"dtype": "float32", "shape": [2, 64, 64],
                                                                     "fill": "unit", "layout": "c"}},))])})),
    (4, st.fixed_dictionaries({"op": st.just("trainer"), "build": st.just("raw"),
                               "fields": st.one_of(wild, st.just({"encoder": "vit_nano"})), "calls": st.just([])})),
    (6, st.fixed_dictionaries({"op": st.just("trainer"), "build": st.just("ctor"), "fields": st.just({}),
                               "trainer_kwargs": st.fixed_dictionaries({"seed": wild}), "calls": st.just([])})),
    (4, st.fixed_dictionaries({"op": st.just("trainer"), "build": st.just("from_json_text"),
                               "fields": st.sampled_from(["{", "[]", "null", "NaN", '{"lr": NaN}', b"\xff", "",
                                                          '{"encoder": "vit_nano", "lr": 1e400}', 5, None,
                                                          '{"grid": []}', '{"losses": {}}']),
                               "calls": st.just([])})),
)
trainer_cases = st.fixed_dictionaries({
    "op": st.just("trainer"), "build": st.just("ctor"),
    "fields": st.one_of(st.just({}), st.sampled_from([{"objective": "dino", "losses": ["global"]},
                                                      {"losses": ["comp"]}, {"precision": "fp32"},
                                                      {"batch_size": 1}, {"in_chans": 3}])),
    "calls": st.lists(trainer_call, min_size=1, max_size=4)})

grid_crops_cases = st.fixed_dictionaries({
    "op": st.just("grid_crops"),
    "config": weighted((15, st.just("default")),
                       (70, st.tuples(st.just("config"), st.sampled_from(["ctor", "from_dict"]), config_fields)),
                       (15, st.one_of(wild, st.just({"encoder": "vit_nano"})))),
    "kwargs": st.fixed_dictionaries({}, optional={
        "seed": plausible_or_wild(0, 1, 2**64 - 1),
        "n": plausible_or_wild(0, 1, 2, 3, 100_000, 100_001),
        "image": st.one_of(array(dtype=st.sampled_from(["float32", "float64", "uint8", "object"]),
                                 shape=st.sampled_from([["S", "S"], [64, 64], [512, 512], ["S", "S+1"], [0, 0],
                                                        [1, "S", "S"]]),
                                 fill=st.sampled_from(["unit", "nan", 2.0, "ramp"]),
                                 layout=st.sampled_from(["c", "c", "fortran", "broadcast", "list"])), wild)}),
})

threads_cases = st.fixed_dictionaries({
    "op": st.just("threads"),
    "values": st.lists(plausible_or_wild(1, 2, 3, 0, -1, 64, 1024, 1025, 2**31, 2**63), min_size=1, max_size=3),
    "forward": st.booleans()})

# ----------------------------------------------------------------------------- probes

hostile_probe_images = array(
    dtype=st.sampled_from(["uint8", "float32", "uint16", "float64", "int32", "bool", "object", "float16"]),
    shape=st.one_of(st.tuples(st.sampled_from([0, 1, 2, 3]), st.sampled_from([0, 1, 2, 3, 8, 33]),
                              st.sampled_from([0, 1, 2, 8, 64])).map(list),
                    st.sampled_from([[3, 32, 32, 3], [32, 32], [3, 1, 70000], [2, 65537, 1]])),
    fill=st.sampled_from(["unit", "bytes", "ramp", 0.0, 0.5, 1.0, "nan", "inf", 2.0]),
    layout=st.sampled_from(["c", "c", "list", "broadcast", "reversed", "ragged"]))
usable_probe_images = array(
    dtype=st.sampled_from(["uint8", "float32", "uint16", "float64"]),
    shape=st.tuples(st.sampled_from([2, 3, 4, 6]), st.sampled_from([16, 32, 48, 64]),
                    st.sampled_from([16, 32, 48, 64])).map(list),
    fill=st.sampled_from(["unit", "unit", "bytes", "ramp", 0.0, 0.5]),
    layout=st.sampled_from(["c"] * 8 + ["reversed", "fortran"]))
probe_images = weighted((75, usable_probe_images), (25, hostile_probe_images))
usable_landmarks = array(dtype=st.sampled_from(["float64", "float32"]),
                         shape=st.tuples(st.just("N"), st.sampled_from([2, 3, 5]), st.just(2)).map(list),
                         fill=st.sampled_from([("uniform", 0, 30), ("uniform", 0, 30), ("uniform", -0.5, 16),
                                               "unit_nan", 5.0]),
                         layout=st.just("c"))
hostile_landmarks = array(
    dtype=st.sampled_from(["float64", "float32", "int64", "float16", "object", "str"]),
    shape=st.one_of(st.tuples(st.sampled_from(["N", 0, 1, 5]), st.sampled_from([0, 1, 2, 3]),
                              st.sampled_from([2, 1, 3])).map(list),
                    st.sampled_from([[2], ["N", 2], []])),
    fill=st.sampled_from([("uniform", 0, 30), 5.0, -100.0, 1e9, -1e9, 0.0, "nan", "inf", "unit_nan",
                          ("uniform", 100, 200), 1e308]),
    layout=st.sampled_from(["c", "c", "list", "broadcast"]))
landmarks = weighted((70, usable_landmarks), (30, hostile_landmarks))
pair_values = st.one_of(
    st.sampled_from([[[0, 1]], [[0, 1], [1, 2]], [[0, 0]], [[-1, 0]], [[0, 99]], [], [0, 1], [[0.5, 1.0]],
                     [[0, 1, 2]], None, "x", [[2**63 - 1, 0]], [[True, False]], np.array([[0, 1]], np.uint64)]),
    array(dtype=st.sampled_from(["int64", "float64", "int8"]), shape=st.sampled_from([[1, 2], [3, 2], [2], [0, 2]]),
          fill=st.sampled_from([("ints", 3), 0.0, -1.0, 1e9]), layout=st.just("c")))
small_count = plausible_or_wild(1, 2, 3, 5, 0, -1, 10**7, 2**62)
patch_values = plausible_or_wild(None, 2, 4, 8, 16, 3, 0, -2, 10**6)
features = st.sampled_from(["cls", "mean", "cls", "tokens", None, 0])
seeds = plausible_or_wild(0, 1, 2**32 - 1, 2**32, -1)


def _labels(n_fill):
    return array(dtype=st.sampled_from(["int64", "int64", "float64", "bool", "str", "object"]),
                 shape=st.sampled_from([["N"], ["N"], [0], [1], ["N", 1]]), fill=n_fill, layout=st.just("c"))


def _pair(first, second):
    return st.one_of(st.tuples(first, second), st.tuples(first), wild)


masks = st.one_of(
    st.fixed_dictionaries({"lung": array(dtype=st.sampled_from(["bool", "uint8", "float32"]),
                                         shape=st.sampled_from([["N", "H", "W"], ["N", 8, 8], [0, "H", "W"],
                                                                ["N", 0, 0]]),
                                         fill=st.sampled_from([("ints", 2), 0.0, 1.0, "unit"]), layout=st.just("c"))}),
    array(dtype=st.just("bool"), shape=st.sampled_from([["N", 2, "H", "W"], ["N", "H", "W"], ["N", 0, "H", "W"]]),
          fill=st.sampled_from([("ints", 2), 0.0, 1.0]), layout=st.just("c")),
    st.sampled_from([{}, None, 5]))

probe_cases = st.one_of(
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.just("compositionality"), "args": st.tuples(probe_images),
                           "kwargs": st.fixed_dictionaries({}, optional={
                               "parts": plausible_or_wild(2, 4, 3, 0), "n": small_count, "patch": patch_values,
                               "features": features, "seed": seeds}).map(lambda d: {"n": 3, **d})}),
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.sampled_from(["decompositionality", "retrieval"]),
                           "args": st.tuples(probe_images),
                           "kwargs": st.fixed_dictionaries({}, optional={
                               "batch": plausible_or_wild(2, 3, 1, 0, 10**7), "trials": small_count,
                               "patch": patch_values, "features": features, "seed": seeds}).map(
                               lambda d: {"batch": 2, "trials": 2, **d})}),
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.just("landmark_correspondence"),
                           "args": st.tuples(probe_images, landmarks),
                           "kwargs": st.fixed_dictionaries({}, optional={
                               "method": st.sampled_from(["dense", "dense", "window", "x", None]),
                               "patch": plausible_or_wild(8, 16, 1, 0, 10**6), "stride": plausible_or_wild(8, 16, 0, -1),
                               "pairs": plausible_or_wild(None, 1, 2, 0, 10**7), "upsample": plausible_or_wild(1, 4, 0, 65),
                               "features": features, "seed": seeds})}),
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.just("landmark_embeddings"),
                           "args": st.tuples(probe_images, landmarks),
                           "kwargs": st.fixed_dictionaries({}, optional={
                               "k": plausible_or_wild(1, 5, 0, 10**7), "patch": plausible_or_wild(8, 16, 1, 0),
                               "features": features, "tsne": st.sampled_from([True, False, None, 1, "yes"]),
                               "seed": seeds})}),
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.just("symmetry"),
                           "args": st.tuples(probe_images, landmarks, pair_values),
                           "kwargs": st.fixed_dictionaries({}, optional={
                               "patch": plausible_or_wild(8, 16, 1, 0, -1), "features": features})}),
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.just("linear_probe_classification"),
                           "args": st.tuples(_pair(probe_images, _labels(st.sampled_from([("ints", 2), ("ints", 3), 0.0,
                                                                                         "nan"]))),
                                             _pair(probe_images, _labels(st.sampled_from([("ints", 2), 1.0])))),
                           "kwargs": st.fixed_dictionaries({}, optional={
                               "features": features, "C": plausible_or_wild(1.0, 0.0, -1.0, 1e-30, 1e30)})}),
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.just("segmentation"),
                           "args": st.tuples(_pair(probe_images, masks), _pair(probe_images, masks)),
                           "kwargs": st.fixed_dictionaries({}, optional={
                               "mode": st.sampled_from(["linear", "linear", "finetune", "x"]),
                               "shots": plausible_or_wild(None, 1, 2, 0, 10**6),
                               "structures": st.sampled_from([None, ["lung"], ["a", "b"], [], "lung"]),
                               "C": plausible_or_wild(1.0, 0.0), "seed": seeds,
                               "finetune": st.one_of(st.fixed_dictionaries({}, optional={
                                   "epochs": plausible_or_wild(0, 1, 2, -1), "batch": plausible_or_wild(1, 2, 0),
                                   "lr": plausible_or_wild(1e-4, 0.0, -1.0, 1e30),
                                   "head_lr": plausible_or_wild(1e-2, 1e30), "weight_decay": plausible_or_wild(0.0),
                                   "momentum": st.just(0.9)}), wild)})}),
    st.fixed_dictionaries({"op": st.just("probe"), "name": st.just("dice"),
                           "args": st.tuples(st.one_of(probe_images, wild), st.one_of(probe_images, wild))}),
)


# ----------------------------------------------------------------------------- image files

SUFFIXES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".PNG", ""]
image_byte_ops = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("bytes"), st.integers(0, 10**6), st.sampled_from([b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff",
                                                                        b"\x80", b"\xff" * 64])),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("u32"), st.integers(0, 10**6), st.sampled_from([0, 1, 2**16 - 1, 2**31 - 1, 2**32 - 1, 100_000]),
              st.booleans()),
), min_size=0, max_size=3)
DICOM_EDITS = {
    "Rows": [0, 1, 65535, 3], "Columns": [0, 1, 65535, 3], "BitsAllocated": [1, 8, 12, 32, 64, 0],
    "BitsStored": [1, 16, 0, 64], "HighBit": [15, 0, 63], "PixelRepresentation": [1, 2],
    "SamplesPerPixel": [3, 0, 4], "PhotometricInterpretation": ["MONOCHROME1", "RGB", "YBR_FULL", "PALETTE COLOR", ""],
    "NumberOfFrames": [1, 2, 0, "abc", 10**9], "RescaleSlope": [NAN, INF, 0.0, -1.0, 1e308],
    "RescaleIntercept": [NAN, -1e308, 1e308], "WindowCenter": [NAN, 0.0, 1e308, [1.0, 2.0]],
    "WindowWidth": [0.0, 1.0, -5.0, NAN, 1e-300], "PixelData": [b"", b"\x00" * 7, repeat(b"\x00", 10**6), DROP],
    "TransferSyntaxUID": ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99",
                          "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.90", "1.2.3"],
}
file_contents = st.one_of(
    st.tuples(st.just("random"), st.integers(0, 400), st.integers(0, 10**6)),
    st.tuples(st.just("image"), st.sampled_from(["png", "jpg", "tif", "bmp", "gif", "webp"]),
              st.sampled_from(["L", "I;16", "F", "I", "RGB", "RGBA", "1", "P", "LA"]), image_byte_ops),
    st.tuples(st.just("dicom"), st.lists(st.one_of(*[st.tuples(st.just(k), st.sampled_from(v))
                                                     for k, v in DICOM_EDITS.items()]), max_size=3),
              image_byte_ops),
    st.tuples(st.just("png_size"), st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 65535, 100_000, 30_000]),
              st.sampled_from([0, 1, 2**31 - 1, 65535, 30_000, 7])),
    st.tuples(st.just("literal"), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00",
                                                   b"\x00" * 128 + b"DICM", b"\xff\xd8\xff"])),
)
image_cases = st.fixed_dictionaries({
    "op": st.just("image"),
    "files": st.lists(st.tuples(st.sampled_from(SUFFIXES), file_contents), min_size=1, max_size=3),
    "call": st.sampled_from(["read_image", "read_image", "load_images", "stream"]),
    "size": plausible_or_wild(32, 32, 1, 7, 0, -1), "batch": plausible_or_wild(1, 2, 3, 0),
    "stream_kwargs": st.fixed_dictionaries({}, optional={
        "cache": st.booleans(), "prefetch": plausible_or_wild(1, 2, 0), "epochs": plausible_or_wild(None, 1, 0),
        "shuffle": st.booleans()})})

phantom_sizes = plausible_or_wild(32, 48, 64, 31, 0, -1, 2**31, 2**62, percent=85)
phantom_cases = st.one_of(
    st.fixed_dictionaries({"op": st.just("phantom"), "fn": st.just("generate"),
                           "args": st.tuples(plausible_or_wild(0, 1, 2**32 - 1, 2**64 - 1, -1), phantom_sizes)}),
    st.fixed_dictionaries({"op": st.just("phantom"), "fn": st.just("batch"),
                           "args": st.tuples(st.sampled_from([range(2), [0, 1], [], [-1], [2**70], ["x"], None, 5]),
                                             phantom_sizes)}),
    st.fixed_dictionaries({"op": st.just("phantom"), "fn": st.just("phantom_set"),
                           "args": st.tuples(plausible_or_wild(2, 5, 1, 0, -1), phantom_sizes,
                                             plausible_or_wild(0, 7, -1))}),
)

# ----------------------------------------------------------------------------- the private layer

JSON_CONFIG_FIELDS = {"embed_dim": [96, 96_000_000, 0, -96, 2**31], "depth": [4, 10**7, 0, -1],
                      "num_heads": [3, 0, 7, -3, 96], "mlp_ratio": [4, 0, 1e9, -1, NAN], "patch_size": [16, 0, 3, 10**9],
                      "img_size": [32, 0, 2**31, 15, 1_600_000], "in_chans": [1, 3, 0, 10**6],
                      "drop_path": [0.0, NAN, 2.0], "preset": ["vit_nano", "x", None]}
encoder_json = st.one_of(
    st.dictionaries(st.sampled_from(sorted(JSON_CONFIG_FIELDS)),
                    st.one_of(*[st.sampled_from(v) for v in JSON_CONFIG_FIELDS.values()]), max_size=3).map(
        lambda d: json.dumps({"depth": 4, "drop_path": 0, "embed_dim": 96, "img_size": 32, "in_chans": 1,
                              "mlp_ratio": 4, "num_heads": 3, "patch_size": 16, "preset": "vit_nano", **d})),
    st.sampled_from(["", "{", "[]", "null", "{}", '{"embed_dim": 1e400}', repeat("[", 100_000), repeat('{"a":', 50_000)]))


def _trainer_json(fields):
    d = json.loads(json.dumps(TINY))
    d.update(fields)
    return json.dumps(d)


native_cases = st.one_of(
    st.deferred(lambda: reinit_cases),
    st.fixed_dictionaries({"op": st.just("native"), "fn": st.just("grid_crops"),
                           "n": st.sampled_from([1, 2, 0]), "count": st.sampled_from([1, 2, 0, -1, 2**62, 3]),
                           "seed": st.just(0), "with_image": st.booleans(),
                           "deltas": st.dictionaries(st.sampled_from(["boxes", "o1", "o2", "t_comp", "t_decomp",
                                                                      "image", "views1", "views2"]),
                                                     st.sampled_from([-1, 1, -8, -1000, "none", "wrong_dtype",
                                                                      "readonly", -10**9]), max_size=2)}),
    st.fixed_dictionaries({"op": st.just("native"), "fn": st.just("encoder_from_json"),
                           "args": st.tuples(encoder_json)}),
    st.fixed_dictionaries({"op": st.just("native"), "fn": st.just("Trainer"), "args": st.tuples(
        st.one_of(st.dictionaries(st.sampled_from(sorted(INT_FIELDS) + ["grid", "losses", "lr", "encoder"]),
                                  st.one_of(edge_ints, edge_floats, st.none(), st.just("x")), max_size=2).map(
            _trainer_json), st.sampled_from(["", "{}", "[]", repeat("{", 10_000)])),
        st.integers(0, 2**64 - 1))}),
    st.fixed_dictionaries({"op": st.just("native"), "fn": st.just("gemm"), "args": st.tuples(
        array(dtype=st.sampled_from(["float32", "float32", "float64"]), shape=st.lists(st.sampled_from([0, 1, 3, 5, 2**20]),
                                                                                        max_size=3),
              fill=st.just("normal"), layout=st.sampled_from(["c", "c", "fortran", "broadcast", "unaligned"])),
        array(dtype=st.sampled_from(["float32", "float32", "float64"]), shape=st.lists(st.sampled_from([0, 1, 3, 5, 2**20]),
                                                                                        max_size=3),
              fill=st.just("normal"), layout=st.sampled_from(["c", "c", "fortran", "broadcast", "unaligned"])),
        st.booleans(), st.booleans(), st.sampled_from(["fp32", "bf16", "auto", "x", ""]))}),
    st.fixed_dictionaries({"op": st.just("native"), "fn": st.just("local_match_loss"), "args": st.tuples(
        *[array(dtype=st.just("float32"), shape=st.lists(st.sampled_from([0, 1, 2, 4, 8]), min_size=3, max_size=3),
                fill=st.sampled_from(["normal", "unit", "nan"]), layout=st.sampled_from(["c", "c", "reversed"]))
          for _ in range(3)],
        edge_floats, edge_floats)}),
    st.fixed_dictionaries({"op": st.just("native"), "fn": st.just("tensor"),
                           "method": st.sampled_from(["get_tensor", "set_tensor"]),
                           "args": st.one_of(st.tuples(st.sampled_from([-1, 0, 54, 55, 2**31 - 1, -2**31])),
                                             st.tuples(st.sampled_from([-1, 0, 55, 10**6]),
                                                       array(dtype=st.just("float32"),
                                                             shape=st.sampled_from([[1, 1, 96], [0], [10**6], [96]]),
                                                             fill=st.just("normal"), layout=st.just("c"))))}),
)

# ----------------------------------------------------------------------------- checkpoints

tensor_sel = st.integers(0, 10**4)
offset_values = st.one_of(
    st.lists(st.sampled_from([0, 4, 384, -4, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63,
                              12_000_000, 1_900_000]), min_size=0, max_size=3),
    st.sampled_from([[2**63 - 4, 2**63 - 4 + 384 - 2**64], [1.5, 2], ["a", 3], None, "0,4", [0, 4.0]]))
shape_values = st.sampled_from([[], [0], [-1], [2**31, 2**31], [96_000_000], [10**12], [1] * 9, [3, "x"], "abc",
                                None, [2**62, 4], [96], [1, 1, 96], [2**64], [0, 10**12], [1.5]])
json_op = st.one_of(
    st.tuples(st.just("offsets"), tensor_sel, offset_values),
    st.tuples(st.just("shift"), tensor_sel, st.sampled_from([-4, 4, 1, -1, 2**62, -2**62, 10**6, -10**6])),
    st.tuples(st.just("wrap"), tensor_sel),
    st.tuples(st.just("alias"), tensor_sel, st.integers(0, 10**4)),
    st.tuples(st.just("shape"), tensor_sel, shape_values),
    st.tuples(st.just("dtype"), tensor_sel, st.sampled_from(["F16", "BF16", "F64", "I64", "I32", "U8", "BOOL",
                                                             "F8_E4M3", "", "f32", 5, None])),
    st.tuples(st.just("field_drop"), tensor_sel, st.sampled_from(["dtype", "shape", "data_offsets"])),
    st.tuples(st.just("drop"), tensor_sel),
    st.tuples(st.just("entry"), tensor_sel, st.sampled_from([None, 5, [], {}, "x"])),
    st.tuples(st.just("rename"), tensor_sel, st.sampled_from(["x", "", "blocks.99.norm1.weight", "blocks.0.norm1.weight",
                                                              "student.cls_token", "teacher.cls_token", "adam_m.x"])),
    st.tuples(st.just("add"), st.sampled_from(["extra", "blocks.4.norm1.weight", "student.blocks.9.norm1.weight"]),
              st.sampled_from([{"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                               {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}, None])),
    st.tuples(st.just("meta"), st.sampled_from(["format", "step", "adam_t", "rng", "data_crc32", "config",
                                                "encoder_config", "extra"]),
              st.sampled_from(["-5", "0", "1", str(2**63 - 1), str(2**63), str(2**64), "1e3", "x", "", "1.5", " 1",
                               "0,0,0,0", "1,2,3", "1,2,3,4,5", "-1,0,0,0", "18446744073709551616,0,0,0",
                               "ace-encoder", "ace-trainer", "zzzz", "00000000", "ffffffff", 5, None, [],
                               "0,0,0,1"])),
    st.tuples(st.just("meta_drop"), st.sampled_from(["format", "step", "adam_t", "rng", "data_crc32", "config",
                                                     "encoder_config"])),
    st.tuples(st.just("meta_replace"), st.sampled_from([None, [], 5, "x", {}])),
    st.tuples(st.just("config"), st.sampled_from(["config", "encoder_config"]),
              st.sampled_from(["embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "img_size", "in_chans",
                               "drop_path", "preset", "head_prototypes", "head_hidden", "head_bottleneck",
                               "batch_size", "epochs", "steps_per_epoch", "lr", "grid.image_size", "grid.fine_cells",
                               "grid.grid_cells", "grid.input_size", "local_hidden", "losses", "objective", "encoder",
                               "precision", "grid", "teacher_temp", "momentum_teacher"]),
              st.one_of(st.sampled_from([96_000_000, 10**7, 10**12, 2**31, 2**63, -1, 0, 1, 3, 7, 1e30, NAN, INF, None,
                                         "x", DROP, [], 1.5, 2**62, 192, 384, 8, 64, 2]), edge_ints)),
    st.tuples(st.just("config_raw"), st.sampled_from(["config", "encoder_config"]),
              st.sampled_from(["", "{", "[]", "null", "{}", "nan", '{"embed_dim": 1e400}', repeat("[", 100_000)])),
    st.tuples(st.just("raw"), st.sampled_from(["", "{}", "[]", "null", "{", repeat("[", 100_000), repeat('{"a":', 50_000),
                                               b"\xff\xfe", '{"__metadata__": {}}', '{"x": NaN}', " " * 100,
                                               '{"__metadata__": {"format": "ace-encoder"}}'])),
    st.tuples(st.just("pad"), st.sampled_from([1, 7, 1000])),
    st.tuples(st.just("duplicate_key"), tensor_sel, st.sampled_from([[0, 4], [0, 384], [2**63 - 4, 0]])),
)
data_op = st.one_of(
    st.tuples(st.just("set_float"), tensor_sel, st.integers(0, 10**6),
              st.sampled_from([NAN, INF, -INF, 3.4e38, -1.0, 0.0, 1e-45, -3.4e38])),
    st.tuples(st.just("fill_tensor"), tensor_sel, st.sampled_from([NAN, 0.0, -1.0, 1e30, 3.4e38])),
    st.tuples(st.just("flip"), st.integers(0, 2**40), st.integers(0, 7)),
    st.tuples(st.just("bytes"), st.integers(0, 2**40), st.sampled_from([b"\xff\xff\xff\x7f", b"\x00\x00\xc0\x7f",
                                                                      b"\xff" * 64, b"\x00" * 64])),
)
region = st.sampled_from(["len", "header", "header", "data", "any"])
byte_op = st.one_of(
    st.tuples(st.just("flip"), region, st.integers(0, 2**40), st.integers(0, 7)),
    st.tuples(st.just("bytes"), region, st.integers(0, 2**40), st.sampled_from([b"\xff" * 4, b"\x00" * 4, b"\x00",
                                                                              b'"', b"}", b"9" * 20, b"\xff" * 200])),
    st.tuples(st.just("truncate"), region, st.integers(0, 2**40)),
    st.tuples(st.just("append"), st.sampled_from([b"\x00", b"x" * 100, b"\x00" * 4096])),
    st.tuples(st.just("header_len"), st.sampled_from([0, 1, 2, 7, 8, 2**63, 2**64 - 1, 2**32, 100_000_000, 10**12,
                                                      4880, 2**63 - 1])),
    st.tuples(st.just("header_len_delta"), st.sampled_from([-1, 1, -8, 8, 2**63, -2**63, 2**64 - 1])),
)


def checkpoint_cases(base):
    other = "trainer" if base == "encoder" else "encoder"
    return st.fixed_dictionaries({
        "op": st.just("load"), "base": st.just(base),
        "loader": st.sampled_from([base] * 5 + [other]),
        "data_ops": st.lists(data_op, max_size=2),
        "json_ops": st.lists(json_op, max_size=3),
        "fix_crc": st.sampled_from([True, True, False]),
        "byte_ops": weighted((65, st.just([])), (35, st.lists(byte_op, min_size=1, max_size=2))),
        "use": st.booleans(),
        "roundtrip": st.sampled_from([False, False, True]),
    }).filter(lambda c: c["data_ops"] or c["json_ops"] or c["byte_ops"])


# ----------------------------------------------------------------------------- command line

TINY_CONFIG = {k: v for k, v in TINY.items() if k not in ("encoder", "batch_size", "epochs", "steps_per_epoch")}
config_texts = st.one_of(
    st.just(json.dumps(TINY_CONFIG)),
    st.lists(config_field, min_size=1, max_size=2).map(
        lambda fields: _dump({**TINY_CONFIG, **{k: v for k, v in fields if _json_safe(v)}})),
    st.sampled_from(["", "[]", "{", "null", "5", '{"unknown": 1}', '{"grid": 5}', '{"lr": 1e400}',
                     '{"batch_size": 1e400}', '{"lr": NaN}', '"x"', "\xff", '{"grid": {"image_size": 1e400}}',
                     "@DEEP", json.dumps([TINY_CONFIG])]))


def _json_safe(v):
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _dump(d):
    return json.dumps(d)


def _opts(d):
    out = []
    for k, v in d.items():
        if v is None:
            continue
        out.append(k)
        if v is not True:
            out.append(v)
    return out


int_option = st.one_of(st.sampled_from(["-5", "0", "x", "1e3", "", " 2", "0x10", "2.0", str(2**62), str(2**62 + 1),
                                        str(2**64), "99999999999", "\u00b2", "-0", "+1", "1_000"]))
small_valid = st.sampled_from(["1", "2", "3"])


def _pretrain_args(options):
    base = {"--preset": "vit_nano", "--batch-size": "2", "--steps": "2", "--image-size": "64",
            "--config": "@CONFIG:" + json.dumps(TINY_CONFIG), "--out": "@OUT"}
    for k, v in options:
        base[k] = v
    if "--epochs" in dict(options) and "--steps" not in dict(options):
        base.pop("--steps")
    return ["pretrain"] + _opts(base)


pretrain_option = st.one_of(
    st.tuples(st.sampled_from(["--steps", "--epochs", "--batch-size", "--checkpoint-every"]),
              st.one_of(small_valid, int_option)),
    st.tuples(st.just("--image-size"), st.sampled_from(["32", "48", "64", "100", "128", "0", "-5", "x", str(2**31),
                                                        str(2**62), "1000000000", "65"])),
    st.tuples(st.just("--seed"), st.sampled_from(["0", "1", str(2**64 - 1), str(2**64), "-1", "x"])),
    st.tuples(st.just("--threads"), st.sampled_from(["1", "2", "0", "-1", "1024", "1025", str(2**62), "x"])),
    st.tuples(st.just("--lr"), st.sampled_from(["nan", "-1", "inf", "0", "1e-3", "abc", "1e10", "1e400", "-0", "5e-3"])),
    st.tuples(st.just("--preset"), st.sampled_from(["vit_nano", "vit_huge", "", "vit_tiny"])),
    st.tuples(st.just("--objective"), st.sampled_from(["ace", "dino", "comp", "comp+decomp", "x"])),
    st.tuples(st.just("--recipe"), st.sampled_from(["paper", "authors", "x"])),
    st.tuples(st.just("--precision"), st.sampled_from(["auto", "fp32", "bf16", "fp16"])),
    st.tuples(st.just("--data"), st.sampled_from(["@IMAGES", "@JUNK", "@MIXED", "@EMPTY", "@MISSING", "/dev/null",
                                                  "@ENC", "@LIST:images/ok0.png|missing.png", "@LIST:", "@LIST:\xff",
                                                  "@FILE"])),
    st.tuples(st.just("--config"), config_texts.map(lambda t: "@CONFIGDEEP" if t == "@DEEP" else "@CONFIG:" + t)),
    st.tuples(st.just("--resume"), st.sampled_from(["@RUN:ok", "@RUN:missing", "@RUN:{}", "@RUN:[]", "@RUN:x",
                                                    '@RUN:{"seed": -1, "data": 5, "steps": "x"}',
                                                    '@RUN:{"seed": 0, "data": null, "steps": 100000000000}',
                                                    "@MUT:0", "@MUT:3", "@MUT:4", "@MUT:7", "@MISSING", "@DIR",
                                                    "@ENC"])),
    st.tuples(st.just("--out"), st.sampled_from(["@OUT", "@DIR", "@FILE", "@DEEP"])),
)
pretrain_cases = st.lists(pretrain_option, max_size=3).map(
    lambda opts: {"op": "cli", "args": _pretrain_args(opts)})


def _embed_args(d):
    return ["embed"] + _opts(d)


embed_cases = st.fixed_dictionaries({
    "--checkpoint": st.sampled_from(["@ENC", "@ENC", "@RUN:ok", "@MUT:1", "@MUT:2", "@MUT:5", "@MUT:6", "@MUT:7",
                                     "@MUT:9", "@MISSING", "@DIR", "/dev/null", "@FILE", None]),
    "--data": st.sampled_from(["@IMAGES", "@IMAGES", "@JUNK", "@MIXED", "@EMPTY", "@MISSING", "/dev/null", "@ENC",
                               "@LIST:images/ok0.png", "@LIST:missing.png|#x||", "@LIST:/", None]),
    "--out": st.sampled_from(["@NPZ", "@NPZ", "@DIR", "@DEEP", "/dev/null", "@FILE", None]),
}, optional={
    "--tokens": st.just(True),
    "--batch-size": st.one_of(small_valid, int_option),
    "--threads": st.sampled_from(["1", "2", "0", "1025", "x"]),
}).map(lambda d: {"op": "cli", "args": _embed_args(d)})

JSRT_SPECS = ["junkimage", "nomask", "split:", "split:[]", "split:{", 'split:{"train": 5}',
              'split:{"train": ["JPCLN001", "NOPE"]}', 'split:{"train": [5]}', "csv:image,x|JPCLN001,5",
              "csv:image,structure,index,x,y|JPCLN001,heart,x,5,5", "csv:image,structure,index,x,y|JPCLN001,heart,999,5,5",
              "csv:image,structure,index,x,y|JPCLN001,heart,0,nan,inf", "csv:\xff\xfe", 'split:{"train": []}']
evaluate_data = st.sampled_from(["@JSRT:" + s for s in JSRT_SPECS] + ["@MISSING", "@EMPTY", "@IMAGES", "/dev/null"])
if os.environ.get("ACE_FUZZ_SLOW_CLI") == "1":
    # Full evaluations (30-60 s each): only in the long local run.
    evaluate_data = st.one_of(evaluate_data, st.sampled_from([None, "@JSRT:ok"]))
def _evaluate_args(d):
    which = d.pop("which")
    return {"op": "cli", "args": ["evaluate"] + (list(which) if which else []) + _opts(d)}


evaluate_cases = st.fixed_dictionaries({
    "which": weighted((45, st.tuples(st.just("--random-init"), st.sampled_from(["vit_nano", "vit_nano", "vit_huge", "",
                                                                              "x"]))),
                      (45, st.tuples(st.just("--checkpoint"), st.sampled_from(["@ENC", "@ENC", "@MUT:1", "@MUT:0",
                                                                               "@MISSING", "@DIR", "@FILE",
                                                                               "@RUN:ok"]))),
                      (10, st.just(None))),
    "--data": evaluate_data,
    "--out": st.sampled_from(["@OUT", "@FILE"]),
}, optional={
    "--quick": st.just(True), "--seed": st.sampled_from(["0", "-1", str(2**64), "x"]),
    "--threads": st.sampled_from(["1", "0", "x"]),
}).map(_evaluate_args)

# ----------------------------------------------------------------------------- lifetimes and threads

lifetime_cases = st.fixed_dictionaries({
    "op": st.just("lifetime"),
    "source": st.sampled_from(["student", "teacher", "loaded_student", "loaded_teacher", "copy"]),
    "churn": st.sampled_from([0, 1, 3]),
    "calls": st.one_of(train_triplet, st.lists(encoder_call, max_size=3)),
})

_valid_input = {ARRAY: {"dtype": "float32", "shape": [2, "C", "S", "S"], "fill": "normal", "layout": "c"}}
_valid_images = {ARRAY: {"dtype": "uint8", "shape": [2, 40, 40], "fill": "bytes", "layout": "c"}}
_step_images = {ARRAY: {"dtype": "float32", "shape": [2, 64, 64], "fill": "unit", "layout": "c"}}
concurrent_call = st.sampled_from([
    ("forward_features", (_valid_input,)), ("forward_train", (_valid_input,)), ("embed", (_valid_images,)),
    ("state_dict", ()), ("load_own_state", ()), ("adamw_step", (1e-4,)), ("backward_match", ()), ("save", ()),
    ("precision", ("fp32",)), ("precision", ("auto",)), ("threads", (1,)), ("threads", (2,)),
    ("backward", ({ARRAY: {"dtype": "float32", "shape": [2, "T", "D"], "fill": "normal", "layout": "c"}},)),
])
concurrent_trainer_call = st.one_of(concurrent_call, st.sampled_from([("step", (_step_images,)),
                                                                      ("trainer_save", ())]))
concurrent_cases = st.one_of(
    st.fixed_dictionaries({"op": st.just("concurrent"), "target": st.just("encoder"),
                           "threads": st.lists(st.lists(concurrent_call, min_size=1, max_size=4), min_size=2,
                                               max_size=4)}),
    st.fixed_dictionaries({"op": st.just("concurrent"), "target": st.just("trainer"),
                           "threads": st.lists(st.lists(concurrent_trainer_call, min_size=1, max_size=3), min_size=2,
                                               max_size=3)}),
)
reinit_cases = st.fixed_dictionaries({
    "op": st.just("native"), "fn": st.just("reinit"), "which": st.sampled_from(["student", "teacher", "encoder"]),
    "args": st.sampled_from([("vit_nano", 1, 32), ("vit_tiny",), ("x",), (), ("vit_nano", 1, 16)])})
