# %% [markdown]
# Key-point detection on JSRT (paper App. B.2, Fig. 12): each encoder fine-tuned end to end with a
# heat-map head (`ace.probes.keypoints`) on the seven key points of `ace.data.datasets.KEYPOINTS`,
# trained on the training split's annotated images (all of them, and 2, 5, 10 for few-shot), scored
# on the test split's annotated images in pixels of the 512 px images, beside the reference that
# predicts every key point at its mean training position. Run headless:
#
#     python notebooks/keypoints_jsrt.py --runs runs/long/ace runs/long/dino [--epochs 20] [--name keypoints]
#
# evaluates a random-init encoder of the first run's preset and each run's last.safetensors (or any
# .safetensors given instead of a folder); results go to notebooks/results/NAME.{json,md}.

# %%
import argparse
import json
import time
from pathlib import Path


import ace
from ace import probes
from ace.data import load_jsrt
from ace.data.datasets import KEYPOINTS, keypoint_ids
from ace.evaluate import format_ci

ROOT = Path(__file__).resolve().parents[1]
ap = argparse.ArgumentParser()
ap.add_argument("--runs", nargs="*", default=[], help="training-run folders or .safetensors files")
ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "jsrt"), help="JSRT-layout folder")
ap.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs on all images (few-shot: 4 times)")
ap.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate (the probe's default 1e-4)")
ap.add_argument("--head-lr", type=float, default=1e-2, help="head learning rate (the probe's default 1e-2)")
ap.add_argument("--shots", type=int, nargs="*", default=[2, 5, 10])
ap.add_argument("--name", default="keypoints_jsrt")
args = ap.parse_args()

# %%
data = load_jsrt(args.data, size=512)
train, test = data.split["train"], data.split["test"]
trainset, testset = (data.images[train], data.landmarks[train]), (data.images[test], data.landmarks[test])
encoders = {}
for run in args.runs:
    path = Path(run)
    path = path / "last.safetensors" if path.is_dir() else path
    encoders[path.parent.name if path.name == "last.safetensors" else path.stem] = (ace.Encoder.load(path), str(path))
first = next(iter(encoders.values()))[0] if encoders else None
preset = first.config["preset"] if first else "vit_nano"
encoders = {"random init": (ace.Encoder(preset, img_size=first.config["img_size"] if first else 224, seed=0),
                            f"random-init {preset} seed 0"), **encoders}

# %%
rows = {}
for name, (enc, source) in encoders.items():
    rows[name] = {"source": source}
    for shots in [None] + args.shots:
        start = time.perf_counter()
        epochs = args.epochs if shots is None else args.epochs * 4
        settings = dict(epochs=epochs, lr=args.lr, head_lr=args.head_lr)
        r = probes.keypoints(enc, trainset, testset, points=keypoint_ids(), shots=shots, finetune=settings)
        key = "all" if shots is None else f"{shots}-shot"
        rows[name][key] = {"mean_error": r["mean_error"], "ci95": r["ci95"], "per_point": r["per_point"].tolist(),
                           "shots": r["shots"], "n_test": r["n_test"], "epochs": epochs,
                           "mean_position_error": r["mean_position_error"],
                           "mean_position_ci95": r["mean_position_ci95"],
                           "seconds": round(time.perf_counter() - start, 1)}
        print(name, key, f"{r['mean_error']:.1f} px", r["ci95"], f"(mean position {r['mean_position_error']:.1f})",
              f"{rows[name][key]['seconds']} s", flush=True)

# %%
out = ROOT / "notebooks" / "results"
out.mkdir(parents=True, exist_ok=True)
(out / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
columns = ["all"] + [f"{k}-shot" for k in args.shots]
any_row = next(iter(rows.values()))["all"]
lines = ["# Key-point detection on JSRT: mean error in pixels of the 512 px images [95% CI over test images]", "",
         f"Seven key points ({', '.join(KEYPOINTS)}), encoder and heat-map head fine-tuned end to end "
         f"(lr {args.lr:g}, head lr {args.head_lr:g}; {args.epochs} epochs on the {any_row['shots']} annotated "
         f"training images, "
         f"{4 * args.epochs} for few-shot), {any_row['n_test']} annotated test images. "
         f"Predicting every key point at its mean training position: "
         f"{format_ci(any_row['mean_position_error'], any_row['mean_position_ci95'], 1)} px.", "",
         "| encoder | " + " | ".join(f"{c} training images" if c == "all" else c for c in columns) + " |",
         "| --- | " + " | ".join("---" for _ in columns) + " |"]
for name, row in rows.items():
    lines.append(f"| {name} | " + " | ".join(format_ci(row[c]["mean_error"], row[c]["ci95"], 1) for c in columns)
                 + " |")
lines += ["", "Per key point, all training images:", "", "| encoder | " + " | ".join(KEYPOINTS) + " |",
          "| --- | " + " | ".join("---" for _ in KEYPOINTS) + " |"]
for name, row in rows.items():
    lines.append(f"| {name} | " + " | ".join(format_ci(v, None, 1) for v in row["all"]["per_point"]) + " |")
lines += ["", "Encoders: " + "; ".join(f"{name}: `{row['source']}`" for name, row in rows.items()), "",
          "Command: `python notebooks/keypoints_jsrt.py " + " ".join(
              ["--runs", *args.runs] if args.runs else [])
          + f" --epochs {args.epochs} --lr {args.lr:g} --head-lr {args.head_lr:g} --name {args.name}`", ""]
(out / f"{args.name}.md").write_text("\n".join(lines))
print(f"wrote {out / args.name}.md")
