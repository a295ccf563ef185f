"""The `ace` command: `ace pretrain`, `ace embed`, `ace evaluate`, `ace export`, `ace attention`,
`ace localize` (and `python -m ace ...`)."""
import argparse
import contextlib
import glob
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .preprocess import JSRT_MEAN, JSRT_STD
from .config import MODALITIES
from .runconfig import OBJECTIVES, RUN_DEFAULTS

PHANTOM_IMAGES = 64
CONFIG_HELP = """\
config files:
  --config FILE (YAML, or JSON if it ends in .json) holds the options above but --config,
  --set and --resume, by their long names with underscores (batch_size, checkpoint_every, ...),
  and every ace.PretrainConfig field (head_prototypes, teacher_temp, ...; grid and augment nest
  their fields). --set KEY=VALUE overrides single keys, dotted for nested fields; a VALUE is
  read as YAML. Later sources win: the recipe, --modality, the file, --set, then options. Unknown keys are
  errors. Relative paths (data, out) are taken from the current folder, as on the command line.

    # run.yaml
    data: images/
    preset: vit_small
    steps: 2000
    lr: 1e-3
    grid: {window: 5}

    ace pretrain --config run.yaml --set seed=3 grid.window=3 augment.clahe_p=0.3 --out runs/a

  OUT/config.yaml holds every resolved setting; ace pretrain --config OUT/config.yaml --out NEW
  repeats the run exactly.
"""


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ValueError, OSError, MemoryError) as e:     # ACEError and ImageReadError are ValueErrors
        print(f"ace {args.command}: error: {e or type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ace {args.command}: interrupted", file=sys.stderr)
        return 130


