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
    assert [h for h in heads if h != "Options"] == ["Data", "Model", "Training", "Calibration", "Export", "Device"]
    assert "--budget" in res.output and "fraction of full MACs" in res.output
