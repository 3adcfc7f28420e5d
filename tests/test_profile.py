"""The profiler end to end: local and over SSH (a real OpenSSH server on 127.0.0.1 that the test starts), its
noise under load, and the savings report built on it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_run
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.devices import RunnerOptions, parse_device, run_profile
from edgeexit.errors import ConfigError, DeviceError
from edgeexit.profile import profile_bundle, summarise

runner = CliRunner()
SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """OpenSSH's sshd on 127.0.0.1 with a fresh host key, key authentication only; the device URI to reach it."""
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # the privilege separation directory sshd insists on
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    host_key = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"sshd did not start: {proc.stderr.read().decode()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    yield (f"ssh://{user}@127.0.0.1:{port}?python={sys.executable}&identity={d / 'client'}"
           f"&known_hosts={d / 'known_hosts'}")
    proc.terminate()
    proc.wait(10)


def _shape(prof: dict) -> dict:
    """What a profile table is made of, without its figures."""
    return {b: {"exits": [(e["index"], e["name"], sorted(k for k in ("segment", "head", "static") if e[k]))
                          for e in t["exits"]], "full": sorted(t["full"])} for b, t in prof["batches"].items()}


def test_profile_over_ssh_is_the_local_table(built, sshd):
    run, _ = built
    bundle = run / "bundle"
    local = profile_bundle(bundle, rounds=3, calls=1, warmup=1)
    remote = profile_bundle(bundle, device=sshd, rounds=3, calls=1, warmup=1)
    assert _shape(remote) == _shape(local)
    assert remote["device"].startswith("ssh://") and local["device"] == "local"
    # the runner that measured was the copy pushed with the bundle, in a work directory removed afterwards
    where = remote["raw"]["runner_location"]
    assert where.startswith("/tmp/edgeexit-profile.") and not Path(where).exists()
    assert remote["provenance"] == local["provenance"]
    assert all(e["cumulative"]["p50_ms"] > 0 for e in remote["batches"]["1"]["exits"])


def test_profile_command_over_ssh_writes_the_profile(built, sshd, tmp_path):
    run = copy_run(built, tmp_path / "run", ("checkpoint.pt", "calibration.json"))
    shutil.copytree(built[0] / "bundle", run / "bundle")
    res = runner.invoke(app, ["profile", "--run-dir", str(run), "--device", sshd, "--rounds", "3", "--batches", "1,4"])
    assert res.exit_code == 0, res.output
    prof = json.loads((run / "profile.json").read_text())
    assert set(prof["batches"]) == {"1", "4"} and prof["device"].startswith("ssh://")
    assert "per-exit latency" in res.output


def test_unreachable_and_wrong_devices_are_clear_errors(built):
    run, _ = built
    dead = f"ssh://nobody@127.0.0.1:{_free_port()}"
    with pytest.raises(DeviceError, match="connecting to ssh://nobody@127.0.0.1"):
        profile_bundle(run / "bundle", device=dead, rounds=1)
    for bad, match in (("usb://phone", "unknown device"), ("ssh://host?colour=red", "unknown ssh device option")):
        with pytest.raises(ConfigError, match=match):
            parse_device(bad)
    with pytest.raises(ConfigError, match="runs the cpp runner"):
        parse_device("adb://emulator-5554", "python")
    res = runner.invoke(app, ["profile", "--run-dir", str(run), "--device", dead, "--rounds", "1"])
    assert res.exit_code != 0 and "Traceback" not in res.output and "connecting to" in res.output


def test_a_profile_of_another_bundle_is_refused(built, android_bundle):
    run, _ = built
    raw = run_profile(parse_device("local"), run / "bundle", RunnerOptions(rounds=1, calls=1, warmup=0))
    from edgeexit.bundle import load_bundle

    with pytest.raises(DeviceError, match="profiled another bundle"):
        summarise(raw, load_bundle(android_bundle))


