"""The `edgeexit glue` command (registered by edgeexit/cli.py; here so that cli.py stays a thin layer)."""

from __future__ import annotations

from rich.console import Console

from edgeexit import cli_options as flags
from edgeexit.cli_options import options


@options(flags.GLUE)
def glue(out, what):
    """Copy the device glue out of the package into OUT: the C++ runner (executorch), the Android module, the Swift
    package and the Jetson notes, with their READMEs. OUT must be absent, empty or a previous glue copy; no file of
    yours is overwritten or deleted."""
    from edgeexit.glue import copy_glue

    Console().print(copy_glue(out, what).summary(), soft_wrap=True, highlight=False, markup=False)
