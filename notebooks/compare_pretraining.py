# %% [markdown]
# Table-1-like comparison at CPU scale on JSRT: random init, the DINO-style baseline, ACE and
# its ablations, each pretrained with the same budget (same encoder, steps, batch, lr, seed,
# data), then measured with `ace evaluate`. Run headless:
#
#     python notebooks/compare_pretraining.py [--steps 600] [--stage pretrain|evaluate|all]
#
# Outputs go to runs/compare/METHOD/; the evaluation tables are collected into
# notebooks/results/compare.md together with the exact commands.

# %%
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSRT = ROOT.parent / "shared" / "data" / "jsrt"
METHODS = ["ace", "dino", "comp", "comp+decomp"]

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=600)
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--preset", default="vit_nano")
ap.add_argument("--lr", type=float, default=5e-3)
ap.add_argument("--out", default=str(ROOT / "runs" / "compare"))
ap.add_argument("--stage", default="all", choices=["pretrain", "evaluate", "all"])
ap.add_argument("--quick", action="store_true", help="pass --quick to ace evaluate")
args = ap.parse_args()
out = Path(args.out)


def run(cmd):
    """Run an `ace ...` command (as `python -m ace`, which works installed or not); seconds taken."""
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m"] + cmd, check=True)
    return time.time() - start


# %% Pretraining, equal budgets
commands = {}
if args.stage in ("pretrain", "all"):
    for method in METHODS:
        cmd = ["ace", "pretrain", "--data", str(JSRT / "images"), "--preset", args.preset,
               "--objective", method, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--seed", "0", "--out", str(out / method)]
        seconds = run(cmd)
        commands[method] = {"command": " ".join(cmd), "seconds": round(seconds)}
    (out / "pretrain_commands.json").write_text(json.dumps(commands, indent=2))

# %% Evaluation of every method and of a random-init encoder of the same preset
if args.stage in ("evaluate", "all"):
    sys.path.insert(0, str(ROOT / "python"))
    from ace.evaluate import headline

    quick = ["--quick"] if args.quick else []
    rows, eval_commands = {}, {}
    for method in ["random init"] + METHODS:
        target = out / method.replace(" ", "_")
        which = (["--random-init", args.preset] if method == "random init"
                 else ["--checkpoint", str(target / "last.safetensors")])
        cmd = ["ace", "evaluate", *which, "--data", str(JSRT), "--out", str(target / "eval"), *quick]
        eval_commands[method] = {"command": " ".join(cmd), "seconds": round(run(cmd))}
        rows[method] = headline(json.loads((target / "eval" / "metrics.json").read_text()))

    # %% Figures across methods (Fig. 3 and Fig. 7 style), in the runs folder
    import numpy as np
    from ace import plots

    arrays = {m: np.load(out / m.replace(" ", "_") / "eval" / "arrays.npz") for m in rows}
    plots.compositionality_kde({m: a["compositionality"] for m, a in arrays.items()},
                               out / "compositionality_by_method.png")
    plots.error_boxplot({m: a["landmark_errors"] for m, a in arrays.items()}, out / "landmark_errors_by_method.png")

    # %% The comparison table, numbers only, with the commands that produced it
    pre = json.loads((out / "pretrain_commands.json").read_text()) if (out / "pretrain_commands.json").exists() else {}
    columns = list(next(iter(rows.values())))
    lines = ["# Equal-budget comparison on JSRT (CPU scale)", "",
             f"Encoder {args.preset}; every pretrained method: {args.steps} steps of batch {args.batch_size} "
             f"on the 247 JSRT images, lr {args.lr} per 256 images, seed 0. Random init is the same "
             "encoder untrained. Measured with `ace evaluate`" + (" --quick" if args.quick else "") + ".", "",
             "| method | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for method, row in rows.items():
        lines.append(f"| {method} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in row.values()) + " |")
    lines += ["", "Lower is better for the landmark error; higher for everything else.", "",
              "## Commands", "", "```"]
    def relative(command):
        """Paths as seen from the repository root, as the README's commands are."""
        return command.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")

    lines += [f"{relative(c['command'])}    # {c['seconds']} s" for c in list(pre.values()) + list(eval_commands.values())]
    lines += ["```", ""]
    results = ROOT / "notebooks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "compare.md").write_text("\n".join(lines))
    print("\n".join(lines))