def test_executorch_bundle_profiles_with_heads_and_truncations(android_bundle):
    prof = profile_bundle(android_bundle, rounds=3, calls=1, warmup=1, batches=[1, 7])
    assert prof["backend"] == "executorch" and set(prof["batches"]) == {"1", "7"}
    rows = prof["batches"]["7"]["exits"]
    assert all(r["head"] and r["static"] for r in rows[:-1]) and not rows[-1]["head"] and not rows[-1]["static"]
    ff = prof["batches"]["1"]["forced_final"]
    assert ff["heads_ms"] > 0 and ff["ratio"] > 0


def _hog(seconds: float) -> list[subprocess.Popen]:
    code = f"import time\nt=time.time()\nwhile time.time()-t<{seconds}: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]


def test_under_load_the_profile_flags_itself_or_agrees_within_its_spread(built):
    """Two profiles while other processes load every core: each either says it is noisy, or their time fractions
    agree within the noise they state."""
    run, _ = built
    hogs = _hog(60)
    try:
        a, b = (profile_bundle(run / "bundle", rounds=15, calls=3, warmup=2, batches=[1]) for _ in range(2))
    finally:
        for h in hogs:
            h.kill()
    if a["trusted"] and b["trusted"]:
        bound = a["noise"]["1"]["noise"] + b["noise"]["1"]["noise"]
        for ea, eb in zip(a["batches"]["1"]["exits"], b["batches"]["1"]["exits"]):
            # the stated noise is of a ratio of medians; two such ratios differ by at most the sum, plus the
            # spread of the entry itself over its rounds
            spread = (ea["cumulative"]["spread"] + eb["cumulative"]["spread"]) / 2
            assert abs(ea["time_fraction"] - eb["time_fraction"]) <= (bound + spread) * max(ea["time_fraction"], 1)
    else:
        assert not (a["trusted"] and b["trusted"])
        assert any(not n["trusted"] for p in (a, b) for n in p["noise"].values())


def test_build_reports_savings_and_the_static_baseline(built, tmp_path):
    run, out = built
    rep = json.loads((run / "report.json").read_text())
    assert {"accuracy", "macs", "latency", "exits", "static_baseline", "profile", "params"} <= set(rep)
    # the verdict is printed (rich wraps it at spaces)
    assert " ".join(rep["static_baseline"]["verdict"].split()) in " ".join(out.split())
    for name in ("report-accuracy-cost.png", "report-latency.png", "report-exits.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (run / "bundle" / "report" / name).is_file()
    for b, v in rep["latency"].items():
        if v["realisation"] is not None:
            assert v["realisation"] == pytest.approx(v["saving"] / rep["macs"]["saving"])
    md = (run / "report.md").read_text()
    assert "Static baseline" in md and "Per-exit latency" in md and "report-latency.png" in md


def test_report_regenerates_and_refuses_stale_figures(built, tmp_path):
    run = copy_run(built, tmp_path / "run", ("checkpoint.pt", "calibration.json", "eval.json", "profile.json"))
    shutil.copytree(built[0] / "bundle", run / "bundle")
    res = runner.invoke(app, ["report", "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "report.json").read_text())["format"] == "edgeexit-report/1"
    ev = json.loads((run / "eval.json").read_text())
    ev["bundle_content_sha256"] = "0" * 64  # an evaluation of another bundle
    (run / "eval.json").write_text(json.dumps(ev))
    res = runner.invoke(app, ["report", "--run-dir", str(run)])
    assert res.exit_code != 0 and "evaluation (eval.json) was made from another bundle" in res.output
    assert "Traceback" not in res.output


def test_a_millisecond_budget_on_a_noisy_profile_warns(built, tmp_path):
    names = [n for n in ("checkpoint.pt", "pruned.pt", "profile.json") if (built[0] / n).is_file()]
    run = copy_run(built, tmp_path / "run", names)
    prof = json.loads((run / "profile.json").read_text())
    prof["trusted"] = False
    for n in [*prof["noise"].values(), *(t["noise"] for t in prof["batches"].values())]:  # the reader checks they agree
        n.update(noise=0.2, trusted=False)
    (run / "profile.json").write_text(json.dumps(prof))
    budget = f"{prof['latency_ms'][-1] * 1.5:.6f}ms@{prof['target']}"
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", budget])
    assert res.exit_code == 0, res.output
    assert "noisy profile" in res.output.replace("\n", " ")
