"""matplotlib and scikit-learn are extras: `import ace`, training and `ace embed` work without
them, and what needs them says which extra to install."""
import subprocess
import sys
import textwrap

import numpy as np

from ace.extras import OPTIONAL

# Runs in a fresh interpreter where the optional packages cannot be imported (a None entry in
# sys.modules makes `import matplotlib` fail as if it were not installed).
WITHOUT_EXTRAS = """\
import sys
for name in {blocked!r}:
    sys.modules[name] = None
"""


def run_without_extras(code, tmp_path):
    script = WITHOUT_EXTRAS.format(blocked=sorted(OPTIONAL)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_import_train_and_embed_without_the_extras(tmp_path, tiny_images):
    r = run_without_extras(f"""
        import numpy as np
        import ace
        from ace import cli
        enc = ace.Encoder("vit_nano", img_size=64)
        cls, tokens = enc.embed(np.zeros((2, 64, 64), np.uint8))
        enc.save("enc.safetensors")
        code = cli.main(["embed", "--checkpoint", "enc.safetensors", "--data", {str(tiny_images)!r},
                         "--out", "emb.npz"])
        assert code == 0, code
        code = cli.main(["pretrain", "--data", {str(tiny_images)!r}, "--preset", "vit_nano", "--steps", "1",
                         "--batch-size", "2", "--image-size", "256", "--set", "head_prototypes=64", "--out", "run"])
        assert code == 0, code
        loaded = [m for m in ("matplotlib", "sklearn") if sys.modules.get(m) is not None]
        assert not loaded, loaded
        print("ok")
    """, tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr
    assert np.load(tmp_path / "emb.npz")["cls"].shape == (6, 96)
    assert (tmp_path / "run" / "last.safetensors").exists() and not (tmp_path / "run" / "loss.png").exists()
    assert "the loss figure (loss.png) needs matplotlib" in r.stderr and "ace-swift[plots]" in r.stderr


def test_what_needs_an_extra_names_it(tmp_path, tiny_images):
    r = run_without_extras(f"""
        import ace
        from ace import cli
        for name, extra in (("probes", "eval"), ("plots", "plots"), ("evaluate", "eval")):
            try:
                getattr(ace, name)
            except ace.ACEError as e:
                assert f"ace-swift[{{extra}}]" in str(e) and f"ace.{{name}} needs" in str(e), e
            else:
                raise AssertionError(name)
        ace.Encoder("vit_nano", img_size=64).save("enc.safetensors")
        assert cli.main(["evaluate", "--random-init", "vit_nano", "--out", "ev"]) == 1
        assert cli.main(["attention", "enc.safetensors", {str(tiny_images)!r}, "--out", "att"]) == 1
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ace evaluate: error: ace evaluate needs" in r.stderr and "ace-swift[eval]" in r.stderr
    assert "ace attention: error: ace attention needs matplotlib" in r.stderr and "ace-swift[plots]" in r.stderr
