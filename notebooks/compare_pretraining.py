# %% [markdown]
# Comparison of pretrained encoders with `ace evaluate`: every encoder measured the same way, with
# 95% bootstrap intervals over images, both representations (mean token and CLS token), the two
# landmark references that learn nothing (same coordinates, raw-pixel NCC template) on the same
# pairs, and the paper's figures beside ours. Run headless, in one of two ways:
#
#     python notebooks/compare_pretraining.py --runs runs/long/ace runs/long/dino [--quick] [--name long]
#
# evaluates existing training runs (their last.safetensors, or any .safetensors given instead of a
# folder) and a random-init encoder of the same preset;
#
#     python notebooks/compare_pretraining.py [--steps 600] [--stage pretrain|evaluate|all]
#
# first pretrains random init's competitors, the DINO-style baseline, ACE and its ablations, with
# the same budget each (same encoder, steps, batch, lr, seed, data), into --out.
#
# Evaluations go to EVAL_ROOT/NAME/ (metrics.json, report.md, figures); the comparison table and
# its figures to notebooks/results/NAME.md, with the exact commands and their seconds.

# %%
import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSRT = ROOT.parent / "shared" / "data" / "jsrt"
METHODS = ["ace", "dino", "comp", "comp+decomp"]

ap = argparse.ArgumentParser()
ap.add_argument("--runs", nargs="+", metavar="RUN",
                help="training-run folders (or .safetensors files) to evaluate instead of pretraining METHODS")
ap.add_argument("--data", default=str(JSRT), help="JSRT-layout folder, or 'phantom' for the built-in phantoms")
ap.add_argument("--preset", help="random-init preset (default: the first run's encoder, else vit_nano)")
ap.add_argument("--no-random-init", action="store_true", help="leave out the random-init encoder")
ap.add_argument("--quick", action="store_true", help="pass --quick to ace evaluate")
ap.add_argument("--threads", type=int, help="pass --threads to ace evaluate")
ap.add_argument("--reuse", action="store_true", help="keep an evaluation whose metrics.json exists")
ap.add_argument("--eval-root", default=str(ROOT / "runs" / "evaluations"), help="where evaluations go")
ap.add_argument("--name", default="compare", help="table name: RESULTS/NAME.md and RESULTS/NAME_*.png")
ap.add_argument("--results", default=str(ROOT / "notebooks" / "results"), help="folder of the table")
ap.add_argument("--steps", type=int, default=600)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--lr", type=float, default=5e-3)
ap.add_argument("--out", default=str(ROOT / "runs" / "compare"), help="pretraining runs (without --runs)")
ap.add_argument("--stage", default="all", choices=["pretrain", "evaluate", "all"])
args = ap.parse_args()
if importlib.util.find_spec("ace") is None:   # run from a source tree without `pip install`
    sys.path.insert(0, str(ROOT / "python"))


def run(cmd):
    """Run an `ace ...` command (as `python -m ace`, which works installed or not); seconds taken."""
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m"] + cmd, check=True)
    return round(time.time() - start)


def relative(command):
    """Paths as seen from the repository root, as the README's commands are."""
    return command.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")


# %% The encoders: existing runs, or equal-budget pretraining of METHODS
commands = []
if args.runs:
    encoders = {}
    for given in map(Path, args.runs):
        checkpoint = given if given.suffix == ".safetensors" else given / "last.safetensors"
        encoders[given.stem if given.suffix == ".safetensors" else given.name] = checkpoint
else:
    out = Path(args.out)
    encoders = {method: out / method / "last.safetensors" for method in METHODS}
    # The pretraining commands, kept for an evaluation stage run later.
    log = out / "pretrain_commands.json"
    if args.stage in ("pretrain", "all"):
        for method in METHODS:
            cmd = ["ace", "pretrain", "--data", str(JSRT / "images"), "--preset", args.preset or "vit_nano",
                   "--objective", method, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                   "--lr", str(args.lr), "--seed", "0", "--out", str(out / method)]
            commands.append((cmd, f"{run(cmd)} s"))
        log.write_text(json.dumps(commands, indent=2))
    if args.stage == "pretrain":
        sys.exit(0)
    commands = json.loads(log.read_text()) if log.is_file() else commands


def preset_of(checkpoint):
    """The encoder preset of a training run (its config.json beside the checkpoint), or None."""
    config = checkpoint.parent / "config.json"
    return json.loads(config.read_text()).get("encoder") if config.is_file() else None


