"""Inference speed of `Encoder.embed` against the machine's own matmul rate.

    python bench/encoder.py [--preset vit_tiny|swin_tiny|...] [--batch 32] [--threads 2] [--precision auto]
                            [--img-size 224] [--window-size W (Swin)]

Prints images/s, the sgemm GFLOP/s measured in the same run, and the fraction of that
rate the encoder reaches (analytic FLOPs / time / sgemm rate).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ace  # noqa: E402
from common import forward_flops, matmul_rates, set_threads, timed  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vit_tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--window-size", type=int, help="Swin window (default: the preset's 7)")
    args = ap.parse_args()
    set_threads(args.threads)

    enc = ace.Encoder(args.preset, img_size=args.img_size, precision=args.precision, window_size=args.window_size)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.img_size, args.img_size), dtype=np.uint8)
    x = enc.preprocess(images)

    rates = matmul_rates()
    t_forward = timed(lambda: enc.forward_features(x))
    t_embed = timed(lambda: enc.embed(images, batch_size=args.batch))
    flops = forward_flops(enc.config) * args.batch
    achieved = flops / t_forward / 1e9

    rate = rates[enc.precision]
    print(f"{args.preset} @ {args.img_size}, batch {args.batch}, {args.threads} threads, precision {enc.precision}")
    print(f"embed:            {args.batch / t_embed:8.1f} images/s  (incl. resize + normalize)")
    print(f"forward_features: {args.batch / t_forward:8.1f} images/s  {achieved:6.1f} GFLOP/s")
    print(f"matmul rates (same run): sgemm {rates['fp32']:.1f}, bf16 {rates['bf16']:.1f} GFLOP/s")
    print(f"fraction of the {enc.precision} matmul rate: {achieved / rate:.2f}   (embed: {flops / t_embed / 1e9 / rate:.2f})")


if __name__ == "__main__":
    main()