# argparse types: a bad value exits with status 2 and a message naming the option.
def int_in(lo, hi, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be {what} in [{lo}, {hi}], got {value}")
        return value
    return parse


positive_int = int_in(1, 2**62, "a positive integer")
seed_int = int_in(0, 2**64 - 1, "an integer seed")
thread_count = int_in(1, 1024, "a thread count")


def finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ace", description="ACE self-supervised pretraining for radiographs (Swift core).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain an encoder on a folder of images (or the phantom)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONFIG_HELP,
                       description="Pretrain an encoder with ACE (or a baseline). Writes OUT/config.yaml (every\n"
                                   "setting), OUT/config.json (the PretrainConfig), OUT/metrics.jsonl (one row per\n"
                                   "step), TensorBoard event files (tensorboard --logdir OUT), OUT/last.safetensors\n"
                                   "(the whole run, atomically, every --checkpoint-every steps, at the end and on\n"
                                   "Ctrl-C or SIGTERM, e.g. from a scheduler's time limit) and OUT/loss.png. Warns\n"
                                   "(once each, also in metrics.jsonl) when the run looks collapsed or stalled.\n\n"
                                   "Data-parallel on several processes: mpiexec -n N ace pretrain ... (pip install\n"
                                   "'.[mpi]'); rank 0 writes the files; --resume works on any N dividing the global\n"
                                   "batch. Threads per rank default to cores / ranks on the node; on one node, fewer\n"
                                   "ranks with more threads each usually win (ranks pay an allreduce per step).")
    p.add_argument("--data", help="folder (recursive), image file or .txt list of PNG/JPEG/TIFF/DICOM; "
                                  f"omitted: {PHANTOM_IMAGES} procedural chest phantoms (fundus phantoms for "
                                  "--modality fundus)")
    p.add_argument("--modality", choices=sorted(MODALITIES),
                   help="imaging modality: xray (the default: grey radiographs) or fundus (colour fundus "
                        "photographs: in_chans 3, images read as RGB, per-channel mean "
                        f"{MODALITIES['fundus']['mean']} and std {MODALITIES['fundus']['std']}, the circular "
                        "field of view masked (fov_mask), DINO's colour jitter (augment.color_jitter_p 0.8: "
                        "brightness/contrast 0.4, saturation 0.2, hue 0.1) and grayscale (p 0.2) instead of the "
                        "grey brightness/contrast, no CLAHE). Settings given in --config, --set or options win")
    p.add_argument("--preset", help="encoder: vit_nano, vit_tiny, vit_small, vit_base (default vit_tiny), or "
                   "swin_nano, swin_tiny, swin_small, swin_base (Swin view geometry: 256-px views of 8 x 8 "
                   "final tokens, one 32-px cell each, window_size 8)")
    p.add_argument("--objective", choices=sorted(OBJECTIVES),
                   help="ace (all three losses; the default), dino (baseline: global loss on random-resized crops), "
                        "or an ablation")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive_int, help="passes over the data (default 50)")
    length.add_argument("--steps", type=positive_int, help="optimizer steps (instead of --epochs)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per step (default 16); under mpiexec -n N, per rank (global batch N x this)")
    p.add_argument("--lr", type=finite_float, help="learning rate per 256 images (default 5e-4; scaled by batch/256)")
    p.add_argument("--image-size", type=positive_int,
                   help="images are resized to this square before grid cropping (default 512)")
    p.add_argument("--out", help="output folder (default runs/ace, or the resumed checkpoint's folder)")
    p.add_argument("--resume", help="continue the run saved in this checkpoint (e.g. OUT/last.safetensors)")
    p.add_argument("--seed", type=seed_int, help="seed of the weights, crops, augmentation and data order (default 0)")
    p.add_argument("--threads", type=thread_count, help="threads for the core (default: all cores)")
    p.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints (default 100)")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings (see config files below)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override settings: lr=0.001 grid.window=5 (see config files below)")
    p.add_argument("--recipe", choices=["paper", "authors"],
                   help="paper: the paper's settings (default); authors: the authors' released code where it "
                        "departs from the paper (the --config file and other options override it)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="matrix products: auto (bf16 where the CPU has AVX512-BF16 or AMX; the default), "
                        "bf16, or fp32 (the exact reference)")
    p.set_defaults(run=pretrain)

    e = sub.add_parser("embed", help="embed images with a checkpoint's (teacher) encoder",
                       description="Write CLS (and optionally patch-token) embeddings of every readable image "
                                   "to an .npz file with arrays cls (N, C), tokens (N, h, w, C) and paths (N,).")
    e.add_argument("--checkpoint", required=True, help="encoder or training-run checkpoint (.safetensors)")
    e.add_argument("--data", required=True, help="folder, image file or .txt list of images")
    e.add_argument("--out", required=True, help="output .npz file")
    e.add_argument("--tokens", action="store_true", help="also store the patch tokens")
    e.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    e.add_argument("--threads", type=thread_count, help="threads for the core (default: all cores)")
    e.set_defaults(run=embed)

    v = sub.add_parser("evaluate", help="measure an encoder: the paper's probes and transfer tasks, with a report",
                       description="Run every probe (compositionality, decompositionality, retrieval, landmark "
                                   "correspondence, landmark embeddings, symmetry, nodule classification, "
                                   "segmentation and key-point detection with few-shot) and write "
                                   "OUT/metrics.json, OUT/report.md and its figures.")
    which = v.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="encoder or training-run checkpoint (.safetensors)")
    which.add_argument("--random-init", metavar="PRESET", help="evaluate an untrained encoder of this preset")
    v.add_argument("--data", help="JSRT-layout folder (images/, masks/, split.json, landmarks_dev.csv); "
                                  "omitted: 60 phantoms with exact masks and landmarks. A colour encoder "
                                  "(in_chans 3, --modality fundus) is evaluated by FIRE-style pair correspondence "
                                  "on a folder of ace.data.fundus.write_folder (pairs/points.csv), omitted: "
                                  "fundus phantom pairs")
    v.add_argument("--out", default="runs/evaluate", help="output folder (default runs/evaluate)")
    v.add_argument("--quick", action="store_true", help="fewer trials and pairs, no sliding-window search")
    v.add_argument("--seed", type=seed_int, default=0, help="seed of the random-init encoder")
    v.add_argument("--threads", type=thread_count, help="threads for the core (default: all cores)")
    own = v.add_argument_group(
        "probes on your own labels", "With --labels, a logistic-regression probe per label on the frozen embeddings "
        "(instead of the suite): AUC per label on the data set's official test split, or on a seeded split "
        "(by patient where the layout names patients); OUT/metrics.json, OUT/report.md, OUT/embeddings.npz.")
    own.add_argument("--labels", metavar="FILE", help="labels CSV (or a ChestX-ray14 / CheXpert folder)")
    own.add_argument("--labels-format", choices=["auto", "chestxray14", "chexpert", "csv"], default="auto",
                     help="chestxray14: Data_Entry_2017*.csv; chexpert: train.csv/valid.csv; csv: path,label1,... "
                          "(1, 0, blank for unknown; optional split column); auto (default) tells them apart")
    own.add_argument("--uncertain", choices=["ignore", "zeros", "ones"], default="ignore",
                     help="CheXpert's uncertain (-1) labels: unknown (default), negative or positive")
    own.add_argument("--features", choices=["default", "cls", "mean"], default="default",
                     help="CLS token or mean patch token (default: the encoder's own)")
    own.add_argument("--test-fraction", type=finite_float, default=0.3,
                     help="share of patients (or images) in the test part of a seeded split (default 0.3)")
    own.add_argument("--split-seed", type=seed_int, default=0, help="seed of a seeded split (default 0)")
    own.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    v.set_defaults(run=evaluate)

    x = sub.add_parser("export", help="write an encoder as a timm model folder (model.safetensors + config.json)",
                       description="Write the encoder of a checkpoint to OUT/model.safetensors and OUT/config.json "
                                   "in timm's layout: timm.create_model('local-dir:OUT', pretrained=True) loads it, "
                                   "and so does timm.create_model(ARCH, pretrained=True, in_chans=1, num_classes=0, "
                                   "pretrained_cfg_overlay=dict(file='OUT/model.safetensors')) with the arguments "
                                   "the command prints.")
    x.add_argument("checkpoint", metavar="CKPT", help="training-run or encoder checkpoint (.safetensors)")
    x.add_argument("--out", required=True, help="output folder")
    x.add_argument("--which", choices=["teacher", "student"],
                   help="encoder of a training run (default teacher); not for encoder files")
    x.set_defaults(run=export)

    c = sub.add_parser("convert", help="read a PyTorch checkpoint (the authors' ACE Swin-B, DINO) into an encoder file",
                       description="Write the backbone of a PyTorch checkpoint as an ace encoder file (timm names, "
                                   "config and preprocessing in the metadata): the authors' released ACE Swin "
                                   "(Microsoft's Swin layout, student/teacher under module.backbone.), DINO's ViTs, "
                                   "or a timm state dict. The shape is read off the weights. Needs PyTorch "
                                   "(pip install torch), which ace does not depend on.")
    c.add_argument("checkpoint", metavar="PTH", help="PyTorch checkpoint (.pth)")
    c.add_argument("--out", required=True, help="encoder file to write (.safetensors)")
    c.add_argument("--which", choices=["teacher", "student"], default="teacher",
                   help="network of a student/teacher checkpoint (default teacher)")
    c.add_argument("--img-size", type=positive_int,
                   help="Swin input size, when the checkpoint stores no attention mask (e.g. 224, the paper's 448)")
    c.add_argument("--num-heads", type=positive_int, help="ViT heads, when no preset has the checkpoint's shape")
    c.add_argument("--mean", type=float, default=JSRT_MEAN,
                   help=f"intensity mean the encoder expects (stored with it; default {JSRT_MEAN})")
    c.add_argument("--std", type=float, default=JSRT_STD,
                   help=f"intensity std the encoder expects (default {JSRT_STD})")
    c.set_defaults(run=convert)

    a = sub.add_parser("attention", help="draw the last block's CLS attention of each head over the images",
                       description="For every image: the last block's attention of the class token's query to "
                                   "each patch, per head, drawn over the image as DINO shows it (OUT/NAME.png: the "
                                   "image, one panel per head, and their mean), and all maps in OUT/attention.npz "
                                   "(maps (N, heads, h, w), paths (N,)).")
    a.add_argument("checkpoint", metavar="CKPT", help="encoder or training-run checkpoint (.safetensors; the teacher)")
    a.add_argument("images", metavar="IMAGES", help="folder (recursive), image file or .txt list of images")
    a.add_argument("--out", required=True, help="output folder")
    a.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    a.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="matrix products (default auto, as ace embed)")
    a.add_argument("--threads", type=thread_count, help="threads for the core (default: all cores)")
    a.set_defaults(run=attention)

    g = sub.add_parser("localize", help="weakly supervised localization: Grad-CAM of a classifier fine-tuned on "
                                        "image labels, scored against lesion positions",
                       description="Fine-tune a copy of the encoder with a linear head on its mean token to tell "
                                   "lesion from no lesion (the train and val images), then draw the Grad-CAM heat "
                                   "map of the lesion class over every test image with a lesion (OUT/NAME.png) and, "
                                   "where the lesion's position is known, score it: pointing game (the map's peak "
                                   "inside the lesion's box) and IoU of the map thresholded at --threshold of its "
                                   "maximum with the box. Writes OUT/metrics.json and OUT/maps.npz.")
    g.add_argument("checkpoint", metavar="CKPT", help="encoder or training-run checkpoint (.safetensors; the teacher)")
    g.add_argument("--data", help="JSRT-layout folder (images/, split.json; nodule centres and radii from "
                                  "nodules.csv when present, labels from the names: JPCLN = nodule); omitted: 96 "
                                  "phantoms, every second one with a synthetic lesion of known position")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--image-size", type=positive_int, help="images are resized to this square (default: the "
                                                           "encoder's input size)")
    g.add_argument("--epochs", type=positive_int, default=20, help="fine-tuning passes over the images (default 20)")
    g.add_argument("--batch-size", type=positive_int, default=8, help="images per step (default 8)")
    g.add_argument("--lr", type=finite_float, default=1e-4, help="encoder learning rate (default 1e-4)")
    g.add_argument("--head-lr", type=finite_float, default=1e-2, help="head learning rate (default 1e-2)")
    g.add_argument("--tolerance", type=finite_float, default=0.0,
                   help="pointing game: how many pixels the peak may lie outside the box (default 0)")
    g.add_argument("--threshold", type=finite_float, default=0.5,
                   help="IoU: the map's region at or above this share of its maximum (default 0.5)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed of the training order (default 0)")
    g.add_argument("--threads", type=thread_count, help="threads for the core (default: all cores)")
    g.set_defaults(run=localize)
    return parser


