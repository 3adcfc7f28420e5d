"""AEP's exit weights (papers/000, Table I), in one place: α for the training loss, β for the ensemble output.
Training (`train.losses`), pruning (`prune`) and the bundle's ensemble weights all take them from here."""

from __future__ import annotations

import numpy as np

from edgeexit.errors import ConfigError

AEP_MODES = ("desc", "asc", "mix", "unif")
AEP_ROLES = ("loss", "output")


def aep_weights(n: int, mode: str, role: str) -> np.ndarray:
    """AEP weights for `n` exits, in exit order (papers/000 Table I): alpha (role "loss") or beta ("output").

    Linear in the exit index, strictly positive, summing to 1: ascending w_i = i / (n(n+1)/2) for
    i = 1..n, descending the reverse, uniform 1/n. desc: both roles descending; asc: both ascending;
    mix: loss descending, output ascending; unif: both uniform.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError("AEP weights need a positive number of exits", got=repr(n))
    if not isinstance(mode, str) or mode.lower() not in AEP_MODES:
        raise ConfigError("unknown AEP weight mode", got=repr(mode), expected=" | ".join(AEP_MODES))
    if role not in AEP_ROLES:
        raise ConfigError("unknown AEP weight role", got=repr(role), expected=" | ".join(AEP_ROLES))
    mode = mode.lower()
    if mode == "unif":
        return np.full(n, 1.0 / n)
    ascending = np.arange(1, n + 1, dtype=np.float64) / (n * (n + 1) / 2)
    if mode == "asc" or (mode == "mix" and role == "output"):
        return ascending
    return ascending[::-1].copy()
