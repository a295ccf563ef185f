"""`ace pretrain --config FILE --set KEY=VALUE`: settings from YAML/JSON files and overrides,
the resolved settings saved with the run, and a repeat from them that is exact."""
import json

import pytest
import yaml
from safetensors.numpy import load_file

import ace

from conftest import run_ace


def losses(out):
    return [(r["step"], r["loss"], r["comp"], r["decomp"])
            for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def test_file_overrides_and_options_resolve_in_order(configured_run, tiny_images):
    out = configured_run / "a"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["encoder"] == "vit_nano" and cfg["batch_size"] == 2 and cfg["head_prototypes"] == 64
    assert cfg["lr"] == 0.001 and cfg["alpha_comp"] == 0.8 and cfg["precision"] == "fp32"
    assert cfg["objective"] == "ace" and cfg["losses"] == ["comp", "decomp"]
    assert cfg["grid"]["window"] == 3 and cfg["augment"]["clahe_p"] == 0.3
    run = ace.Trainer.load(out / "last.safetensors").run_state
    assert run["seed"] == 7 and run["steps"] == 4
    assert len(losses(out)) == 4

    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["seed"] == 7 and resolved["steps"] == 4 and resolved["checkpoint_every"] == 2
    assert resolved["threads"] == 1 and resolved["data"] == str(tiny_images)
    assert resolved["grid"]["window"] == 3 and resolved["losses"] == ["comp", "decomp"]
    # Derived values are derived again on a repeat; the output folder is the repeat's own.
    assert "epochs" not in resolved and "steps_per_epoch" not in resolved and "out" not in resolved


def test_resolved_config_repeats_the_run_exactly(configured_run):
    first, again = configured_run / "a", configured_run / "b"
    run_ace("pretrain", "--config", first / "config.yaml", "--out", again)
    assert losses(again) == losses(first)
    a, b = load_file(str(first / "last.safetensors")), load_file(str(again / "last.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (again / "config.yaml").read_text() == (first / "config.yaml").read_text()


@pytest.mark.parametrize("name,text,args,message", [
    ("typo.yaml", "batch_szie: 2\ngrid: {windw: 3}\ncolour: red\n", [],
     "typo.yaml: unknown keys: batch_szie (did you mean batch_size?), colour, grid.windw (did you mean grid.window?)"),
    ("bad.json", '{"lr": "fast"}', [], "bad.json: lr must be a number, got str 'fast'"),
    ("broken.json", '{"lr": 0.1,}', [], "broken.json is not valid JSON"),
    ("list.yaml", "- lr\n", [], "must hold a mapping of settings"),
    ("ok.yaml", "steps: 3\n", ["--set", "grid.windw=4"], "--set: unknown keys: grid.windw (did you mean grid.window?)"),
    ("ok.yaml", "steps: 3\n", ["--set", "lr"], "--set expects KEY=VALUE"),
    ("ok.yaml", "steps: 3\n", ["--set", "seed=-1"], "--set: seed must be in [0, 18446744073709551615], got -1"),
    ("both.yaml", "steps: 3\nepochs: 2\n", [], "both.yaml: give steps or epochs, not both"),
])
def test_bad_settings_are_rejected_naming_the_key_and_source(tmp_path, name, text, args, message):
    (tmp_path / name).write_text(text)
    r = run_ace("pretrain", "--config", tmp_path / name, *args, "--out", tmp_path / "out", check=False)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_resume_refuses_new_settings(configured_run):
    r = run_ace("pretrain", "--resume", configured_run / "a" / "last.safetensors", "--set", "lr=1", check=False)
    assert r.returncode == 1 and "--resume continues a run with the settings it started with" in r.stderr


def test_help_documents_config_files():
    text = run_ace("pretrain", "--help").stdout
    for phrase in ("--config FILE", "--set KEY=VALUE", "grid.window=5", "OUT/config.yaml", "tensorboard --logdir"):
        assert phrase in text, phrase


def test_fields_and_defaults_are_the_cores():
    """The core owns the defaults: every field the core knows is declared here with the core's
    default, and no other (the core refuses unknown settings)."""
    core = json.loads(ace._native.pretrain_config_defaults())
    ours = ace.PretrainConfig().to_dict()
    assert set(ours) == set(core)
    for group in ("grid", "augment"):
        assert ours[group] == pytest.approx(core.pop(group)), group
        ours.pop(group)
    for key, value in core.items():
        if isinstance(value, float):
            assert ours[key] == pytest.approx(value, rel=1e-6), key
        else:
            assert ours[key] == value, key
    assert set(json.loads(ace._native.presets())) == set(ace.config.PRESETS + ace.config.SWIN_PRESETS)