preset = args.preset or next(filter(None, map(preset_of, encoders.values())), None) or "vit_nano"

# %% Evaluation of every encoder, and of a random-init encoder of the same preset
eval_root = Path(args.eval_root)
which = {name: ["--checkpoint", str(checkpoint)] for name, checkpoint in encoders.items()}
if not args.no_random_init:
    which["random init"] = ["--random-init", preset]
metrics = {}
for name, source in which.items():
    target = eval_root / name.replace(" ", "_")
    cmd = ["ace", "evaluate", *source, "--out", str(target)]
    cmd += [] if args.data == "phantom" else ["--data", args.data]
    cmd += (["--quick"] if args.quick else []) + (["--threads", str(args.threads)] if args.threads else [])
    reused = args.reuse and (target / "metrics.json").is_file()
    commands.append((cmd, "reused" if reused else f"{run(cmd)} s"))
    metrics[name] = json.loads((target / "metrics.json").read_text())

# %% The comparison table: one row per headline number, one column per encoder, the paper beside
from ace.evaluate import headline, paper_reference, representation  # noqa: E402

rows = {name: headline(m) for name, m in metrics.items()}
labels = list(next(iter(rows.values())))
names = list(rows)
defaults = {name: representation(m["default_features"]) for name, m in metrics.items()}


def cell(name, label):
    """'value [lo, hi]', starred when it is measured on the encoder's own representation; '-'
    where the encoder's evaluation predates the measurement."""
    entry = rows[name].get(label)
    if entry is None:
        return "-"
    own = f", {defaults[name]}" in label
    return entry["text"] + (" *" if own else "")


first = next(iter(metrics.values()))
quick = any(m.get("quick") for m in metrics.values())
lines = [f"# Comparison of encoders on `{relative(first['data'])}`", "",
         "Encoders: " + "; ".join(f"{name} (`{relative(m['checkpoint'])}`, its own representation: "
                                  f"{defaults[name]})" for name, m in metrics.items()) + ".",
         f"Measured with `ace evaluate{' --quick' if quick else ''}`. Brackets: 95% bootstrap intervals "
         "resampling images (1000 resamples); * marks a number measured on the representation the encoder's "
         "method trains. Landmark errors are pixels of the input images (lower is better; higher is better "
         "for everything else); \"[window pairs]\" rows share all ordered pairs of a few images, the others "
         "random pairs of all annotated images. The no-model references do not depend on the encoder: they "
         "repeat across columns, measured on the same pairs.", "",
         "| measurement | " + " | ".join(names) + " | paper (ACE, ViT-B, 1024 px) |",
         "| --- |" + " --- |" * (len(names) + 1)]
for label in labels:
    paper = paper_reference(label)
    paper = "-" if paper is None else f"{paper:.1f} (61 at 1024 px)" if "px" in label else f"{paper:.3f}"
    lines.append(f"| {label} | " + " | ".join(cell(name, label) for name in names) + f" | {paper} |")
lines += ["", "The paper reports 61 px landmark error on 1024 px images (about 30 px on 512 px), patch -> image "
          "retrieval 94.4% and decompositionality 89.0% (ViT-B, far larger data and budget).", ""]

# %% What each trained encoder cost: its run's schedule and CPU time, from config.json and metrics.jsonl
from ace.cli import read_metrics  # noqa: E402


def budget_row(name, checkpoint):
    """'| name | losses | steps | CPU min |' of a training run, or None where the run's files are absent."""
    import yaml

    run = checkpoint.parent
    rows = read_metrics(run)
    if not (run / "config.json").is_file() or not rows:
        return None
    config, last = json.loads((run / "config.json").read_text()), rows[-1]
    given = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    planned = given.get("steps") or config["epochs"] * config["steps_per_epoch"]
    losses = ", ".join(f"{loss} {config[loss + '_weight']:g}" for loss in config["losses"])
    if "global" in config["losses"]:
        losses += f" (teacher temperature {config['teacher_temp']:g})"
    cpu = f"{last['cpu_s'] / 60:.1f}" if "cpu_s" in last else "-"
    return f"| {name} | {losses} | {last['step']} of {planned} ({config['epochs']} epochs) | {cpu} |"


