"""`edgeexit compare` across real backends, and an ONNX bundle on a device without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.cli import app
from edgeexit.compare import compare_backends, read_vectors

runner = CliRunner()


def test_onnxruntime_and_torch_agree_on_every_exit_decision(built, tmp_path):
    run, _ = built
    res = runner.invoke(app, ["compare", str(run / "bundle"), "--backends", "onnxruntime,torch", "--samples", "128",
                              "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "100.00 %" in res.output
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["passed"] and got["agreement"] == {"torch": 1.0} and got["samples"] == 128 and got["vectors"] == 8
    for e in got["exits"]:
        assert e["max_abs_logits"]["torch"] <= 1e-4
        assert max(e["vs_vectors"].values()) <= 1e-4


def test_compare_fails_with_a_nonzero_exit_code(built):
    """A tolerance no float computation meets: the command must fail, not print a table and exit 0."""
    run, _ = built
    res = runner.invoke(app, ["compare", str(run / "bundle"), "--samples", "16", "--tolerance", "0"])
    assert res.exit_code == 1 and "FAIL" in res.output


def test_the_vectors_are_what_the_backends_compute(built):
    run, _ = built
    b = load_bundle(run / "bundle")
    vectors = read_vectors(b)
    assert vectors["inputs"].shape == (8, *b.input_shape)
    assert set(vectors) >= {f"exit{k}_{n}" for k in range(len(b.exits)) for n in ("logits", "score")}
    res = compare_backends(b, ["torch"], images=None)
    assert res.passed and res.vectors == 8 and res.samples == 0


BLOCK_TORCH = textwrap.dedent("""
    import sys
    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked: this device has no torch")
    sys.meta_path.insert(0, NoTorch())
    import numpy as np
    from edgeexit.runtime import EarlyExitRuntime
    rt = EarlyExitRuntime.open(sys.argv[1])
    x = np.load(sys.argv[2])
    r = rt.run(x)
    full = rt.reference().run(x)
    assert "torch" not in sys.modules
    np.save(sys.argv[3], np.stack([r.exit_index, r.predictions, full.argmax(1)]))
    print(rt.backend.name)
""")


def test_an_onnx_bundle_runs_without_torch(built, tmp_path):
    run, _ = built
    x = np.random.default_rng(3).standard_normal((20, *load_bundle(run / "bundle").input_shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "device.py"
    script.write_text(BLOCK_TORCH)
    out = subprocess.run([sys.executable, str(script), str(run / "bundle"), str(tmp_path / "x.npy"),
                          str(tmp_path / "got.npy")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "onnxruntime"
    from edgeexit.runtime import EarlyExitRuntime

    rt = EarlyExitRuntime.open(run / "bundle")
    r = rt.run(x)
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), np.stack([r.exit_index, r.predictions,
                                                                           rt.reference().run(x).argmax(1)]))
