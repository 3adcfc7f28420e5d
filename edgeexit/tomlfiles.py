"""Named TOML presets (targets, budgets, calibration recipes): a name looked up in a folder, or a path."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from edgeexit.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def preset_dir(kind: str, env_var: str, *, nested: bool = False) -> Path:
    """The folder of the `kind` presets ("targets", "budgets", "recipes"): $`env_var` if set (its `kind/`
    subfolder when `nested`), else the package data folder `edgeexit/presets/<kind>/`."""
    if os.environ.get(env_var):
        folder = Path(os.environ[env_var])
        return folder / kind if nested else folder
    # A regular package on disk (a wheel or an editable install): files() is a real directory.
    return Path(str(resources.files("edgeexit.presets") / kind))


def names(folder: Path) -> list[str]:
    """The preset names (file stems) of the .toml files in `folder`."""
    return sorted(p.stem for p in Path(folder).glob("*.toml"))


def find(folder: Path, name_or_path: str | Path, what: str, hint: str) -> Path:
    """`folder/<name>.toml` for a name, or the file itself for anything that looks like a path."""
    text = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" or "/" in text or len(path.parts) > 1:
        if not path.is_file():
            raise ConfigError(f"no such {what} file", got=text, expected="an existing .toml file", hint=hint)
        return path
    path = Path(folder) / f"{text}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown {what}", got=repr(text), expected=" | ".join(names(folder)) or f"a .toml file in {folder}",
                          hint=hint)
    return path


def read(path: Path, what: str) -> dict[str, Any]:
    """The parsed TOML file; a syntax error is a ConfigError naming the file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} file {path} is not valid TOML", got=str(err), expected="TOML",
                          hint="fix the file, or start from one of the shipped presets") from err