# ----------------------------------------------------------------------------- pretrain

# The command's options that are settings, by config key (argparse's dest is the same name).
OPTION_KEYS = ("data", "preset", "objective", "epochs", "steps", "batch_size", "lr", "image_size", "out", "seed",
               "threads", "checkpoint_every", "recipe", "precision", "modality")


def resolve_settings(args):
    """The run's settings from --config, --set and the options, later sources winning."""
    from . import runconfig

    layers = []
    if args.config:
        layers.append(runconfig.check_layer(args.config, runconfig.read_file(args.config)))
    if args.overrides:
        layers.append(runconfig.check_layer("--set", runconfig.parse_overrides(args.overrides)))
    options = {key: getattr(args, key) for key in OPTION_KEYS if getattr(args, key) is not None}
    layers.append(runconfig.check_layer("command line", options))
    return runconfig.RunSettings(runconfig.merge(layers))


def saved_run_state(trainer, checkpoint):
    """The state `ace pretrain` keeps with a run (data, seed, total steps, data order): in the
    checkpoint itself, or for runs saved before it was, in run.json beside it."""
    from .data.images import ORDERS
    from .errors import ACEError
    state = trainer.run_state
    if state is not None:
        if not (isinstance(state, dict) and {"seed", "data", "steps"} <= state.keys()
                and state.get("data_order") in ORDERS):
            raise ACEError(f"{checkpoint}: its run state is not one `ace pretrain` wrote: {state!r}")
        return state
    legacy = Path(checkpoint).parent / "run.json"
    if not legacy.exists():
        raise ACEError(f"{checkpoint} holds no run state (data, seed, length of the run) and there is no run.json "
                       "beside it: it was not saved by `ace pretrain`; continue it from Python with ace.Trainer.load")
    try:
        run = json.loads(legacy.read_bytes())
        state = {"seed": run["seed"], "data": run["data"], "steps": run["steps"], "data_order": "chained"}
    except (ValueError, KeyError, TypeError) as e:
        raise ACEError(f"{legacy} (written by the run being resumed) is damaged: {e!r}") from None
    return dict(run, **state)


