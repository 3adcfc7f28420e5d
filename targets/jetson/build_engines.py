#!/usr/bin/env python3
"""Build the TensorRT engines of an edgeexit bundle on the device that will run them, then profile them there.

`edgeexit build --target jetson` (or `--target cuda`) writes this script into the bundle as tensorrt/build_engines.py,
beside the ONNX segments it builds from. On the Jetson (or the serving GPU machine), with edgeexit installed:

    python3 RUN/bundle/tensorrt/build_engines.py                 # Python builder, then `edgeexit profile`
    python3 RUN/bundle/tensorrt/build_engines.py --trtexec /usr/src/tensorrt/bin/trtexec
    python3 RUN/bundle/tensorrt/build_engines.py --no-profile

It builds one engine per ONNX file (every segment, the profiler's probes and the unsplit reference), each with an
optimisation profile over the bundle's batch range (min 1, opt the segment's typical live batch from the
calibration, max), at the bundle's precision; records them (TensorRT version, GPU, compute capability, L4T release)
in a new version of the bundle through edgeexit's own bundle writer; and runs `edgeexit profile` on the result, so the
latency table (and a millisecond budget calibrated from it) is the device's own.

With TensorRT-RTX and no GPU, `--compute-capability 8.6` builds in CPU-only mode (desktop GPUs only; what CI checks).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).absolute().parent.parent  # the bundle this script came in (RUN/bundle: not resolved)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=here, help="the bundle (default: the one holding this script)")
    p.add_argument("--out", type=Path, default=None, help="where the new version goes (default: --bundle itself)")
    p.add_argument("--trtexec", default=None, help="build with this trtexec instead of TensorRT's Python builder")
    p.add_argument("--workspace-mb", type=int, default=None, help="builder workspace limit")
    p.add_argument("--compute-capability", action="append", default=None,
                   help="TensorRT-RTX only: build for this compute capability (e.g. 8.6; repeatable) without a GPU")
    p.add_argument("--flavour", choices=["tensorrt", "tensorrt_rtx"], default=None,
                   help="which TensorRT to build with (default: tensorrt if importable, else tensorrt_rtx)")
    p.add_argument("--no-profile", action="store_true", help="do not run `edgeexit profile` afterwards")
    args = p.parse_args(argv)

    try:
        from edgeexit.errors import EdgeExitError
        from edgeexit.export.lower_engine import build_bundle_engines, cuda_device_count
    except ImportError:
        print("edgeexit is not installed here: pip install -e '.[jetson]' from its repository (see README.md)",
              file=sys.stderr)
        return 2

    dest = args.out or args.bundle
    try:
        bundle = build_bundle_engines(args.bundle, dest, compute_capabilities=args.compute_capability,
                                      workspace_mb=args.workspace_mb, flavour=args.flavour, trtexec=args.trtexec)
    except EdgeExitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    builder = __import__("json").loads((bundle.root / "engine" / "engines.json").read_text())["builder"]
    print(f"engines: {len(bundle.exits)} segments + reference, {builder['flavour']} {builder['version']}, "
          f"compute capability {', '.join(builder['compute_capabilities'])}"
          f"{', GPU ' + builder['gpu'] if builder['gpu'] else ' (CPU-only build)'}"
          f"{', L4T ' + builder['l4t'] if builder['l4t'] else ''} -> {dest} ({bundle.root.name})")
    if args.no_profile:
        return 0
    if cuda_device_count() == 0:
        print("no CUDA device here: the engines cannot be profiled on this machine; copy the bundle to the device and "
              "run `edgeexit profile --run-dir RUN` there")
        return 0
    if dest.name != "bundle":
        print(f"{dest} is not RUN/bundle: profile it with `edgeexit profile --run-dir RUN` once it is")
        return 0
    return subprocess.call([sys.executable, "-m", "edgeexit", "profile", "--run-dir", str(dest.parent)])


if __name__ == "__main__":
    sys.exit(main())
