"""One run of the data-parallel tests (test_distributed.py): started as a plain process or
under `mpiexec -n N`. Trains the small config on a fixed image set with a global batch of 16,
checks after every step that all ranks hold the same weights, and on rank 0 writes the final
weights and the per-step stats to OUT.npz.

usage: distributed_worker.py OUT.npz STEPS [--stop-at K --checkpoint PATH] [--resume PATH] [--local-positions]
"""
import argparse
import hashlib
import sys

import numpy as np

import ace
from ace.data import ImageStream
from ace.distributed import StepFailed, world

GLOBAL_BATCH = 16


def config():
    cfg = ace.PretrainConfig(encoder="vit_nano", batch_size=GLOBAL_BATCH, epochs=2, steps_per_epoch=10,
                             head_hidden=64, head_bottleneck=32, head_prototypes=128, lr=0.05,
                             precision="fp32")   # float32 products everywhere: the stated tolerance's
    cfg.grid = ace.GridConfig(image_size=128, grid_cells=8, fine_cells=4, input_size=64, min_overlap=2)
    return cfg


def images(n=48, size=128, seed=0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(2, 6, 4)
        out.append(0.5 + 0.25 * np.sin(f[0] * xs * 6 + f[1]) * np.cos(f[2] * ys * 6 + f[3]))
    return np.stack(out).astype(np.float32)


def weights(trainer):
    parts = [v for enc in (trainer.student, trainer.teacher) for _, v in sorted(enc.state_dict().items())]
    return np.concatenate([np.ravel(p) for p in parts]).astype(np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("steps", type=int)
    p.add_argument("--stop-at", type=int)
    p.add_argument("--checkpoint")
    p.add_argument("--resume")
    p.add_argument("--local-positions", action="store_true",
                   help="control: key every rank's draws by local positions (wrong on purpose)")
    p.add_argument("--fail", nargs=3, metavar=("RANK", "STEP", "HOW"),
                   help="on this rank at this step: 'nan' images (a step failure every rank must see) or "
                        "'crash' (a Python error only this rank sees)")
    args = p.parse_args()
    ace.set_num_threads(1)
    group = world()
    with group.abort_on_error():
        if group.is_root:
            trainer = ace.Trainer.load(args.resume) if args.resume else ace.Trainer(config(), seed=7)
        else:
            trainer = None
        trainer = group.share_run(trainer)
        if args.local_positions:
            compute = trainer.compute_gradients
            trainer.compute_gradients = lambda images, first_image=0: compute(images, first_image=0)
        start = trainer.steps_done
        stream = ImageStream(images(), GLOBAL_BATCH, 128, seed=3, prefetch=1, shard=(group.rank, group.size))
        batches = iter(stream.seek(start))
        history, identical, failure = [], [], ""
        for step in range(start, args.steps):
            batch = next(batches)
            if args.fail and int(args.fail[0]) == group.rank and int(args.fail[1]) == step + 1:
                if args.fail[2] == "crash":
                    raise RuntimeError(f"deliberate crash on rank {group.rank}")
                batch = np.full_like(batch, np.nan)
            try:
                stats, _ = group.step(trainer, batch)
            except StepFailed as e:
                failure = str(e)
                break
            history.append([stats[k] for k in ("loss", "global", "comp", "decomp", "grad_norm")])
            digest = hashlib.sha256(weights(trainer).tobytes()).hexdigest()
            digests = group.comm.allgather(digest) if group.size > 1 else [digest]
            identical.append(len(set(digests)) == 1)
            if args.stop_at and stats["step"] == args.stop_at:
                break
        stream.close()
        if group.is_root:
            if args.checkpoint:
                trainer.save(args.checkpoint)
            np.savez(args.out, weights=weights(trainer), history=np.array(history), identical=np.array(identical),
                     ranks=group.size, steps=trainer.steps_done, failure=failure)
        group.barrier()


if __name__ == "__main__":
    sys.exit(main())