def open_stream(data, seed, image_size, batch_size, group, channels=1, order="per_epoch"):
    """The run's batches (batch_size: the global batch); each rank gets its part of each.
    Colour runs (channels 3) read RGB; without data they train on fundus phantoms."""
    from .data import ImageStream, fundus, phantom
    from .errors import ACEError
    if batch_size % group.size:
        raise ACEError(f"the global batch of {batch_size} does not split over {group.size} ranks")
    if data is None:
        source = fundus if channels == 3 else phantom
        data, _ = source.batch(range(PHANTOM_IMAGES), size=image_size)
    return ImageStream(data, batch_size, image_size, seed=seed, shard=(group.rank, group.size), channels=channels,
                       order=order)


def set_threads(threads, group):
    """--threads, or under MPI the node's cores shared among its ranks (not all cores each)."""
    import ace
    if threads is None and group.size > 1:
        threads = max(1, (os.cpu_count() or 1) // group.local_size())
    if threads is not None:
        ace.set_num_threads(threads)


def start_run(args, group):
    """A new run from the settings: (trainer, stream, run settings, total steps); rank 0
    writes the settings into the run folder."""
    import ace
    from .trainer import Trainer

    settings = resolve_settings(args)
    run, cfg = settings.run, settings.config
    set_threads(run["threads"], group)
    per_rank = cfg.batch_size
    cfg.batch_size = per_rank * group.size     # the learning-rate scaling uses the global batch
    stream = open_stream(run["data"], run["seed"], cfg.grid.image_size, cfg.batch_size, group, cfg.in_chans)
    total = settings.fit_to_data(len(stream))
    if not group.is_root:
        return group.share_run(None), stream, run, total
    trainer = group.share_run(Trainer(cfg, seed=run["seed"]))
    cfg.batch_size = per_rank       # config.yaml repeats the run as given (per rank) ...
    settings_yaml = settings.to_yaml()
    cfg.batch_size = per_rank * group.size     # ... config.json is what the core trains with
    out = Path(run["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(settings_yaml)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    # What resuming needs beyond the trainer's own state, saved in every checkpoint.
    data = None if run["data"] is None else str(Path(run["data"]).absolute())
    trainer.run_state = {"seed": run["seed"], "data": data, "steps": total, "data_order": "per_epoch",
                         "ranks": group.size, "precision": dict(ace.precision_info(), precision=trainer.precision)}
    (out / "metrics.jsonl").write_text("")
    return trainer, stream, run, total


def resume_run(args, group):
    """The run saved in --resume, continued with the settings it started with (on any number
    of ranks that divides its global batch). Rank 0 reads the files and shares the run."""
    from .errors import ACEError
    from .trainer import Trainer

    if args.config or args.overrides:
        raise ACEError("--resume continues a run with the settings it started with; --config and --set cannot "
                       "change them")
    set_threads(args.threads, group)
    trainer, saved = None, None
    if group.is_root:
        trainer = Trainer.load(args.resume)
        saved = saved_run_state(trainer, args.resume)
        if args.data:
            saved["data"] = str(Path(args.data).absolute())   # the data moved: later checkpoints say where
        trainer.run_state = saved
    trainer = group.share_run(trainer)
    saved = group.broadcast(saved)
    run = dict(RUN_DEFAULTS, seed=saved["seed"], data=saved["data"], out=args.out or str(Path(args.resume).parent))
    if args.checkpoint_every is not None:
        run["checkpoint_every"] = args.checkpoint_every
    cfg = trainer.config
    stream = open_stream(run["data"], run["seed"], cfg.grid.image_size, cfg.batch_size, group, cfg.in_chans,
                         saved["data_order"])
    return trainer, stream, run, saved["steps"]


def pretrain(args):
    from .distributed import world

    group = world()
    with group.abort_on_error():
        return pretrain_on(group, args)


class NoLog:
    """The TensorBoard log of ranks other than 0: they write nothing."""

    def step(self, *args): pass
    warning = figure = flush = close = step


def pretrain_on(group, args):
    from .distributed import StepFailed
    from .runlog import Monitor, TensorBoardLog

    trainer, stream, run, total = resume_run(args, group) if args.resume else start_run(args, group)
    out = Path(run["out"])
    root = group.is_root
    if root:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "last.safetensors"
    start = trainer.steps_done
    history = group.broadcast(read_metrics(out, upto=start) if root else None)
    board = TensorBoardLog(out, start + 1, trainer.config.losses) if root else NoLog()
    monitor = Monitor(trainer.config, total, history)

    # Ctrl-C and SIGTERM (what schedulers such as SLURM send before killing a job) both stop
    # the run after the current step and save it. The handlers stay until the final save
    # is written, so a second signal cannot cut it short.
    interrupted = []
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, _: interrupted.append(signum)) for sig in stop_signals}
    try:
        try:
            failure = train_loop(trainer, stream, history, out, ckpt, (start, total, run["checkpoint_every"]),
                                 interrupted, board, monitor, group)
            if root:
                trainer.save(ckpt)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stream.close()
        done = history[-1]["step"] if history else start
        if root:
            finish_logs(history, out, board, done)
    finally:
        board.close()
    group.barrier()     # no rank leaves (and tears MPI down) before rank 0 has saved
    if not root:
        return (128 + interrupted[0]) if interrupted else (1 if failure else 0)
    if failure:
        raise StepFailed(f"{failure} (steps up to {done} are saved in {ckpt})")
    if interrupted:
        name = signal.Signals(interrupted[0]).name
        print(f"interrupted at step {done} ({name}): saved {ckpt}; continue with --resume {ckpt}")
        return 128 + interrupted[0]
    cpu = f" ({history[-1]['cpu_s'] / 60:.1f} min of CPU)" if history and "cpu_s" in history[-1] else ""
    print(f"finished {done} steps{cpu}: {ckpt}, {out / 'metrics.jsonl'}, {out / 'loss.png'}, "
          f"TensorBoard events in {out}")
    return 0


def finish_logs(history, out, board, step):
    """The loss figure, as a PNG and in TensorBoard (left out, with a note, without matplotlib:
    the curves are in metrics.jsonl and TensorBoard anyway)."""
    from .errors import ACEError
    from .extras import needs

    try:
        with needs("the loss figure (loss.png)"):
            from .plots import loss_curves
    except ACEError as e:
        print(f"note: {e}", file=sys.stderr)
        return
    loss_curves(history, out / "loss.png")
    board.figure("loss", out / "loss.png", step)


def read_metrics(out, upto=None):
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
            # A run killed while writing a row leaves it torn; that step is redone anyway.
    return [r for r in rows if upto is None or r["step"] <= upto]


def train_loop(trainer, stream, history, out, ckpt, span, interrupted, board, monitor, group):
    """Steps from `start` to `total` (span = start, total, checkpoint every); returns the
    core's message if a step failed (e.g. a NaN loss: the core then leaves the run as it
    was), else None. Ranks other than 0 write nothing; they all stop at the same step."""
    from tqdm import tqdm

    from .errors import ACEError

    start, total, every = span
    root = group.is_root
    metrics = out / "metrics.jsonl"
    # Rows written after the checkpoint being resumed belong to steps that will be redone.
    if root:
        metrics.write_text("".join(json.dumps(r) + "\n" for r in history))
    batches = iter(stream.seek(start))   # the data order continues where the run stopped
    bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, disable=None if root else True)
    failure = None
    # CPU seconds of the run (this process, all its threads; rank 0's with MPI), counted on from
    # the resumed step: a budget in CPU time holds across stops and resumes.
    cpu_origin = time.process_time() - (history[-1].get("cpu_s", 0.0) if history else 0.0)
    with (metrics.open("a") if root else open(os.devnull, "w")) as log:
        for step in range(start, total):
            if interrupted and group.size == 1:
                break
            batch = next(batches)
            t0 = time.perf_counter()
            try:
                # Ranks decide together to stop (a signal on any rank) after this step.
                stats, stop = group.step(trainer, batch, stop=bool(interrupted))
            except ACEError as e:
                failure = str(e)
                board.warning("divergence", failure, step + 1)
                break
            stats["images_per_s"] = len(batch) * group.size / (time.perf_counter() - t0)
            stats["cpu_s"] = time.process_time() - cpu_origin
            if group.size > 1:
                stats["allreduce_s"] = group.allreduce_seconds
            history.append(stats)
            warnings = monitor.check(history)
            if warnings:
                stats["warnings"] = warnings
            for kind, message in warnings.items() if root else ():
                tqdm.write(f"warning: {message}", file=sys.stderr)
                board.warning(kind, message, stats["step"])
            log.write(json.dumps(stats) + "\n")
            log.flush()
            board.step(stats)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", glob=f"{stats['global']:.3f}",
                            comp=f"{stats['comp']:.4f}", decomp=f"{stats['decomp']:.4f}",
                            img_s=f"{stats['images_per_s']:.1f}")
            if stats["step"] % every == 0 and stats["step"] < total and root:
                trainer.save(ckpt)
                board.flush()       # the events of the saved steps are on disk with them
            if stop and group.size > 1:
                if not interrupted:
                    interrupted.append(signal.SIGTERM)    # another rank was signalled
                break
    bar.close()
    return failure


