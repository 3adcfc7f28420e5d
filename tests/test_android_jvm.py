"""The Android glue on the host JVM: edgeexit/glue/android's EarlyExitClassifier (Kotlin) and edgeexit_jni.cpp, built for
Linux against the C API library of the C++ runner's build, give the Python ExecuTorch backend's predictions and exits
on the same bundle and inputs, report a tampered bundle as EdgeExitException, and verify() the bundle's test vectors
on the device (a tampered vector fails). An image (raw RGB bytes, or Bitmap-style ARGB ints) goes through ImageInput
to the same tensor as edgeexit.images.load_images (within 1e-5, both resize methods, 1 and 3 channels) and comes back
as the Python runtime's class name.

The Kotlin (Debian's kotlinc 1.3, -jvm-target 1.8) and the JNI library are compiled once per session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_cpp_runner import (
    GLUE,
    build_cpp,
    check_verification,
    python_reference,
    require_tool,
    resign,
    run_checked,
    tampered_vectors,
    with_vectors,
)

ANDROID = GLUE / "android"
JAVA_HOME = Path("/usr/lib/jvm/java-17-openjdk-amd64")  # kotlinc 1.3 crashes on newer JDKs (PLATFORM.md)
KOTLIN_STDLIB = Path("/usr/share/java/kotlin-stdlib.jar")


def check_jdk() -> None:
    require_tool(JAVA_HOME / "bin" / "java", f"the JDK 17 at {JAVA_HOME} (Debian package default-jdk-headless)")
    if not (JAVA_HOME / "include" / "jni.h").is_file() or not KOTLIN_STDLIB.is_file():
        pytest.fail(f"jni.h or the Kotlin stdlib is missing | got: {JAVA_HOME}/include, {KOTLIN_STDLIB} | "
                    "hint: apt-get install default-jdk-headless kotlin", pytrace=False)


def compile_kotlin(out: Path) -> Path:
    """EarlyExitClassifier.kt + the host Main.kt -> out/app.jar (kotlinc 1.3, -jvm-target 1.8)."""
    kotlinc = require_tool(shutil.which("kotlinc"), "kotlinc (Debian package kotlin)")
    t0 = time.perf_counter()
    kotlin = ANDROID / "edgeexit" / "src" / "main" / "kotlin" / "dev" / "edgeexit"
    # BitmapInput.kt needs android.graphics: Android only (it calls classifyArgb, which the tests run)
    sources = [kotlin / "EarlyExitClassifier.kt", kotlin / "ImageInput.kt", ANDROID / "host" / "Main.kt"]
    run_checked([kotlinc, "-jvm-target", "1.8", "-nowarn", *map(str, sources), "-d", str(out / "app.jar")],
                "kotlinc of EarlyExitClassifier.kt + Main.kt",
                env={"JAVA_HOME": str(JAVA_HOME), "PATH": "/usr/bin:/bin"})
    print(f"\n[jvm] kotlinc: {time.perf_counter() - t0:.1f} s")
    return out / "app.jar"


def compile_jni(build: Path, out: Path) -> Path:
    """edgeexit_jni.cpp -> out/libedgeexit_jni.so, linked to the C++ build's libedgeexit.so (found by rpath)."""
    gxx = require_tool(shutil.which("g++"), "g++")
    run_checked([gxx, "-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", f"-I{JAVA_HOME}/include",
                 f"-I{JAVA_HOME}/include/linux", f"-I{GLUE}/executorch/include",
                 str(ANDROID / "edgeexit" / "src" / "main" / "cpp" / "edgeexit_jni.cpp"),
                 f"-L{build}", "-ledgeexit", f"-Wl,-rpath,{build}", "-o", str(out / "libedgeexit_jni.so")],
                "g++ of libedgeexit_jni.so")
    return out


@pytest.fixture(scope="session")
def jvm_app(tmp_path_factory, request) -> tuple[Path, Path]:
    """(directory holding libedgeexit_jni.so, app.jar). kotlinc and the C++ build (a no-op after
    test_cpp_runner.py's) run in the background while the session trains and exports the tiny bundle."""
    check_jdk()
    out = tmp_path_factory.mktemp("jvm")
    with ThreadPoolExecutor(max_workers=2) as pool:
        jar = pool.submit(compile_kotlin, out)
        build = pool.submit(build_cpp, tmp_path_factory.getbasetemp())
        request.getfixturevalue("android_bundle")
        return compile_jni(build.result(), out), jar.result()


def java(app: tuple[Path, Path], *args: str) -> subprocess.CompletedProcess:
    lib_dir, jar = app
    return subprocess.run([str(JAVA_HOME / "bin" / "java"), f"-Djava.library.path={lib_dir}", "-cp",
                           f"{jar}:{KOTLIN_STDLIB}", "MainKt", *args], check=False, capture_output=True, text=True,
                          timeout=120)


def run_jvm(app: tuple[Path, Path], bundle: Path, x: np.ndarray, tmp: Path) -> subprocess.CompletedProcess:
    inp = tmp / "x.f32"
    x.astype("<f4").tofile(inp)
    return java(app, str(bundle), str(inp), str(len(x)))


