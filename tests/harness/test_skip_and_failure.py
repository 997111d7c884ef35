"""dispatch.execute: skip-if-done, force, failure isolation, and Ctrl-C (train is monkeypatched)."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

import harness.train
from harness.dispatch import TRACEBACK_TAIL, execute
from harness.records import read_record, write_record
from harness.spec import JobSpec, spec_from_config
from tests.conftest import compose_dict


@pytest.fixture
def spec(tmp_overrides: list[str]) -> JobSpec:
    return spec_from_config(compose_dict((*tmp_overrides, "method=lora", "task=glue/sst2", "seed=0")))


@pytest.fixture
def forced(tmp_overrides: list[str]) -> JobSpec:
    return spec_from_config(compose_dict((*tmp_overrides, "method=lora", "task=glue/sst2", "seed=0",
                                          "force=true")))


def _train_must_not_run(spec, **kwargs):
    raise AssertionError("train() was called for a job that should have been skipped")


def _fake_result(accuracy: float = 0.75) -> harness.train.TrainResult:
    res = harness.train.TrainResult(steps=3, tokens=99, examples=48, trainable_params=10, total_params=100,
                                    loss_curve=[[1, 0.7], [3, 0.5]], device="cpu")
    res.final_eval = {"metrics": {"accuracy": accuracy}, "n_examples": 8, "samples": [], "eval_time_s": 0.01}
    res.eval_history = [{"step": 3, "accuracy": accuracy}]
    res.data = types.SimpleNamespace(source="local", files={}, notes=[])
    res.model_source = {"source": "local"}
    return res


def _success_record(spec: JobSpec) -> dict:
    return {"run": {"status": "success", "signature": spec.signature, "marker": "old"}, "train": {},
            "eval": {}, "meta": {}}


def test_paths_point_into_tmp(spec: JobSpec, tmp_dirs: dict[str, Path]) -> None:
    assert spec.record_path.is_relative_to(tmp_dirs["results"])
    assert spec.run_dir.is_relative_to(tmp_dirs["runs"])
    assert spec.logger == {"name": "none"} and not spec.force


def test_success_record_means_skip_without_training(spec: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    write_record(spec.record_path, _success_record(spec))
    before = spec.record_path.read_bytes()
    monkeypatch.setattr(harness.train, "train", _train_must_not_run)
    summary = execute(spec)
    assert summary == {"signature": spec.signature, "status": "skipped", "record": str(spec.record_path)}
    assert spec.record_path.read_bytes() == before


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_or_cancelled_record_is_rerun(spec: JobSpec, monkeypatch: pytest.MonkeyPatch,
                                             status: str) -> None:
    write_record(spec.record_path, {"run": {"status": status}, "train": None, "eval": None, "meta": {}})
    calls = []
    monkeypatch.setattr(harness.train, "train", lambda s, **kw: calls.append(s) or _fake_result())
    assert execute(spec)["status"] == "success"
    assert len(calls) == 1


def test_corrupt_record_is_rerun(spec: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    spec.record_path.parent.mkdir(parents=True)
    spec.record_path.write_text('{"schema_version": 1, "run": {"status": "succ')
    monkeypatch.setattr(harness.train, "train", lambda s, **kw: _fake_result())
    assert execute(spec)["status"] == "success"
    assert read_record(spec.record_path)["run"]["status"] == "success"


def test_force_reruns_and_overwrites(forced: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    write_record(forced.record_path, _success_record(forced))
    calls = []
    monkeypatch.setattr(harness.train, "train", lambda s, **kw: calls.append(s) or _fake_result(0.9))
    summary = execute(forced)
    assert len(calls) == 1 and calls[0] is forced
    assert summary["status"] == "success" and summary["accuracy"] == 0.9
    rec = read_record(forced.record_path)
    assert "marker" not in rec["run"]
    assert rec["run"]["status"] == "success" and rec["eval"]["metrics"]["accuracy"]["value"] == 0.9
    assert rec["eval"]["primary_metric"] == "accuracy"
    assert rec["train"]["steps"] == 3 and rec["run"]["signature"] == forced.signature


def test_force_does_not_change_the_signature(spec: JobSpec, forced: JobSpec) -> None:
    assert spec.signature == forced.signature and spec.record_path == forced.record_path


def _boom(spec, **kwargs):
    def deep(n: int):
        if n == 0:
            raise ValueError("boom: the data is on fire " + "x" * 50)
        return deep(n - 1)

    return deep(200)   # a long traceback: only its tail is kept


def test_failing_job_writes_failed_record_and_does_not_raise(spec: JobSpec,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.train, "train", _boom)
    summary = execute(spec)
    assert summary == {"signature": spec.signature, "status": "failed", "record": str(spec.record_path)}
    rec = read_record(spec.record_path)
    run = rec["run"]
    assert run["status"] == "failed"
    assert run["error"].startswith("ValueError: boom: the data is on fire")
    tb = run["traceback"]
    assert 0 < len(tb) <= TRACEBACK_TAIL
    # the tail is kept, not the head
    assert tb.rstrip().endswith("ValueError: boom: the data is on fire " + "x" * 50)
    assert "in deep" in tb
    assert rec["train"] is None and rec["eval"] is None
    assert run["signature"] == spec.signature and run["method"] == "lora" and run["task"] == "glue/sst2"
    assert run["spec"] == spec.semantic()
    assert "git" in rec["meta"] and "packages" in rec["meta"]
    assert rec["meta"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # spec.device=auto


def test_failed_job_is_retried_next_time(spec: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.train, "train", _boom)
    assert execute(spec)["status"] == "failed"
    monkeypatch.setattr(harness.train, "train", lambda s, **kw: _fake_result())
    assert execute(spec)["status"] == "success"
    monkeypatch.setattr(harness.train, "train", _train_must_not_run)
    assert execute(spec)["status"] == "skipped"


def test_keyboard_interrupt_writes_cancelled_and_reraises(spec: JobSpec,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(s, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.train, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute(spec)
    rec = read_record(spec.record_path)
    assert rec["run"]["status"] == "cancelled"
    assert rec["run"]["error"] == "KeyboardInterrupt"
    assert rec["train"] is None and rec["eval"] is None
    # a cancelled job is not done: the next execute trains again
    monkeypatch.setattr(harness.train, "train", lambda s, **kw: _fake_result())
    assert execute(spec)["status"] == "success"


def test_nothing_written_outside_the_tmp_dirs(spec: JobSpec, monkeypatch: pytest.MonkeyPatch,
                                              tmp_dirs: dict[str, Path]) -> None:
    monkeypatch.setattr(harness.train, "train", _boom)
    execute(spec)
    written = [p for p in tmp_dirs["results"].rglob("*") if p.is_file()]
    assert written == [spec.record_path]
    assert not any(tmp_dirs["runs"].rglob("*"))   # logger=none: no tracker files