# ----------------------------------------------------------------------------- embed

def embed(args):
    from .distributed import world

    group = world()
    with group.abort_on_error():
        return embed_on(group, args)


def embed_on(group, args):
    """Under mpiexec each rank embeds its contiguous part of the images; rank 0 gathers
    them in input order and writes the file."""
    from .data import ImageReadError, load_images
    from .encoder import Encoder

    set_threads(args.threads, group)
    enc = Encoder.load(args.checkpoint)
    images, paths = load_images(args.data, size=enc.config["img_size"], shard=(group.rank, group.size),
                                channels=enc.config["in_chans"])
    if len(images):
        cls, tokens = enc.embed(enc.mask_field_of_view(images), batch_size=args.batch_size)
    else:
        cls = tokens = None
    parts = group.gather((cls, tokens, [str(p) for p in paths]))
    if not group.is_root:
        return 0
    parts = [p for p in parts if p[0] is not None]
    if not parts:
        raise ImageReadError(f"no readable image in {args.data}")
    cls = np.concatenate([p[0] for p in parts])
    tokens = np.concatenate([p[1] for p in parts]) if args.tokens else None
    paths = [q for p in parts for q in p[2]]
    arrays = {"cls": cls, "paths": np.array([str(p) for p in paths])}
    if args.tokens:
        arrays["tokens"] = tokens
    out = Path(args.out)
    write_npz(out, arrays)
    shapes = f"cls {cls.shape}" + (f", tokens {tokens.shape}" if args.tokens else "")
    print(f"embedded {len(paths)} images -> {out} ({shapes})")
    return 0


