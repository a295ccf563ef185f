"""The reference CPU recipe the README points to (configs/reference_cpu.yaml) stays a valid
run: every key it holds is a setting, the authors' recipe lies under its own values, and a
short run from it trains and saves."""
import json

import yaml

import ace

from conftest import REPOSITORY, run_ace

RECIPE = REPOSITORY / "configs" / "reference_cpu.yaml"


def test_reference_recipe_runs_with_the_settings_it_names(tmp_path, tiny_images):
    out = tmp_path / "ref"
    run_ace("pretrain", "--config", RECIPE, "--data", tiny_images, "--set", "steps=2", "batch_size=2",
            "--threads", "1", "--out", out)
    written = yaml.safe_load(RECIPE.read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["encoder"] == written["preset"] and cfg["lr"] == written["lr"]
    assert written["objective"] == "comp+decomp" and cfg["losses"] == ["comp", "decomp"]
    # The authors' recipe under the file: its local heads, 5x5 decomposition window, CLAHE, weights.
    authors = ace.PretrainConfig.recipe("authors", encoder="vit_nano")
    assert cfg["local_head"] == authors.local_head == "authors"
    assert cfg["grid"]["decomp_window"] == authors.grid.decomp_window == 5
    assert cfg["augment"]["clahe_p"] == authors.augment.clahe_p > 0
    assert (cfg["comp_weight"], cfg["decomp_weight"]) == (authors.comp_weight, authors.decomp_weight)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["recipe"] == "authors" and resolved["steps"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["global"] == 0 and r["comp"] > 0 and r["decomp"] > 0 for r in rows)
    assert ace.Trainer.load(out / "last.safetensors").config.losses == ["comp", "decomp"]