budget = [row for row in (budget_row(name, checkpoint) for name, checkpoint in encoders.items()) if row]
if budget:
    lines += ["## Pretraining", "", "Each trained encoder's run: its loss weights, the steps it took of its schedule, "
              "and its CPU time (the `cpu_s` of its last metrics row: process CPU of all threads, counted on "
              "across resumes; '-' for a run that predates the count).", "",
              "| encoder | losses (weights) | steps | CPU min |", "|" + " --- |" * 4, *budget, ""]

# %% Paired differences: each trained encoder against the baselines (random init, and the
# DINO-style runs: global loss only), trial by trial on the same images, pairs and patches
import numpy as np  # noqa: E402

from ace.evaluate import REFERENCES, paired_differences, reference_evaluation  # noqa: E402

arrays = {name: dict(np.load(eval_root / name.replace(" ", "_") / "arrays.npz")) for name in names}


def losses_of(name):
    """The losses a training run optimized (its config.json), or None."""
    config = encoders[name].parent / "config.json" if name in encoders else None
    return json.loads(config.read_text()).get("losses") if config and config.is_file() else None


baselines = [name for name in names if name == "random init" or losses_of(name) == ["global"]]
trained = [name for name in names if name not in baselines]
paired = {(name, base): paired_differences((metrics[name], arrays[name]), (metrics[base], arrays[base]))
          for name in trained for base in baselines}
# ... and against the two landmark references that learn nothing, on the same pairs.
for name in trained:
    for reference in REFERENCES:
        evaluation = reference_evaluation(arrays[name], reference)
        if evaluation is not None:
            paired[(name, reference)] = paired_differences((metrics[name], arrays[name]), evaluation)
measured = list(dict.fromkeys(label for diffs in paired.values() for label in diffs))
if measured:
    def mark(d):
        """Bold where the interval excludes 0 in the encoder's favour, italic where against it."""
        return f"**{d['text']}**" if d["better"] else f"_{d['text']}_" if d["better"] is False else d["text"]

    lines += ["## Paired differences", "",
              "Each trained encoder minus a baseline (and, on landmarks, minus the two references that learn "
              "nothing), on the same trials (the probes draw images, pairs and "
              "patches from seeds, not from the encoder), each encoder on the representation it trains. "
              "Brackets: 95% bootstrap intervals resampling images, the same resampling as above; **bold** where "
              "the interval excludes 0 in the encoder's favour (lower error, higher accuracy or Dice), _italic_ "
              "where it excludes 0 against it.", "",
              "| encoder - baseline | " + " | ".join(measured) + " |", "| --- |" + " --- |" * len(measured)]
    for (name, base), diffs in paired.items():
        lines.append(f"| {name} - {base} | " + " | ".join(mark(diffs[m]) if m in diffs else "-" for m in measured)
                     + " |")
    lines.append("")

# %% Figures across encoders (Fig. 3 and Fig. 7 style), beside the table
from ace import plots  # noqa: E402

results = Path(args.results)
results.mkdir(parents=True, exist_ok=True)
kde = plots.compositionality_kde({n: a["compositionality"] for n, a in arrays.items()},
                                 results / f"{args.name}_compositionality.png")
some = next(iter(arrays.values()))
errors = {"same coordinates": some["errors_identity"], "NCC template": some["errors_landmarks_template"]}
errors.update({f"{n}, dense": a["errors_landmarks_dense"] for n, a in arrays.items()})
box = plots.error_boxplot(errors, results / f"{args.name}_landmark_errors.png")
window = {"same coordinates": some["errors_window_identity"], "NCC template": some["errors_landmarks_window_template"]}
window.update({f"{n}, paper window": a["errors_landmarks_window_paper"] for n, a in arrays.items()})
window_box = plots.error_boxplot(window, results / f"{args.name}_landmark_window_errors.png")
lines += ["## Figures", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in (kde, box, window_box)]

# %% The commands that produced the numbers, and the tables as JSON
lines += ["", "## Commands", "", "```"]
lines += [f"{relative(' '.join(cmd))}    # {seconds}" for cmd, seconds in commands]
lines += ["```", ""]
(results / f"{args.name}.md").write_text("\n".join(lines))
(results / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
if paired:
    (results / f"{args.name}_paired.json").write_text(
        json.dumps({f"{name} - {base}": diffs for (name, base), diffs in paired.items()}, indent=2) + "\n")
print("\n".join(lines))
