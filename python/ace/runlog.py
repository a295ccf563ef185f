"""What `ace pretrain` logs beside metrics.jsonl: TensorBoard event files, and warnings when a
run looks collapsed or stalled."""
import math
import os

import numpy as np

# TensorBoard tag -> key of the step's stats.
SCALARS = {
    "loss/total": "loss", "loss/global": "global", "loss/comp": "comp", "loss/decomp": "decomp",
    "accuracy/comp": "comp_acc", "accuracy/decomp": "decomp_acc",
    "schedule/lr": "lr", "schedule/wd": "wd", "schedule/momentum": "momentum",
    "train/grad_norm": "grad_norm", "train/images_per_s": "images_per_s", "train/cpu_s": "cpu_s",
}
# Stats that exist only when their loss is switched on (they are 0 otherwise).
LOSS_OF = {"global": "global", "comp": "comp", "decomp": "decomp", "comp_acc": "comp", "decomp_acc": "decomp"}


class TensorBoardLog:
    """Scalars per step, warnings as text and the loss figure, in event files in `folder`
    (`tensorboard --logdir` on it, or on the folder of several runs)."""

    def __init__(self, folder, first_step, losses):
        from tensorboardX import SummaryWriter

        # purge_step makes TensorBoard drop the events at or after first_step that earlier
        # files in this folder hold: steps redone after a resume, or an older run's. The PID
        # keeps two files started in the same second apart.
        self._writer = SummaryWriter(logdir=str(folder), purge_step=first_step, filename_suffix=f".{os.getpid()}")
        self._tags = {tag: key for tag, key in SCALARS.items() if key not in LOSS_OF or LOSS_OF[key] in losses}

    def step(self, stats):
        for tag, key in self._tags.items():
            self._writer.add_scalar(tag, stats[key], stats["step"])

    def warning(self, kind, message, step):
        self._writer.add_text(f"warnings/{kind}", message, step)

    def figure(self, tag, png_path, step):
        from PIL import Image

        with Image.open(png_path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self._writer.add_image(tag, pixels, step, dataformats="HWC")

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


class Monitor:
    """Warnings, once per kind and run, when the steps after warm-up look collapsed or stalled.

    The core does not report the teacher's output entropy; the global loss bounds it (a
    cross-entropy is at least the target's entropy), so the checks use that loss: stuck near
    log(K) means uniform teacher outputs, near 0 nearly one-hot ones. A local-matching accuracy
    near chance means the composed/decomposed tokens do not find their teacher tokens. Each
    check averages the last `window` steps: a tenth of the run, 5 to 100 steps. (A NaN loss
    never reaches the stats: the core refuses such a step with an error.)
    """

    UNIFORM_TOLERANCE = 0.025       # of log(K); a healthy ACE run leaves it within a few hundred steps
    ONE_HOT_FRACTION = 0.02         # of log(K)
    CHANCE_FACTOR = 2.0

    def __init__(self, config, total_steps, history=()):
        self.losses = set(config.losses)
        self.log_k = math.log(config.head_prototypes)
        n = config.grid.fine_cells
        # A teacher row's best match among the composed (n/2)^2 or decomposed (2n)^2 tokens.
        self.chance = {"comp": 1 / (n // 2) ** 2, "decomp": 1 / (2 * n) ** 2}
        self.warmup = config.warmup_fraction * config.total_steps
        self.window = min(100, max(5, total_steps // 10))
        self.raised = {kind for row in history for kind in row.get("warnings", {})}

    def check(self, history):
        """New warnings {kind: one-line message} after the last step of `history`."""
        step = history[-1]["step"]
        if step - self.warmup < self.window:
            return {}
        recent = history[-self.window:]
        found = {}
        if "global" in self.losses:
            found.update(self._global(np.mean([r["global"] for r in recent]), step))
        for loss in ("comp", "decomp"):
            if loss in self.losses:
                found.update(self._matching(loss, np.mean([r[f"{loss}_acc"] for r in recent]), step))
        new = {kind: message for kind, message in found.items() if kind not in self.raised}
        self.raised.update(new)
        return new

    def _global(self, mean, step):
        span = f"mean {mean:.3f} over steps {step - self.window + 1}-{step}"
        if abs(mean - self.log_k) <= self.UNIFORM_TOLERANCE * self.log_k:
            return {"uniform_teacher": f"collapse? the global loss stays at log(K) = {self.log_k:.3f} ({span}): "
                                       f"the teacher's outputs look uniform over the K prototypes"}
        if mean <= self.ONE_HOT_FRACTION * self.log_k:
            return {"one_hot_teacher": f"collapse? the global loss is near 0 ({span}), so the teacher's output "
                                       f"entropy is too: every image may map to one prototype"}
        return {}

    def _matching(self, loss, mean, step):
        chance = self.chance[loss]
        if mean > self.CHANCE_FACTOR * chance:
            return {}
        name = {"comp": "composition", "decomp": "decomposition"}[loss]
        return {f"{loss}_chance": f"stalled? the {name} matching accuracy is {mean:.4f} (mean over steps "
                                  f"{step - self.window + 1}-{step}), about chance (1/{round(1 / chance)}): "
                                  f"the local tokens do not find their teacher tokens"}
