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
    # a fresh process: --version reads package metadata, it does not import torch (seconds) to print a version
    code = "import sys; from edgeexit.cli import main; sys.argv=['edgeexit','--version']\n" \
           "try:\n    main()\nexcept SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "TORCH False" in out.stdout