def test_jvm_classifier_matches_python_backend(jvm_app, spread_bundle, inputs, tmp_path):
    want = python_reference(spread_bundle, inputs)
    res = run_jvm(jvm_app, spread_bundle, inputs, tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    manifest = json.loads((spread_bundle / "manifest.json").read_text())
    assert got["input_shape"] == manifest["input"]["shape"] and got["num_exits"] == len(manifest["exits"])
    assert len(set(want.exit_index.tolist())) >= 2, want.exit_index  # the spread bundle uses every exit
    assert got["exits"] == want.exit_index.tolist()
    assert got["predictions"] == want.predictions.tolist()
    logits = np.asarray(got["logits"], np.float32).reshape(len(inputs), got["num_classes"])
    np.testing.assert_allclose(logits, want.logits, rtol=0, atol=1e-4)
    assert len(got["segment_ms"]) == got["num_exits"] and all(ms >= 0 for ms in got["segment_ms"])


def test_jvm_reports_a_tampered_bundle(jvm_app, android_bundle, inputs, tmp_path):
    bundle = Path(shutil.copytree(android_bundle, tmp_path / "bundle"))
    pte = bundle / "pte" / "program.pte"
    data = bytearray(pte.read_bytes())
    data[-100] ^= 0x10
    pte.write_bytes(bytes(data))
    res = run_jvm(jvm_app, bundle, inputs, tmp_path)
    assert res.returncode == 1 and res.stdout == ""
    assert "EdgeExitException" in res.stderr and "pte/program.pte" in res.stderr, res.stderr


def test_jvm_refuses_a_hand_edited_threshold(jvm_app, android_bundle, inputs, tmp_path):
    """A threshold edited in manifest.json without re-sealing it: ee_open (and so Kotlin) recomputes the checksum as
    Python does and refuses the bundle, as the Python loader does."""
    from test_cpp_trust import edit_threshold_unsigned

    bundle = edit_threshold_unsigned(android_bundle, tmp_path / "bundle")
    res = run_jvm(jvm_app, bundle, inputs, tmp_path)
    assert res.returncode == 1 and res.stdout == ""
    assert "EdgeExitException" in res.stderr and "modified after the bundle was written" in res.stderr, res.stderr


@pytest.mark.parametrize("vectors", ["genuine", "tampered"])
def test_jvm_verify(vectors, jvm_app, android_bundle, tmp_path):
    """EarlyExitClassifier.verify() on the bundle's own test vectors passes; on a re-sealed copy whose seg0 vector
    was edited it reports seg0 failed (a result, not an exception) and the other methods passed."""
    bundle = android_bundle
    if vectors == "tampered":
        bundle = with_vectors(android_bundle, tampered_vectors(android_bundle / "pte" / "program.bpte"),
                              tmp_path / "bundle")
    res = java(jvm_app, str(bundle), "--verify")
    assert res.returncode == (0 if vectors == "genuine" else 1), res.stderr
    check_verification(json.loads(res.stdout), android_bundle, failing=None if vectors == "genuine" else "seg0")


def write_image(tmp: Path, width: int, height: int, seed: int = 0) -> tuple[Path, Path]:
    """A random 8-bit RGB image as a PNG (what Python reads) and as raw bytes, row by row (what Kotlin gets)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    png, raw = tmp / "image.png", tmp / "image.rgb"
    Image.fromarray(pixels, "RGB").save(png)
    pixels.tofile(raw)
    return png, raw


@pytest.mark.parametrize("width, height", [(23, 11), (61, 47)], ids=["shrink-and-grow", "shrink-4x"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resize", ["bilinear", "bilinear_antialias"])
def test_kotlin_preprocessing_is_pythons(resize, channels, width, height, jvm_app, tmp_path):
    """ImageInput.fromRgb gives edgeexit.images.load_images's tensor within 1e-5: PIL's grayscale conversion, torch's
    bilinear (in-memory training) or PIL's antialiased bilinear on 8 bits (image folders; one grey level off would be
    1/255/std ~ 0.02), a side shrunk and one grown, the per-channel normalisation."""
    from edgeexit.images import load_images

    png, raw = write_image(tmp_path, width, height, seed=channels)
    mean, std = [0.485, 0.456, 0.406][:channels], [0.229, 0.224, 0.225][:channels]
    manifest = SimpleNamespace(input=SimpleNamespace(shape=[channels, 16, 16], mean=mean, std=std, resize=resize))
    want = load_images([png], manifest)[0]
    res = java(jvm_app, "--preprocess", str(raw), str(width), str(height), str(channels), "16", "16", resize,
               ",".join(map(str, mean)), ",".join(map(str, std)))
    assert res.returncode == 0, res.stderr
    got = np.asarray(json.loads(res.stdout)["input"], np.float32)
    assert got.shape == (want.size,)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("resize, form", [("bilinear", "rgb"), ("bilinear_antialias", "argb")])
def test_jvm_classifies_an_image_as_python_does(resize, form, jvm_app, android_bundle, tmp_path):
    """EarlyExitClassifier.classifyRgb / classifyArgb (what classify(Bitmap) calls, alpha varying) on an image file's
    pixels: the input is load_images's within 1e-5 with the bundle's own mean, std and resize method (read through the
    C API), and the answer is the Python runtime's class, by name (UTF-8 names outside the BMP included), and exit."""
    from edgeexit.bundle import load_bundle
    from edgeexit.images import load_images

    num_classes = len(json.loads((android_bundle / "manifest.json").read_text())["class_names"])
    names = [f"class {k}: café 猫 🐈" for k in range(num_classes)]

    def edit(m):
        m["input"]["resize"] = resize
        m["class_names"] = names

    bundle = resign(Path(shutil.copytree(android_bundle, tmp_path / "bundle")), edit)
    png, raw = write_image(tmp_path, 29, 21)
    x = load_images([png], load_bundle(bundle).manifest)
    want = python_reference(bundle, x)
    res = java(jvm_app, str(bundle), "--image", str(raw), "29", "21", form)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["resize"] == resize and got["class_names"] == names
    np.testing.assert_allclose(np.asarray(got["input"], np.float32).reshape(x.shape), x, rtol=0, atol=1e-5)
    k = int(want.predictions[0])
    assert (got["class_name"], got["class_index"], got["exit"]) == (names[k], k, int(want.exit_index[0]))
