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