def write_npz(path, arrays):
    """Write arrays to an .npz file atomically: into a unique temporary file in the same folder,
    fsynced, then renamed over `path`, so a kill or a full disk never leaves a truncated file
    and never a temporary one (stale ones of killed writers are removed first). Devices and
    pipes (e.g. /dev/stdout) are written directly: they cannot be replaced by a rename."""
    from .errors import ACEError
    if path.is_dir():
        raise ACEError(f"cannot write {path}: it is a folder; give a file name")
    try:
        if path.exists() and not path.is_file():
            with open(path, "wb") as f:
                np.savez(f, **arrays)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        # Unique per process and per call; created like any new file (mode 666 less the umask).
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}.npz")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)        # makes the rename itself durable
        finally:
            os.close(folder)
    except OSError as e:
        raise ACEError(f"cannot write {path}: {e.strerror or e}") from e


def remove_stale_temporaries(path):
    """Delete `.NAME.tmp-PID...` files next to path whose writer (PID) no longer runs."""
    prefix = f".{path.name}.tmp-"
    for tmp in path.parent.glob(glob.escape(prefix) + "*"):
        pid = tmp.name[len(prefix):].split("-")[0].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (PermissionError, OverflowError):
            pass                    # another user's live process, or not a PID at all


# ----------------------------------------------------------------------------- evaluate

