"""Data-parallel pretraining on MPI, through mpi4py (the optional extra `pip install ".[mpi]"`).

`mpiexec -n N ace pretrain ...` trains one model on N processes (ranks). Every rank holds the
whole run; a step is

    compute_gradients on the rank's B images (images rank*B .. rank*B+B-1 of the global batch)
    -> one allreduce of the flat float32 gradient buffer, one of the DINO center's batch
       statistic (+ the loss terms and the stop/failure flags), both divided by N
    -> apply_gradients (clip, AdamW, EMA teacher, center): the same on every rank.

Every image's crop, augmentation and drop-path draws come from a stream keyed by the step
and its global position, and the losses are means over images, so N ranks x B images
compute what 1 process x N*B images computes, up to the order of the float sums.

Without mpi4py, or with one process, `world()` is a group of one and nothing here talks
to MPI: the run is exactly the single-process one.

The same from Python (run with `mpiexec -n N python script.py`):

    group = ace.distributed.world()
    with group.abort_on_error():
        config.batch_size = N * B                  # the global batch: lr scaling, epoch length
        trainer = group.share_run(ace.Trainer(config) if group.is_root else None)
        stream = ImageStream(data, config.batch_size, size, shard=(group.rank, group.size))
        for images in stream:                      # this rank's B images of each batch
            stats, stop = group.step(trainer, images)
        if group.is_root:
            trainer.save(path)
"""
import contextlib
import os
import sys
import tempfile
import time
import traceback

import numpy as np

from .errors import ACEError

# Loss terms averaged over ranks for the metrics (the gradients are what trains).
AVERAGED = ("loss", "global", "comp", "decomp", "comp_acc", "decomp_acc")


class StepFailed(ACEError):
    """A step failed on some rank (e.g. a non-finite loss); every rank raises it at the
    same step with the same message, and the run is left as it was before the step."""


class Group:
    """The processes of one run: `rank`, `size`, `is_root`; `comm` is None for one process."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.allreduce_seconds = 0.0     # of the last step

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return f"Group(rank {self.rank} of {self.size})"

    # ------------------------------------------------------------------ run state

    def share_run(self, trainer):
        """Rank 0's whole run (weights, optimizer moments, center, step, generator) on every
        rank: rank 0 passes its trainer, the others anything (ignored); returns the rank's
        trainer. Goes through the checkpoint format, so nothing is left out."""
        from .trainer import Trainer

        if self.size == 1:
            return trainer
        with tempfile.TemporaryDirectory(prefix="ace-share-") as folder:
            path = os.path.join(folder, "run.safetensors")
            if self.is_root:
                trainer.save(path)
                with open(path, "rb") as f:
                    data = np.frombuffer(f.read(), dtype=np.uint8).copy()
                size = np.array([data.size], dtype=np.int64)
            else:
                size = np.zeros(1, dtype=np.int64)
            self.comm.Bcast(size, root=0)
            if not self.is_root:
                data = np.empty(int(size[0]), dtype=np.uint8)
            self.comm.Bcast(data, root=0)
            if self.is_root:
                return trainer
            data.tofile(path)
            return Trainer.load(path)

    # ------------------------------------------------------------------ the step

    def step(self, trainer, images, *, stop=False):
        """One data-parallel update on this rank's `images` (B of the global N*B). `stop`: this
        rank wants to stop (a signal); returns (stats, any rank wants to stop). Raises
        StepFailed on every rank when the step failed on any rank."""
        if self.size == 1:
            return trainer.step(images), stop
        from mpi4py import MPI

        small = np.zeros(len(AVERAGED) + 2)
        error = None
        try:
            local = trainer.compute_gradients(images, first_image=self.rank * len(images))
            small[: len(AVERAGED)] = [local[k] for k in AVERAGED]
        except ACEError as e:       # the core zeroed this rank's gradients
            error = str(e)
            small[-2] = 1
        small[-1] = 1 if stop else 0
        grads, center = trainer.gradients, trainer.center_statistic
        t0 = time.perf_counter()
        self.comm.Allreduce(MPI.IN_PLACE, grads, op=MPI.SUM)
        self.comm.Allreduce(MPI.IN_PLACE, center, op=MPI.SUM)
        self.comm.Allreduce(MPI.IN_PLACE, small, op=MPI.SUM)
        self.allreduce_seconds = time.perf_counter() - t0
        if small[-2] > 0:
            messages = [m for m in self.comm.allgather(error) if m]
            raise StepFailed(messages[0] if messages else "a step failed on another rank")
        np.divide(grads, self.size, out=grads)
        np.divide(center, self.size, out=center)
        stats = trainer.apply_gradients()     # identical inputs on every rank: same result
        stats.update({k: float(v) / self.size for k, v in zip(AVERAGED, small)})
        return stats, bool(small[-1] > 0)

    # ------------------------------------------------------------------ data

    def broadcast(self, value):
        """Rank 0's (picklable) value on every rank."""
        return self.comm.bcast(value, root=0) if self.size > 1 else value

    def local_size(self):
        """Ranks of this job on this node (sharing its cores)."""
        if self.size == 1:
            return 1
        from mpi4py import MPI
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_size()
        finally:
            node.Free()

    def gather(self, value):
        """Every rank's (picklable) value, in rank order, on rank 0; None on the others."""
        if self.size == 1:
            return [value]
        return self.comm.gather(value, root=0)

    def barrier(self):
        if self.size > 1:
            self.comm.Barrier()

    # ------------------------------------------------------------------ failures

    @contextlib.contextmanager
    def abort_on_error(self):
        """An exception on one rank that the others cannot see (anything but StepFailed,
        which every rank raises together) ends the whole job after reporting it: the other
        ranks would otherwise wait forever in the next collective."""
        try:
            yield
        except StepFailed:
            raise
        except BaseException as e:
            if self.size > 1 and not (isinstance(e, SystemExit) and not e.code):
                print(f"ace: rank {self.rank} of {self.size} failed; stopping every rank", file=sys.stderr)
                traceback.print_exc()
                sys.stderr.flush()
                self.comm.Abort(1)
            raise


def world():
    """The group of processes this program was started in: MPI.COMM_WORLD when mpi4py is
    installed and the job has more than one process, else a group of one (MPI is not even
    initialized for a single process)."""
    if not _launched_by_mpi():
        return Group()
    try:
        from mpi4py import MPI
    except ImportError:
        raise ACEError("this process was started by an MPI launcher but mpi4py is not installed; "
                       'install it with pip install "ace[mpi]" (or pip install mpi4py mpich)') from None
    comm = MPI.COMM_WORLD
    return Group(comm) if comm.Get_size() > 1 else Group()


def _launched_by_mpi():
    """Whether an MPI launcher (MPICH/Hydra, Open MPI, SLURM srun with PMI) started us, judged
    from the environment it sets, so single runs never import or initialize MPI."""
    keys = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD")
    return any(k in os.environ for k in keys)
