# %% [markdown]
# Compositionality with its control, for encoders side by side: the cosine of a patch's
# embedding with the mean of its quadrants' embeddings, the same cosine against another
# patch's quadrants, and their gap (with 95% bootstrap intervals over images), on the images
# and settings `ace evaluate` uses. Run headless:
#
#     python notebooks/compositionality_gap.py --runs runs/long/ace runs/long/dino ... [--name long]
#
# writes notebooks/results/NAME_gap.md. A random-init encoder of the first run's preset is
# added unless --no-random-init.

# %%
import argparse
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("ace") is None:   # run from a source tree without `pip install`
    sys.path.insert(0, str(ROOT / "python"))

import ace  # noqa: E402
from ace import probes  # noqa: E402
from ace.data import load_jsrt  # noqa: E402
from ace.evaluate import FEATURES, budget, representation  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--runs", nargs="+", required=True, help="training-run folders or .safetensors files")
ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "jsrt"))
ap.add_argument("--no-random-init", action="store_true")
ap.add_argument("--name", default="compare")
ap.add_argument("--results", default=str(ROOT / "notebooks" / "results"))
args = ap.parse_args()

# %%
encoders = {}
for run in args.runs:
    path = Path(run)
    encoders[path.stem if path.suffix else path.name] = ace.Encoder.load(path if path.suffix else path / "last.safetensors")
if not args.no_random_init:
    preset = next(iter(encoders.values())).config["preset"]
    encoders["random init"] = ace.Encoder(preset, seed=0)
images = load_jsrt(args.data).images
n = budget(False)["comp_n"]

# %%
rows = []
for name, enc in encoders.items():
    for f in FEATURES:
        r = probes.compositionality(enc, images, parts=4, n=n, features=f)
        own = " *" if f == probes.resolve_features(enc, "default") else ""
        rows.append(f"| {name} | {representation(f)}{own} | {r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
                    f"| {r['control']:.3f} | {r['gap']:.3f} [{r['gap_ci95'][0]:.3f}, {r['gap_ci95'][1]:.3f}] |")
        print(rows[-1], flush=True)

# %%
text = "\n".join([
    f"# Compositionality with a control ({args.name})", "",
    f"{n} patches of 128 px from the JSRT images (as `ace evaluate`), each against the mean of its four "
    "quadrants' embeddings (cos) and against the quadrants of the next sampled patch (control); gap = cos - "
    "control per patch. Brackets: 95% bootstrap intervals over images; * the representation the encoder's "
    "method trains.", "",
    "| encoder | representation | cos | control | gap |", "| --- | --- | --- | --- | --- |", *rows, "",
    "Command: `python notebooks/compositionality_gap.py --runs " + " ".join(args.runs) + f" --name {args.name}`", ""])
out = Path(args.results) / f"{args.name}_gap.md"
out.write_text(text)
print(out)