def evaluate(args):
    import ace
    from .data import load_jsrt, phantom_set
    from .encoder import Encoder
    from .errors import ACEError
    from .extras import needs

    with needs("ace evaluate"):
        from .evaluate import run_suite, write_report     # brings in everything --labels needs too
    if args.threads is not None:
        ace.set_num_threads(args.threads)
    if args.labels and args.data:
        raise ACEError("--labels probes your labelled images; --data names the suite's JSRT folder: give one")
    if args.checkpoint:
        enc, title = Encoder.load(args.checkpoint), f"Evaluation of {args.checkpoint}"
    else:
        enc, title = Encoder(args.random_init, seed=args.seed), f"Evaluation of a random-init {args.random_init}"
    if args.labels:
        return evaluate_labels(args, enc, title)
    if enc.config["in_chans"] == 3:
        return evaluate_fundus(args, enc, title)
    data = load_jsrt(args.data) if args.data else phantom_set()
    out = Path(args.out)
    metrics, figures = run_suite(enc, data, out, quick=args.quick)
    metrics["encoder"] = enc.config
    metrics["checkpoint"] = args.checkpoint or f"random-init {args.random_init} seed {args.seed}"
    metrics["data"] = data.source
    metrics["quick"] = args.quick
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(out / "report.md", title, data.source, metrics, figures, enc.config)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return 0


