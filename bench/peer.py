"""ace against PyTorch on this machine, side by side in one run: the ACE training step
(vit_tiny, batch 16, default geometry and DINO head) and inference (vit_tiny
forward_features, batch 32 at 224), PyTorch eager fp32 and bf16 autocast against ace.

    python bench/peer.py [--torch-python /path/to/python-with-torch-and-timm] [--threads 2] [--rounds 3]

Each measurement runs in its own process (so peak memory is its own), one after another,
alternating the two sides for --rounds rounds.
PyTorch and timm are not dependencies: without them the PyTorch rows are skipped with a
message. Also prints the machine's matmul rates and the fraction of the bf16 rate ace reaches.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def ace_side(mode, precision, threads):
    """Measures ace in this process; returns images/s and peak memory."""
    import resource

    import numpy as np

    sys.path.insert(0, HERE)
    import ace
    from common import set_threads, timed

    set_threads(threads)
    rng = np.random.default_rng(0)
    if mode == "infer":
        enc = ace.Encoder("vit_tiny", precision=precision)
        x = rng.standard_normal((32, 1, 224, 224), dtype=np.float32)
        batch, seconds = 32, timed(lambda: enc.forward_features(x), warmup_s=3, min_s=8)
    else:
        trainer = ace.Trainer(ace.PretrainConfig(encoder="vit_tiny", batch_size=16, precision=precision))
        images = rng.integers(0, 256, (16, 512, 512), dtype=np.uint8)
        batch, seconds = 16, timed(lambda: trainer.step(images), warmup_s=3, min_s=8)
    return {"images_per_s": batch / seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def median_result(runs):
    """(the run with the median images/s, error) of one side's rounds; peak memory the largest."""
    good = sorted((r for r, _ in runs if r), key=lambda r: r["images_per_s"])
    if not good:
        return None, runs[-1][1]
    return dict(good[len(good) // 2], peak_mib=max(r["peak_mib"] for r in good)), None


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
    return json.loads(r.stdout.strip().splitlines()[-1]), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-python", default=sys.executable,
                    help="interpreter with torch and timm installed (default: this one)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3,
                    help="measurements of each side, alternating ace and PyTorch; medians are printed, and the "
                         "ratio is the median of the per-round ratios (the machine's speed drifts between runs)")
    ap.add_argument("--side", choices=["ace"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["infer", "step"], help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "ace":
        print(json.dumps(ace_side(args.mode, args.precision, args.threads)))
        return

    sys.path.insert(0, HERE)
    from common import matmul_rates, set_threads, vit_forward_flops

    set_threads(args.threads)
    rates = matmul_rates()
    have_torch = subprocess.run([args.torch_python, "-c", "import torch, timm"], capture_output=True).returncode == 0
    if not have_torch:
        print(f"PyTorch rows skipped: {args.torch_python} cannot import torch and timm "
              "(install them in a separate environment and pass --torch-python)")
    rounds = {}
    for _ in range(max(1, args.rounds)):
        for mode in ("infer", "step"):
            for precision in ("fp32", "bf16"):
                rounds.setdefault(("ace", mode, precision), []).append(
                    run([sys.executable, __file__, "--side", "ace", "--mode", mode, "--precision", precision,
                         "--threads", str(args.threads)]))
                if have_torch:
                    rounds.setdefault(("torch", mode, precision), []).append(run(
                        [args.torch_python, os.path.join(HERE, "torch_peer.py"), "--mode", mode,
                         "--precision", precision, "--threads", str(args.threads)]))
    results = {key: median_result(runs) for key, runs in rounds.items()}

    print(f"{args.threads} threads; matmul rates measured now: sgemm {rates['fp32']:.0f} GFLOP/s, "
          f"bf16 {rates['bf16']:.0f} GFLOP/s")
    print(f"{'work':<34}{'images/s':>10}{'peak MiB':>10}")
    names = {"infer": "inference vit_tiny b32 @224", "step": "ACE step vit_tiny b16"}
    for (side, mode, precision), (r, err) in results.items():
        label = f"{names[mode]} {side} {precision}"
        print(f"{label:<42}" + (f"{r['images_per_s']:>8.1f}{r['peak_mib']:>10.0f}" if r else f"  failed: {err}"))
    cfg = {"embed_dim": 192, "depth": 12, "patch_size": 16, "mlp_ratio": 4, "in_chans": 1, "img_size": 224}
    best = results[("ace", "infer", "bf16")][0]
    if best:
        achieved = vit_forward_flops(cfg) * best["images_per_s"] / 1e9
        print(f"ace bf16 inference: {achieved:.0f} GFLOP/s = {achieved / rates['bf16']:.2f} of the bf16 matmul rate")
    for mode in ("infer", "step"):
        ours, theirs = rounds[("ace", mode, "bf16")], rounds.get(("torch", mode, "bf16"), [])
        ratios = [a["images_per_s"] / b["images_per_s"] for (a, _), (b, _) in zip(ours, theirs) if a and b]
        if ratios:
            memory = results[("ace", mode, "bf16")][0]["peak_mib"] / results[("torch", mode, "bf16")][0]["peak_mib"]
            print(f"{names[mode]}: ace bf16 / PyTorch bf16 autocast = {statistics.median(ratios):.2f}x "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; memory {memory:.2f}x)")


if __name__ == "__main__":
    main()
