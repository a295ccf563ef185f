# %% [markdown]
# ACE pretraining on the JSRT radiographs at test scale: vit_nano, batch 8, 300 steps.
# Prints the loss terms and the teacher's local matching accuracy every 25 steps and saves
# the curves (`runs/curves/curves.png`, `curves.json`). Run headless:
#
#     python notebooks/pretrain_curves.py [--steps 300] [--objective ace]

# %%
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

import ace

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/jsrt/images"))
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--objective", default="ace")
ap.add_argument("--lr", type=float, default=5e-3, help="per 256 images (DESIGN's 5e-4 is for long runs)")
ap.add_argument("--momentum", type=float, default=0.996, help="teacher EMA momentum at the start")
ap.add_argument("--losses", default="global,comp,decomp")
ap.add_argument("--out", default="runs/curves")
args = ap.parse_args()

# %%
files = sorted(Path(args.data).glob("*.png"))
images = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
config = ace.PretrainConfig(encoder="vit_nano", batch_size=args.batch, epochs=1, steps_per_epoch=args.steps,
                            objective=args.objective, head_hidden=512, head_prototypes=1024, lr=args.lr,
                            momentum_teacher=args.momentum, losses=args.losses.split(","))
trainer = ace.Trainer(config, seed=0)
rng = np.random.default_rng(0)
history = []
start = time.time()
for step in range(args.steps):
    batch = images[rng.choice(len(images), args.batch, replace=False)]
    stats = trainer.step(batch)
    history.append(stats)
    if step % 25 == 0 or step == args.steps - 1:
        print(f"{step:4d} " + " ".join(f"{k} {v:.4f}" for k, v in stats.items() if k != "step"), flush=True)
print(f"{args.steps} steps in {time.time() - start:.0f} s")

# %%
os.makedirs(args.out, exist_ok=True)
with open(os.path.join(args.out, "curves.json"), "w") as f:
    json.dump(history, f)
from ace.plots import loss_curves

loss_curves(history, os.path.join(args.out, "curves.png"))
keys = ["loss", "global", "comp", "decomp", "comp_acc", "decomp_acc"]
first, last = history[:25], history[-25:]
for key in keys:
    print(f"{key:10s} first 25 mean {np.mean([h[key] for h in first]):.4f}  last 25 mean {np.mean([h[key] for h in last]):.4f}")