def evaluate_fundus(args, enc, title):
    """A colour encoder: FIRE-style correspondence (paper Fig. 10) on image pairs of one eye,
    from --data (a folder written by ace.data.fundus.write_folder with pairs/points.csv) or
    procedural fundus phantom pairs with their exact control points."""
    from .data import fundus
    from .probes import pair_correspondence

    if args.data:
        pairs, source = fundus.read_pairs(args.data), str(args.data)
        stride = 16 if args.quick else 8
    else:
        count, size = (4, 256) if args.quick else (12, 512)
        made = [fundus.pair(10_000 + k, size) for k in range(count)]
        pairs = [(p.first, p.second, p.points_first, p.points_second) for p in made]
        source, stride = f"{count} fundus phantom pairs of {size} px", 16 if args.quick else 8
    query, key, q_pts, k_pts = (list(x) for x in zip(*pairs))
    result = pair_correspondence(enc, query, key, q_pts, k_pts, stride=stride)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result["errors"] = [np.asarray(e).round(3).tolist() for e in result["errors"]]
    metrics = {"pair_correspondence": result, "encoder": enc.config, "data": source, "quick": args.quick,
               "checkpoint": args.checkpoint or f"random-init {args.random_init} seed {args.seed}"}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    lines = [f"# {title}", "", f"Data: {source}.", "",
             "FIRE-style correspondence: each control point of the first image of a pair located in the "
             f"second by the nearest {result['patch']}-px window embedding (stride {result['stride']} px).", "",
             "| | mean error (px) | median error (px) | AUC (success over 1-25 px) |", "| --- | --- | --- | --- |",
             f"| encoder | {result['mean_error']:.1f} [{result['ci95'][0]:.1f}, {result['ci95'][1]:.1f}] | "
             f"{result['median_error']:.1f} | {result['auc']:.3f} |",
             f"| identity (query coordinates) | {result['identity_error']:.1f} | | {result['identity_auc']:.3f} |",
             "", f"{result['pairs']} pairs, {result['points']} points."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"fundus pair correspondence: mean error {result['mean_error']:.1f} px over {result['points']} points "
          f"(identity {result['identity_error']:.1f} px): wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return 0


def evaluate_labels(args, enc, title):
    """The linear probe per label of --labels (see ace.labelprobe)."""
    from .data.labels import read_labels
    from .labelprobe import run_label_probe, write_outputs

    table = read_labels(args.labels, args.labels_format, uncertain=args.uncertain)
    out = Path(args.out)
    metrics = run_label_probe(enc, table, out, features=args.features, test_fraction=args.test_fraction,
                              seed=args.split_seed, batch_size=args.batch_size)
    metrics["encoder"] = enc.config
    metrics["checkpoint"] = args.checkpoint or f"random-init {args.random_init} seed {args.seed}"
    write_outputs(out, f"{title}: linear probes on {Path(args.labels).name}", metrics)
    mean = metrics["mean_auc"]
    print(f"probed {len(table.names)} labels of {len(table)} images (mean AUC "
          f"{'-' if mean is None else f'{mean:.3f}'}): wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return 0


# ----------------------------------------------------------------------------- export

def export(args):
    from .export import export_timm, load_commands

    config = export_timm(args.checkpoint, args.out, args.which)
    out = Path(args.out)
    print(f"exported the {config['ace']['which']} ({config['ace']['preset']}) of {args.checkpoint} to "
          f"{out / 'model.safetensors'} and {out / 'config.json'}; load it with")
    for line in load_commands(out, config):
        print(f"  {line}")
    return 0


# ----------------------------------------------------------------------------- convert

def convert(args):
    from .convert import convert as convert_checkpoint

    enc = convert_checkpoint(args.checkpoint, args.out, which=args.which, img_size=args.img_size,
                             num_heads=args.num_heads, mean=args.mean, std=args.std)
    c = enc.config
    shape = f"depths {c['depths']}" if enc.is_swin else f"depth {c['depth']}"
    print(f"wrote the {args.which} backbone of {args.checkpoint} to {args.out}: {c['preset']} "
          f"(embed_dim {c['embed_dim']}, {shape}, num_heads {c['num_heads']}, in_chans {c['in_chans']}, "
          f"img_size {c['img_size']})")
    return 0


# ----------------------------------------------------------------------------- attention

def attention(args):
    import ace
    from .data import load_images
    from .encoder import Encoder
    from .extras import needs

    with needs("ace attention"):
        from .plots import attention_maps
    if args.threads is not None:
        ace.set_num_threads(args.threads)
    enc = Encoder.load(args.checkpoint)
    enc.precision = args.precision
    images, paths = load_images(args.images, size=enc.config["img_size"])
    maps = enc.attention(images, batch_size=args.batch_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = figure_names(paths)
    for image, m, path, name in zip(images, maps, paths, names):
        attention_maps(image, m, out / name, title=f"{path.name}: last-block attention of the class token")
    write_npz(out / "attention.npz", {"maps": maps, "paths": np.array([str(p) for p in paths])})
    print(f"drew the attention of {maps.shape[1]} heads on {len(paths)} images: {out / names[0]}"
          + (f" ... {out / names[-1]}" if len(names) > 1 else "") + f"; maps {maps.shape} in {out / 'attention.npz'}")
    return 0


# ----------------------------------------------------------------------------- localize

def localize(args):
    import ace
    from . import probes
    from .data import lesion_phantoms, load_jsrt_nodules
    from .encoder import Encoder
    from .plots import gradcam_overlay
    from .probes.gradcam import boxes_from_points

    if args.threads is not None:
        ace.set_num_threads(args.threads)
    enc = Encoder.load(args.checkpoint)
    size = args.image_size or enc.config["img_size"]
    data = load_jsrt_nodules(args.data, size) if args.data else lesion_phantoms(96, size)
    train = np.sort(np.concatenate([data.split["train"], data.split.get("val", np.zeros(0, int))]))
    test = data.split["test"]
    boxes = boxes_from_points(data.centres[test], data.radii[test])
    known = np.isfinite(boxes).all(axis=1)
    settings = dict(epochs=args.epochs, batch=args.batch_size, lr=args.lr, head_lr=args.head_lr)
    r = probes.localization(enc, (data.images[train], data.labels[train]), (data.images[test], data.labels[test]),
                            boxes if known.any() else None, tolerance=args.tolerance, threshold=args.threshold,
                            finetune=settings, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [data.names[test[i]] for i in r["boxed"]]
    per_image = []
    for k, (i, name) in enumerate(zip(r["boxed"], names)):
        box = boxes[i] if known[i] else None
        title = name if r["hits"] is None else f"{name}: peak {'inside' if r['hits'][k] else 'outside'} the box"
        gradcam_overlay(data.images[test[i]], r["maps"][k], out / f"{name}.png", box=box, title=title)
        per_image.append({"image": name, "hit": None if r["hits"] is None else bool(r["hits"][k]),
                          "iou": None if r["ious"] is None else float(r["ious"][k])})
    metrics = {key: r[key] for key in ("pointing_game", "ci95", "chance", "iou", "iou_ci95", "auc", "accuracy",
                                       "tolerance", "threshold", "n_train", "n_test")}
    metrics.update(per_image=per_image, checkpoint=args.checkpoint, data=data.source, image_size=size,
                   finetune=settings, seed=args.seed)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float, allow_nan=False) + "\n")
    write_npz(out / "maps.npz", {"maps": r["maps"].astype(np.float32), "names": np.array(names)})
    scored = "" if r["pointing_game"] is None else (
        f"; pointing game {r['pointing_game']:.3f} (chance {r['chance']:.3f}), IoU {r['iou']:.3f}")
    print(f"classifier AUC {r['auc']:.3f} on {r['n_test']} test images{scored}: drew {len(names)} heat maps in "
          f"{out}, metrics in {out / 'metrics.json'}")
    return 0


def figure_names(paths):
    """NAME.png for each image, NAME-2.png and so on where names repeat (images of the same
    name in different folders)."""
    seen, names = {}, []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.png")
    return names
