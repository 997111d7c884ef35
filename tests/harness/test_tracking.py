"""Tracking: what a run logs is what an offline run directory holds, read back by our own parser."""

from __future__ import annotations

import json
import os
import random
import socket
import string
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

from harness import tracking
from harness.tracking import (
    NullTracker,
    OfflineRunError,
    Tracker,
    TrackingError,
    WandbTracker,
    log_table,
    read_offline_run,
    start_run,
)

REPO = Path(__file__).resolve().parents[2]

# system_stats off: stats records are irrelevant here and the sampler only adds work.
OFFLINE = {
    "name": "wandb",
    "project": "peftbench",
    "entity": None,
    "mode": "offline",
    "tags": ["ci"],
    "dir": None,
    "system_stats": False,
}


@pytest.fixture(autouse=True)
def _no_user_wandb_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """A WANDB_MODE in the developer's shell would otherwise decide the mode of every test run."""
    monkeypatch.delenv("WANDB_MODE", raising=False)


def _config(signature: str, lr: float) -> dict[str, Any]:
    return {
        "method": {"name": "lora", "r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]},
        "model": {"hub_id": "HuggingFaceTB/SmolLM2-135M", "revision": "main"},
        "task": {"suite": "glue", "name": "sst2", "version": 1},
        "budget": {"name": "smoke", "steps": 3},
        "optim": {"lr": lr},
        "seed": 0,
        "signature": signature,
    }


def _steps(run_history: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The logged keys of each history row (wandb adds _runtime/_timestamp we do not control)."""
    return [{k: row[k] for k in keys if k in row} for row in run_history]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_offline_run_round_trip(tmp_path: Path) -> None:
    config = _config("3f2a9c0d", 3e-4)
    tracker = start_run(OFFLINE, name="lora-sst2-s0", group="3f2a9c0d", config=config, root_dir=tmp_path)
    assert isinstance(tracker, WandbTracker) and isinstance(tracker, Tracker)
    assert tracker.run_dir is not None
    assert tracker.run_dir.parent == tmp_path.resolve() / "wandb"
    assert tracker.run_dir.name.startswith("offline-run-")

    logged = [
        {"train/loss": 2.5, "train/lr": 3e-4, "train/throughput": 1234.5},
        {"train/loss": 1.25, "train/lr": 2e-4, "train/throughput": 1240.25},
        {"train/loss": 0.625, "train/lr": 1e-4, "train/throughput": 1250.0},
    ]
    for step, metrics in zip((10, 20, 30), logged, strict=True):
        tracker.log(metrics, step=step)
    tracker.log({"eval/accuracy": 0.8125}, step=30)  # same step: joins the train row
    tracker.summary({"eval/accuracy": 0.875, "status": "success", "params": {"trainable": 73728}})
    tracker.finish()
    tracker.finish()  # idempotent

    run = read_offline_run(tracker.run_dir)
    assert run.run_id == tracker.run_dir.name.rsplit("-", 1)[1]
    identity = (run.project, run.group, run.name, run.job_type)
    assert identity == ("peftbench", "3f2a9c0d", "lora-sst2-s0", "train")
    assert run.tags == ["ci"]
    assert run.config == config  # plain values, signature included, no wandb bookkeeping
    keys = ("_step", "train/loss", "train/lr", "train/throughput", "eval/accuracy")
    assert _steps(run.history, keys) == [
        {"_step": 10, **logged[0]},
        {"_step": 20, **logged[1]},
        {"_step": 30, **logged[2], "eval/accuracy": 0.8125},
    ]
    assert all(isinstance(row["_runtime"], float) for row in run.history)
    assert run.summary["eval/accuracy"] == 0.875
    assert run.summary["status"] == "success"
    assert run.summary["params"] == {"trainable": 73728}
    assert run.summary["train/loss"] == 0.625  # wandb keeps the last logged value
    assert "_wandb" not in run.summary
    assert run.exit_code == 0


def test_sequential_runs_in_one_process(tmp_path: Path) -> None:
    """The debug launcher runs many jobs in one process; each must land in its own run."""
    dirs = []
    for i, sig in enumerate(("aaaa1111", "bbbb2222")):
        tracker = start_run(
            OFFLINE,
            name=f"job{i}",
            group=sig,
            config=_config(sig, 0.1 * (i + 1)),
            root_dir=tmp_path,
            job_type="eval" if i else "train",
        )
        for step in range(3):
            tracker.log({"loss": float(100 * i + step)}, step=step)
        tracker.summary({"job": i})
        tracker.finish()
        dirs.append(tracker.run_dir)

    assert dirs[0] != dirs[1]
    first, second = (read_offline_run(d) for d in dirs)
    assert first.run_id != second.run_id
    assert (first.name, first.group, first.job_type) == ("job0", "aaaa1111", "train")
    assert (second.name, second.group, second.job_type) == ("job1", "bbbb2222", "eval")
    assert first.config == _config("aaaa1111", 0.1)
    assert second.config == _config("bbbb2222", 0.2)
    assert _steps(first.history, ("_step", "loss")) == [{"_step": s, "loss": float(s)} for s in range(3)]
    assert _steps(second.history, ("_step", "loss")) == [{"_step": s, "loss": 100.0 + s} for s in range(3)]
    assert (first.summary["job"], second.summary["job"]) == (0, 1)
    assert first.exit_code == second.exit_code == 0


def test_interleaved_runs_do_not_mix(tmp_path: Path) -> None:
    a = start_run(OFFLINE, name="a", group="g", config={"signature": "a"}, root_dir=tmp_path)
    b = start_run(OFFLINE, name="b", group="g", config={"signature": "b"}, root_dir=tmp_path)
    a.log({"x": 1.0}, step=0)
    b.log({"x": 2.0}, step=0)
    b.finish(failed=True)
    a.log({"x": 3.0}, step=1)
    a.finish()
    ra, rb = read_offline_run(a.run_dir), read_offline_run(b.run_dir)
    assert [r["x"] for r in ra.history] == [1.0, 3.0] and ra.exit_code == 0
    assert [r["x"] for r in rb.history] == [2.0] and rb.exit_code == 1


def test_failed_run_has_nonzero_exit_code(tmp_path: Path) -> None:
    tracker = start_run(OFFLINE, name="boom", group="g", config={"signature": "s"}, root_dir=tmp_path)
    tracker.log({"loss": float("nan")}, step=0)
    tracker.finish(failed=True)
    run = read_offline_run(tracker.run_dir)
    assert run.exit_code not in (0, None)
    assert len(run.history) == 1 and run.history[0]["loss"] != run.history[0]["loss"]  # NaN survives


def test_logger_dir_overrides_root_dir(tmp_path: Path) -> None:
    cfg = {**OFFLINE, "dir": str(tmp_path / "elsewhere")}
    tracker = start_run(cfg, name="n", group="g", config={}, root_dir=tmp_path / "root")
    tracker.finish()
    assert tracker.run_dir is not None
    assert tracker.run_dir.parent == (tmp_path / "elsewhere" / "wandb").resolve()
    assert not (tmp_path / "root").exists()


def test_record_spanning_blocks(tmp_path: Path) -> None:
    """One history record far larger than a 32 KiB block must come back byte for byte."""
    rng = random.Random(0)
    text = "".join(rng.choices(string.ascii_letters + string.digits, k=100_000))
    many = {f"layer{i:04d}/grad_norm": i / 7 for i in range(3000)}
    tracker = start_run(OFFLINE, name="big", group="g", config={"blob": text[:40_000]}, root_dir=tmp_path)
    tracker.log({"small": 1.0}, step=0)
    tracker.log({"text": text, **many}, step=1)
    tracker.log({"small": 2.0}, step=2)
    tracker.finish()

    log_file = next(tracker.run_dir.glob("*.wandb"))
    assert log_file.stat().st_size > 3 * 32 * 1024  # several blocks, so records were split
    run = read_offline_run(tracker.run_dir)
    assert run.config["blob"] == text[:40_000]  # the run record itself spans a boundary
    assert [row["_step"] for row in run.history] == [0, 1, 2]
    big = run.history[1]
    assert big["text"] == text
    assert {k: big[k] for k in many} == many
    assert run.history[2]["small"] == 2.0


def test_log_table(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"method": ["lora", "dora", "pissa"], "borda": [2.0, 1.0, 0.0], "rank": [1, 2, 3]})
    tracker = start_run(
        OFFLINE, name="board", group="leaderboard", config={}, root_dir=tmp_path, job_type="leaderboard"
    )
    tracker.log({"n_records": 12.0}, step=0)
    log_table(tracker, "leaderboard/smoke", df)
    tracker.summary({"winner": "lora"})
    tracker.finish()
    log_table(NullTracker(), "x", df)  # no-op

    run = read_offline_run(tracker.run_dir)
    assert run.summary["winner"] == "lora" and run.summary["n_records"] == 12.0
    ref = run.summary["leaderboard/smoke"]
    assert ref["_type"] == "table-file" and ref["nrows"] == 3
    table = json.loads((tracker.run_dir / "files" / ref["path"]).read_text())
    assert table["columns"] == ["method", "borda", "rank"]
    assert table["data"] == [["lora", 2.0, 1], ["dora", 1.0, 2], ["pissa", 0.0, 3]]


@pytest.mark.parametrize(
    ("cfg", "env"),
    [
        ({"name": "none"}, {}),
        ({"name": "wandb", "mode": "disabled"}, {}),
        ({"name": "wandb", "mode": "offline"}, {"WANDB_MODE": "disabled"}),
    ],
)
def test_disabled_tracking_writes_nothing_and_never_imports_wandb(
    tmp_path: Path, cfg: dict[str, Any], env: dict[str, str]
) -> None:
    root = tmp_path / "root"
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from harness.tracking import NullTracker, log_table, start_run
        t = start_run({cfg!r}, name="n", group="g", config={{"signature": "s"}}, root_dir=Path({str(root)!r}))
        t.log({{"loss": 1.0}}, step=0)
        t.summary({{"acc": 1.0}})
        t.finish(failed=True)
        loaded = sorted(m for m in sys.modules if m == "wandb" or m.startswith("wandb."))
        print(json.dumps({{"null": isinstance(t, NullTracker), "run_dir": t.run_dir, "wandb": loaded}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"null": True, "run_dir": None, "wandb": []}
    assert not root.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_wandb_mode_env_wins_over_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = start_run({**OFFLINE, "mode": "online"}, name="n", group="g", config={}, root_dir=tmp_path)
    tracker.finish()
    assert tracker.run_dir is not None and tracker.run_dir.name.startswith("offline-run-")


def test_mode_defaults_to_offline_and_rejects_unknown() -> None:
    assert tracking.resolve_mode({"name": "wandb"}) == "offline"
    assert tracking.resolve_mode({"name": "wandb", "mode": "dryrun"}) == "offline"
    with pytest.raises(TrackingError, match="allowed: online, offline, disabled"):
        tracking.resolve_mode({"mode": "sometimes"})
    with pytest.raises(TrackingError, match="allowed: wandb, none"):
        start_run({"name": "mlflow"}, name="n", group="g", config={}, root_dir=Path("unused"))


def test_invalid_wandb_settings_raise_even_offline(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match=r"logger\.settings is not valid"):
        start_run(
            {**OFFLINE, "settings": {"init_timeout": "soon"}},
            name="n",
            group="g",
            config={},
            root_dir=tmp_path,
        )


def test_offline_init_failure_degrades_to_null_tracker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def broken_init(**_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(wandb, "init", broken_init)
    with pytest.warns(RuntimeWarning, match="disk full"):
        tracker = start_run(OFFLINE, name="n", group="g", config={}, root_dir=tmp_path)
    assert isinstance(tracker, NullTracker)

    monkeypatch.setattr(wandb, "login", lambda **_: True)
    with pytest.raises(TrackingError, match="disk full") as err:
        start_run({**OFFLINE, "mode": "online"}, name="n", group="g", config={}, root_dir=tmp_path)
    assert isinstance(err.value.__cause__, OSError)


def _run_online(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Online start in a fresh process with an empty HOME: no netrc, no wandb settings, no TTY."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from harness.tracking import TrackingError, start_run
        cfg = {{"name": "wandb", "project": "p", "mode": "online", "settings": {{"init_timeout": 2}}}}
        try:
            start_run(cfg, name="n", group="g", config={{}}, root_dir=Path({str(tmp_path / "runs")!r}))
        except TrackingError as exc:
            print("TRACKING_ERROR", exc)
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        env=_clean_env(HOME=str(home), NETRC=str(home / "netrc"), **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_online_without_credentials_raises_clear_error(tmp_path: Path) -> None:
    out = _run_online(tmp_path)
    assert "TRACKING_ERROR" in out.stdout, out.stderr
    assert "no W&B credentials" in out.stdout and "WANDB_API_KEY" in out.stdout


def test_online_unreachable_server_raises_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _run_online(tmp_path, WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{port}")
    assert "TRACKING_ERROR could not start an online W&B run" in out.stdout, out.stderr


# --- the framing parser on hand-built logs: padding, split records, truncation, corruption ---------


def _chunk(kind: int, data: bytes) -> bytes:
    return struct.pack("<IHB", zlib.crc32(bytes((kind,)) + data), len(data), kind) + data


def _write_log(path: Path, payloads: list[bytes], block: int = 32 * 1024) -> bytes:
    """A minimal writer of the same format, independent of the reader's code paths."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        rest, first = payload, True
        while True:
            left = block - len(out) % block
            if left < 7:
                out += b"\0" * left
                continue
            piece, rest = rest[: left - 7], rest[left - 7 :]
            last = not rest
            kind = 1 if first and last else 2 if first else 4 if last else 3
            out += _chunk(kind, piece)
            first = False
            if last:
                break
    path.write_bytes(bytes(out))
    return bytes(out)


def test_framing_padding_and_splits(tmp_path: Path) -> None:
    block = 32 * 1024
    # Sizes chosen so that blocks end with 0..6 spare bytes (padding) and with exactly 7 (empty FIRST).
    payloads = [b"a" * (block - 7 - 7 - 3)]  # leaves 3 bytes: trailer padding
    payloads += [bytes(range(256)) * 300]  # 76.8 KB: FIRST, MIDDLE, LAST
    payloads += [b""]
    filler = block - (len(_write_log(tmp_path / "probe.wandb", payloads)) % block) - 7 - 7
    payloads += [b"f" * filler, b"after-an-empty-first"]  # leaves exactly one header: empty FIRST
    path = tmp_path / "x.wandb"
    raw = _write_log(path, payloads)
    assert raw.count(_chunk(2, b"")) >= 1
    assert list(tracking._iter_payloads(path)) == payloads


def test_framing_truncated_tail_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "x.wandb"
    raw = _write_log(path, [b"one", b"two" * 20_000])
    path.write_bytes(raw[:-5])  # killed mid-write
    assert list(tracking._iter_payloads(path)) == [b"one"]


def test_framing_rejects_corruption(tmp_path: Path) -> None:
    path = tmp_path / "x.wandb"
    raw = bytearray(_write_log(path, [b"hello", b"world"]))
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(OfflineRunError, match="CRC mismatch"):
        list(tracking._iter_payloads(path))
    path.write_bytes(b"LEVELDB-ish" + bytes(raw[7:]))
    with pytest.raises(OfflineRunError, match="not a W&B transaction log"):
        list(tracking._iter_payloads(path))
    with pytest.raises(OfflineRunError, match="expected one"):
        read_offline_run(tmp_path / "missing")


def test_wait_for_log_needs_the_exit_record(tmp_path: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = tmp_path / "offline-run-x"
    run_dir.mkdir()
    assert tracking.wait_for_log(run_dir, timeout=0.05) is False  # no log at all
    running = pb.Record(run=pb.RunRecord(run_id="x")).SerializeToString()
    _write_log(run_dir / "run-x.wandb", [running])
    assert tracking.wait_for_log(run_dir, timeout=0.05) is False  # still running
    done = pb.Record(exit=pb.RunExitRecord(exit_code=1)).SerializeToString()
    _write_log(run_dir / "run-x.wandb", [running, done])
    assert tracking.wait_for_log(run_dir, timeout=0.05) is True
    assert read_offline_run(run_dir).exit_code == 1
