"""What a person types and sees (issue 21): --version, help on every option with panels, `predict` on image files."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from edgeexit.cli import app


def test_version_prints_edgeexit_and_runtimes_without_importing_them():
    from edgeexit import __version__

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"edgeexit {__version__}"
    assert any(line.startswith("torch ") for line in lines)  # installed here: its version is listed
    # a fresh process: --version reads package metadata and --help reads the options; neither imports torch,
    # numpy or a runtime (seconds) to print a line
    code = ("import sys\nfrom edgeexit.cli import main\n"
            "for argv in (['--version'], ['--help'], ['build', '--help'], ['predict', '--help']):\n"
            "    sys.argv = ['edgeexit', *argv]\n"
            "    try:\n        main()\n    except SystemExit:\n        pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'numpy', 'onnxruntime', 'executorch', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "edgeexit predict" in out.stdout or "predict" in out.stdout
    assert out.stdout.rstrip().endswith("HEAVY []"), out.stdout[-500:]


def test_every_option_has_help_and_long_commands_have_panels():
    import typer
    from typer.core import TyperArgument, TyperOption

    group = typer.main.get_command(app)
    missing, unpanelled, seen = [], [], 0
    for name, command in group.commands.items():
        params = [p for p in command.params if p.name != "help"]
        assert all(isinstance(p, (TyperOption, TyperArgument)) for p in params), name
        options = [p for p in params if isinstance(p, TyperOption)]
        for p in params:
            seen += 1
            if not (p.help or "").strip():
                missing.append(f"{name} {p.opts[0]}")
        if len(options) > 8:
            unpanelled += [f"{name} {p.opts[0]}" for p in options if not p.rich_help_panel]
    assert seen > 100  # the walk saw the real commands (build alone takes over 40 options)
    assert not missing, f"options without help: {missing}"
    assert not unpanelled, f"options outside a panel: {unpanelled}"
    assert any("--version" in p.opts for p in group.params)


def test_build_help_lists_the_panels_in_order():
    res = CliRunner().invoke(app, ["build", "--help"], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    heads = [line.split("─ ", 1)[1].split(" ", 1)[0] for line in res.output.splitlines() if line.startswith("╭─ ")]
    assert [h for h in heads if h != "Options"] == ["Data", "Model", "Training", "Calibration", "Export", "Device",
                                                 "Output"]
    assert "--budget" in res.output and "fraction of full MACs" in res.output


def _write_images(folder, shapes_modes):
    """Tiny PNG/JPEG files of different sizes and modes: what a person points predict at."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w), mode in shapes_modes:
        pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        path = folder / name
        Image.fromarray(pixels, mode).save(path)
        paths.append(path)
    return paths


def test_load_images_matches_training_preprocessing(built, tmp_path):
    """load_images gives what training fed the network: the in-memory datasets' resize (bilinear, no antialias)
    of the [0, 1] pixels, normalised with the manifest's mean and std."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from edgeexit.bundle import load_bundle
    from edgeexit.images import load_images

    run, _ = built
    manifest = load_bundle(run / "bundle").manifest
    assert manifest.input.resize == "bilinear"  # the synthetic dataset: recorded in the manifest
    c, h, w = manifest.input.shape
    (png,) = _write_images(tmp_path, [("a.png", (40, 24), "RGB")])
    x = load_images([png], manifest)
    assert x.shape == (1, c, h, w) and x.dtype == np.float32
    pixels = np.asarray(Image.open(png).convert("L" if c == 1 else "RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(pixels)
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    expected = (t - torch.tensor(manifest.input.mean).view(1, -1, 1, 1)) / torch.tensor(manifest.input.std).view(1, -1, 1, 1)
    np.testing.assert_allclose(x, expected.numpy(), atol=1e-5)


def test_predict_png_jpeg_and_folder_table_and_json(built, tmp_path):
    import json

    from edgeexit.bundle import load_bundle

    run, _ = built
    names = load_bundle(run / "bundle").manifest.class_names
    png, jpg = _write_images(tmp_path / "single", [("one.png", (16, 16), "L"), ("two.jpg", (30, 20), "RGB")])
    folder = tmp_path / "folder"
    _write_images(folder, [("b.png", (16, 16), "RGB"), ("a.jpeg", (12, 18), "L")])
    (folder / "notes.txt").write_text("not an image, not listed: a folder gives its image files only")

    res = CliRunner().invoke(app, ["predict", str(run / "bundle"), str(png), str(jpg), str(folder)],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for shown in ("one.png", "two.jpg", "a.jpeg", "b.png", "exit", "score", "ms"):
        assert shown in res.output
    assert "notes.txt" not in res.output

    res = CliRunner().invoke(app, ["predict", str(run / "bundle"), str(png), str(jpg), str(folder), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # the answers on stdout; a note (a busy machine) goes to stderr
    rows = out["predictions"]
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["one.png", "two.jpg", "a.jpeg", "b.png"]  # folder sorted
    for r in rows:
        assert r["class"] == names[r["class_index"]]
        assert 0 <= r["exit"] < out["num_exits"] and 0.0 <= r["score"] <= 1.0 and r["ms"] > 0
    assert out["backend"]


def test_predict_refuses_a_file_that_is_not_an_image(built, tmp_path):
    run, _ = built
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"this is text, not a PNG")
    before = bad.read_bytes()
    res = CliRunner().invoke(app, ["predict", str(run / "bundle"), str(bad)])
    assert res.exit_code == 2, res.output
    assert "not an image edgeexit can read" in res.output and "photo.png" in res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)  # a clean exit, no exception escaped
    assert bad.read_bytes() == before
    res = CliRunner().invoke(app, ["predict", str(run / "bundle"), str(tmp_path / "missing.jpg")])
    assert res.exit_code == 2 and "image not found" in res.output


def test_load_images_matches_image_folder_training(built, tmp_path):
    """A bundle trained on a `folder:` dataset records resize "bilinear_antialias"; load_images then gives exactly
    the tensor the training dataset (edgeexit.data.folder) gave for the same file."""
    import numpy as np

    from edgeexit.bundle import load_bundle
    from edgeexit.data.folder import load_image_folder
    from edgeexit.images import load_images

    run, _ = built
    manifest = load_bundle(run / "bundle").manifest
    for cls in ("cat", "dog"):
        _write_images(tmp_path / "data" / cls, [(f"{cls}{i}.png", (23 + i, 31), "RGB") for i in range(3)])
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    splits = load_image_folder(tmp_path / "data", image_size=16, channels=3, mean=mean, std=std)
    folder = splits.train.dataset  # the ImageFolder with training's transform
    info = manifest.input.model_copy(update={"shape": [3, 16, 16], "mean": mean, "std": std,
                                             "resize": "bilinear_antialias"})
    as_trained = manifest.model_copy(update={"input": info})
    files = [path for path, _ in folder.samples]
    x = load_images(files, as_trained)
    expected = np.stack([folder[i][0].numpy() for i in range(len(files))])
    np.testing.assert_allclose(x, expected, atol=1e-6)
    # the in-memory resize (no antialias) gives other pixels: the recorded method matters
    plain = manifest.model_copy(update={"input": info.model_copy(update={"resize": "bilinear"})})
    assert np.abs(load_images(files, plain) - expected).max() > 1e-3
