"""What `ace pretrain` logs: TensorBoard event files (read back with TensorBoard's own reader),
and collapse/stall warnings, printed once and recorded in metrics.jsonl."""
import io
import json
import math

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

import ace
from ace.runlog import Monitor
from conftest import run_ace

SCALAR_TAGS = {
    "loss/total": "loss", "loss/global": "global", "loss/comp": "comp", "loss/decomp": "decomp",
    "accuracy/comp": "comp_acc", "accuracy/decomp": "decomp_acc", "schedule/lr": "lr", "schedule/wd": "wd",
    "schedule/momentum": "momentum", "train/grad_norm": "grad_norm", "train/images_per_s": "images_per_s",
    "train/cpu_s": "cpu_s",
}
WARNING_KINDS = {"uniform_teacher", "comp_chance", "decomp_chance"}


def read_events(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def stalled_run(tmp_path_factory, tiny_images):
    """A run that learns nothing: a vanishing learning rate, and temperatures so high that
    teacher and student outputs are uniform (the global loss is log K), as in a collapse.
    No warm-up, so the checks start after their 5-step window."""
    out = tmp_path_factory.mktemp("stalled")
    # Settings in a JSON config file, as users of earlier versions wrote them.
    settings = out / "stalled.json"
    settings.write_text(json.dumps({"teacher_temp": 100, "student_temp": 100, "warmup_fraction": 0,
                                    "head_prototypes": 64}))
    result = run_ace("pretrain", "--config", settings, "--data", tiny_images, "--preset", "vit_nano", "--steps", "7",
                     "--batch-size", "2", "--lr", "1e-9", "--threads", "1", "--precision", "fp32", "--out", out)
    assert json.loads((out / "config.json").read_text())["teacher_temp"] == 100
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, result, rows


def test_every_step_scalar_is_in_tensorboard(stalled_run):
    out, _, rows = stalled_run
    acc = read_events(out)
    assert set(acc.Tags()["scalars"]) == set(SCALAR_TAGS)
    for tag, key in SCALAR_TAGS.items():
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["step"] for r in rows] == list(range(1, 8)), tag
        np.testing.assert_allclose([e.value for e in events], [r[key] for r in rows], rtol=1e-6, err_msg=tag)


def test_loss_figure_is_in_tensorboard(stalled_run):
    out, _, _ = stalled_run
    [image] = read_events(out).Images("loss")
    assert image.step == 7
    drawn = Image.open(io.BytesIO(image.encoded_image_string))
    assert drawn.size == Image.open(out / "loss.png").size == (image.width, image.height)


def test_collapse_and_stall_warnings_are_printed_once_and_recorded(stalled_run):
    out, result, rows = stalled_run
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 3, result.stderr
    assert any(f"log(K) = {math.log(64):.3f}" in line and "uniform" in line for line in lines)
    assert any("composition matching accuracy" in line and "chance (1/49)" in line for line in lines)
    assert any("decomposition matching accuracy" in line and "chance (1/784)" in line for line in lines)
    # Raised after the 5-step window, on one row only, each kind once.
    flagged = [r for r in rows if "warnings" in r]
    assert [r["step"] for r in flagged] == [5] and set(flagged[0]["warnings"]) == WARNING_KINDS
    acc = read_events(out)
    assert {tag.split("/")[1] for tag in acc.Tags()["tensors"]} == WARNING_KINDS


def test_no_warning_for_a_run_that_learns():
    """The checks on the metrics of a healthy run (the global loss falling from log K, the
    matching accuracies far above chance after warm-up) stay silent."""
    cfg = ace.PretrainConfig(encoder="vit_nano", epochs=1, steps_per_epoch=400, head_prototypes=1024)
    log_k = math.log(1024)
    rows = [{"step": s, "global": log_k * (1 - 0.5 * s / 400), "comp_acc": 0.3, "decomp_acc": 0.02}
            for s in range(1, 401)]
    monitor = Monitor(cfg, 400)
    assert all(monitor.check(rows[:i]) == {} for i in range(1, 401))


def test_each_warning_rule():
    cfg = ace.PretrainConfig(encoder="vit_nano", epochs=1, steps_per_epoch=100, head_prototypes=1024,
                             warmup_fraction=0.2)
    log_k = math.log(1024)

    def first_warning(global_loss, comp_acc=0.5, decomp_acc=0.5):
        monitor = Monitor(cfg, 100)
        rows = [{"step": s, "global": global_loss, "comp_acc": comp_acc, "decomp_acc": decomp_acc}
                for s in range(1, 101)]
        for i in range(1, 101):
            found = monitor.check(rows[:i])
            if found:
                return i, set(found)
        return None

    # Nothing before warm-up (20 steps) plus the window (a tenth of the run: 10 steps).
    assert first_warning(log_k * 0.99) == (30, {"uniform_teacher"})
    assert first_warning(log_k * 0.01) == (30, {"one_hot_teacher"})
    assert first_warning(log_k * 0.5, comp_acc=1 / 49) == (30, {"comp_chance"})
    assert first_warning(log_k * 0.5, decomp_acc=1 / 784) == (30, {"decomp_chance"})
    assert first_warning(log_k * 0.9, comp_acc=3 / 49, decomp_acc=3 / 784) is None
    # A resumed run does not repeat the warnings its rows already hold.
    history = [{"step": s, "global": log_k, "comp_acc": 0.5, "decomp_acc": 0.5} for s in range(1, 41)]
    history[29]["warnings"] = {"uniform_teacher": "..."}
    assert Monitor(cfg, 100, history[:30]).check(history) == {}


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_good_state(tmp_path, tiny_images):
    # An absurd learning rate: the core refuses the first step whose loss is not finite and
    # leaves the run as it was; the command saves it, writes its logs and names the failure.
    r = run_ace("pretrain", "--data", tiny_images, "--preset", "vit_nano", "--steps", "6", "--batch-size", "2",
                "--lr", "1e30", "--threads", "1", "--out", tmp_path, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    [line] = [line for line in r.stderr.splitlines() if "error:" in line]
    assert "loss became" in line and "lower the learning rate" in line and "are saved in" in line
    done = len((tmp_path / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 6 and ace.Trainer.load(tmp_path / "last.safetensors").steps_done == done
    assert (tmp_path / "loss.png").exists()
    acc = read_events(tmp_path)
    assert [e.step for e in acc.Scalars("loss/total")] == list(range(1, done + 1))
    assert "warnings/divergence/text_summary" in acc.Tags()["tensors"]


def test_events_of_redone_steps_replace_the_earlier_ones(tmp_path):
    # A resumed run (or a new run in the same folder) writes a new event file; TensorBoard must
    # show the steps from its first step on from that file only, and keep the earlier steps.
    from ace.runlog import TensorBoardLog

    def write(first_step, steps, value):
        log = TensorBoardLog(tmp_path, first_step, ["global", "comp", "decomp"])
        for step in steps:
            log.step({key: value for key in SCALAR_TAGS.values()} | {"step": step})
        log.close()

    write(1, range(1, 6), 1.0)
    # Written by an earlier process: an earlier timestamp in the name (files load in name order).
    [old] = tmp_path.glob("events.out.tfevents.*")
    parts = old.name.split(".", 4)          # events, out, tfevents, seconds, host.pid
    old.rename(old.with_name(".".join([*parts[:3], str(int(parts[3]) - 10), parts[4]])))
    write(3, range(3, 5), 2.0)
    events = read_events(tmp_path).Scalars("loss/total")
    assert [(e.step, e.value) for e in events] == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0)]
