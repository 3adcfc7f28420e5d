"""Issue 18: a bundle of one segment (a static truncation) runs as one plain call per chunk: no scoring, scatter or
compaction, the same outputs as the general loop gives. Real onnxruntime and torch on the tiny build's exit 1."""

from __future__ import annotations

import numpy as np
import pytest

from edgeexit.errors import ShapeError


@pytest.fixture(scope="module")
def static_bundle(built, tmp_path_factory):
    from test_deploy_search import _cut

    from edgeexit.bundle import load_bundle

    path, _, _ = _cut(built, tmp_path_factory.mktemp("static") / "run", [1])
    return load_bundle(path)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_single_segment_bundle_runs_as_a_plain_call_with_the_loops_outputs(static_bundle, backend, monkeypatch):
    from edgeexit.runtime import EarlyExitRuntime

    rt = EarlyExitRuntime.open(static_bundle, backend)
    try:
        assert rt.num_exits == 1
        # the loop's bookkeeping is not paid: no exit test, no scatter into an output buffer, no compaction
        for name in ("exit_flags", "scatter", "gather"):
            monkeypatch.setattr(rt.backend, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} called"))
        n = rt.max_batch + 6  # two chunks: a full one and a short one
        x = np.random.default_rng(1).standard_normal((n, *static_bundle.input_shape)).astype(np.float32)
        rt.trace = []
        res = rt.run(x)
        assert rt.trace == ["segment0", "segment0"]  # one call per chunk, no exit test
        # what the general loop computes for the same segment (every exit's outputs, no early exit)
        want = rt.exit_outputs(x)[0]["logits"]
        assert np.array_equal(res.logits, want)
        assert np.array_equal(res.predictions, want.argmax(1))
        assert (res.exit_index == 0).all() and (res.macs == static_bundle.exits[0].cumulative_macs).all()
        assert res.logits.dtype == np.float32 and res.logits.flags.c_contiguous
        forced = rt.forced(0).run(x[:5])  # (the same batch size: a kernel may round another batch size otherwise)
        assert np.array_equal(forced.logits, rt.exit_outputs(x[:5])[0]["logits"]) and (forced.exit_index == 0).all()
        # the contract's checks still hold on the fast path: bad input, non-finite logits
        bad = x[:3].copy()
        bad[1, 0, 0, 0] = np.nan
        with pytest.raises(ShapeError, match="NaN or inf"):
            rt.run(bad)
        # a segment that answers NaN (the head's ReLU may turn an overflow into zeros, so no input is sure to): the
        # real segment's outputs, one logit replaced
        segment, real = rt.segments[0], rt.segments[0].run

        def nan_logit(feeds):
            outs = dict(real(feeds))
            logits = np.array(rt.backend.download(outs["logits"]))
            logits[1, 3] = np.nan
            outs["logits"] = rt.backend.upload(logits)
            return outs

        monkeypatch.setattr(segment, "run", nan_logit)
        with pytest.raises(ShapeError, match="non-finite logits"):
            rt.run(x[:3])
    finally:
        rt.close()
