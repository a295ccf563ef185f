"""Data-parallel pretraining on this machine: 1 process x T threads against T processes x 1
thread (mpiexec), same global batch, and the time each step spends in the allreduce.

    python bench/distributed.py [--preset vit_tiny] [--batch 16] [--procs 2] [--steps 6] [--precision fp32]

Runs each configuration as its own job (the second under `mpiexec -n PROCS`), prints images/s
of both, the allreduce seconds per step and the bandwidth it implies (ring allreduce: every rank
sends and receives 2 (N-1)/N x the gradient bytes), then a projection for vit_base on a cluster
from the step's analytic FLOPs, the gradient volume and assumed node rates (printed with it).
Needs mpi4py and mpiexec (pip install ".[mpi]").
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args):
    """One configuration: warm-up steps, then timed steps; rank 0 prints one JSON line."""
    sys.path.insert(0, HERE)
    import ace
    from ace.distributed import world

    ace.set_num_threads(args.threads)
    group = world()
    with group.abort_on_error():
        cfg = ace.PretrainConfig(encoder=args.preset, batch_size=args.batch, precision=args.precision)
        trainer = group.share_run(ace.Trainer(cfg) if group.is_root else None)
        per_rank = args.batch // group.size
        rng = np.random.default_rng(group.rank)
        side = cfg.grid.image_size
        images = rng.integers(0, 256, (per_rank, side, side), dtype=np.uint8)
        for _ in range(args.warmup):
            group.step(trainer, images)
        group.barrier()
        allreduce, t0 = 0.0, time.perf_counter()
        for _ in range(args.steps):
            group.step(trainer, images)
            allreduce += group.allreduce_seconds
        seconds = (time.perf_counter() - t0) / args.steps
        # In a step, the allreduce also waits for the slowest rank; alone, after a barrier, it
        # is the transfer itself.
        pure = 0.0
        if group.size > 1:
            from mpi4py import MPI
            buffer = np.ones_like(trainer.gradients)
            for _ in range(3):
                group.barrier()
                t = time.perf_counter()
                group.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                pure += (time.perf_counter() - t) / 3
        if group.is_root:
            print(json.dumps({"procs": group.size, "threads": args.threads, "step_s": seconds,
                              "images_per_s": args.batch / seconds, "allreduce_s": allreduce / args.steps,
                              "allreduce_alone_s": pure,
                              "gradient_bytes": trainer.gradients.nbytes, "precision": trainer.precision}))


def launch(args, procs, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads),
           "--preset", args.preset, "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--precision", args.precision]
    if procs > 1:
        cmd = ["mpiexec", "-n", str(procs)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def projection():
    """vit_base on a cluster, on paper: per-rank compute per step vs the allreduce of its
    gradients. Rates are assumptions, printed with the result."""
    sys.path.insert(0, HERE)
    import ace
    from train_step import step_flops

    cfg = ace.PretrainConfig(encoder="vit_base", batch_size=16)
    encoder = ace.Encoder("vit_base", img_size=cfg.grid.input_size)
    c, hidden = encoder.config["embed_dim"], cfg.local_hidden or 4 * encoder.config["embed_dim"]
    h, b, k = cfg.head_hidden, cfg.head_bottleneck, cfg.head_prototypes
    heads = 2 * 5 * c * hidden + (c * h + h * h + h * b + b * k)   # local heads + DINO head (weights)
    grad_bytes = 4 * (encoder.num_params + heads)
    flops = step_flops(cfg, encoder.config, 16)
    print(f"\nprojection, vit_base, 16 images per rank ({cfg.grid.input_size} px views): "
          f"{flops / 1e12:.2f} TFLOP per rank-step, {grad_bytes / 1e6:.0f} MB of gradients")
    for node, gflops in (("a 32-core AVX-512 node, fp32 (assumed 1.5 TFLOP/s achieved)", 1500),
                         ("the same node, bf16 AMX (assumed 6 TFLOP/s achieved)", 6000)):
        compute = flops / (gflops * 1e9)
        for net, gbytes in (("10 GbE (1.1 GB/s)", 1.1), ("100 Gb/s InfiniBand (11 GB/s)", 11)):
            for n in (4, 16, 64):
                comm = 2 * (n - 1) / n * grad_bytes / (gbytes * 1e9)
                print(f"  {node}, {net}, {n:3d} ranks: compute {compute:6.2f} s, allreduce {comm:5.2f} s, "
                      f"efficiency {compute / (compute + comm):.2f} (no overlap)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="vit_tiny")
    ap.add_argument("--batch", type=int, default=16, help="global batch")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    single = launch(args, 1, args.procs)
    multi = launch(args, args.procs, 1)
    print(f"{args.preset}, global batch {args.batch}, precision {single['precision']}, "
          f"{args.steps} timed steps after {args.warmup}")
    print(f"1 process x {args.procs} threads:  {single['images_per_s']:7.2f} images/s  ({single['step_s']:.3f} s/step)")
    print(f"{args.procs} processes x 1 thread: {multi['images_per_s']:7.2f} images/s  ({multi['step_s']:.3f} s/step)")
    bandwidth = 2 * (args.procs - 1) / args.procs * multi["gradient_bytes"] / max(multi["allreduce_alone_s"], 1e-9)
    print(f"allreduce per step: {multi['allreduce_s'] * 1e3:.1f} ms in the step (waits included; "
          f"{100 * multi['allreduce_s'] / multi['step_s']:.1f}% of it), {multi['allreduce_alone_s'] * 1e3:.1f} ms "
          f"alone for {multi['gradient_bytes'] / 1e6:.1f} MB ({bandwidth / 1e9:.2f} GB/s per rank)")
    projection()


if __name__ == "__main__":
    main()
