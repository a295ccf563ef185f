# %% [markdown]
# Training runs side by side by what they logged: the mean of each statistic of `metrics.jsonl`
# over a window of steps, at chosen steps. Runs with the same schedule (same `--epochs`, batch and
# data) can be compared this way at any step before the shorter one stopped, without evaluating
# them: how fast the local matching accuracies rise, whether the global loss leaves ln K. Run headless:
#
#     python notebooks/training_stats.py --runs runs/long/ace runs/sweep/ace_gw001 [--at 300 1000 1300]
#         [--window 100] [--name sweep_global_weight]
#
# writes notebooks/results/NAME.md (or prints the table without --name).

# %%
import argparse
import json
import math
from pathlib import Path

import numpy as np

from ace.cli import read_metrics

ROOT = Path(__file__).resolve().parents[1]
STATS = ["loss", "global", "comp", "decomp", "comp_acc", "decomp_acc"]

ap = argparse.ArgumentParser()
ap.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="training-run folders (with metrics.jsonl)")
ap.add_argument("--at", nargs="+", type=int, help="steps (default: six spread up to the shortest run's last step)")
ap.add_argument("--window", type=int, default=100, help="steps averaged, ending at each chosen step")
ap.add_argument("--stats", nargs="+", default=STATS)
ap.add_argument("--name", help="write notebooks/results/NAME.md")
args = ap.parse_args()


def read(run):
    rows = read_metrics(run)       # tolerates the torn last row of a run still being written
    config = json.loads((Path(run) / "config.json").read_text()) if (Path(run) / "config.json").exists() else {}
    return rows, config


def flat(config, prefix=""):
    """Dotted keys of a nested config: grid.window, augment.clahe_p, ..."""
    out = {}
    for k, v in config.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def same(values):
    """Equal, numbers to 1e-6 relative (configs written by different versions round differently)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return all(math.isclose(v, values[0], rel_tol=1e-6) for v in values)
    return all(json.dumps(v) == json.dumps(values[0]) for v in values)


runs = {run: read(run) for run in args.runs}
last = min(rows[-1]["step"] for rows, _ in runs.values())
at = args.at or sorted({max(args.window, round(last * f / 6)) for f in range(1, 7)})

# %%
lines = [f"Mean of each logged statistic over the {args.window} steps ending at the given step "
         f"(`python notebooks/training_stats.py --runs {' '.join(args.runs)} --at {' '.join(map(str, at))} "
         f"--window {args.window}" + (f" --stats {' '.join(args.stats)}" if args.stats != STATS else "") + "`).", ""]
header = ["step", "run", *args.stats]
lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
for step in at:
    for run, (rows, _) in runs.items():
        window = [r for r in rows if step - args.window < r["step"] <= step]
        if not window or rows[-1]["step"] < step:
            continue
        cells = [f"{np.mean([r.get(k, math.nan) for r in window]):.4f}" for k in args.stats]
        lines.append(f"| {step} | {run} | " + " | ".join(cells) + " |")

configs = {run: flat(c) for run, (_, c) in runs.items()}
# Settings recorded by every run that differ between them (a setting an older run did not record is left out).
settings = sorted(k for k in set.intersection(*(set(c) for c in configs.values()))
                  if not same([c[k] for c in configs.values()]))
if settings:
    lines += ["", "Settings that differ between the runs:", ""]
    lines += [f"- {run}: " + ", ".join(f"{k} = {json.dumps(c[k])}" for k in settings) for run, c in configs.items()]
text = "\n".join(lines) + "\n"
if args.name:
    out = ROOT / "notebooks" / "results" / f"{args.name}.md"
    out.write_text(text)
    print("wrote", out)
else:
    print(text)
