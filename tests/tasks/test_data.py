"""Data-root resolution, hub fallback and line-accurate format errors (tmp files; no network)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest

import tasks
from tasks import DataFormatError, DataNotFoundError, data_roots, load_task, resolve_local
from tasks import data as tdata

PROJECT = Path(tasks.__file__).resolve().parent.parent


def glue_cfg(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "glue/toy",
        "suite": "glue",
        "version": 1,
        "protocol": "classify",
        "protocols": ["classify"],
        "loader": "glue",
        "validation": {"size": 1, "seed": 0},
        "baseline": "majority",
        "source": {
            "local": "toy",
            "hub": {"path": "nyu-mll/glue", "name": "rte"},
            "hub_splits": {"train": "train", "eval": "validation"},
            "hub_fields": {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
        },
        "splits": {"train": "train", "eval": "dev"},
        "fields": {"text_a": "s1", "text_b": "s2", "label": "label"},
        "num_labels": 2,
        "label_names": ["entailment", "not_entailment"],
        "metrics": [{"name": "accuracy", "direction": "max"}],
    }
    cfg.update(over)
    return cfg


def write_toy(root: Path, train: str, dev: str | None = None) -> None:
    d = root / "toy"
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.tsv").write_text(train, encoding="utf-8")
    (d / "dev.tsv").write_text(dev if dev is not None else train, encoding="utf-8")


@pytest.fixture
def fake_datasets(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace ``datasets`` by a module whose load_dataset fails like an offline machine."""
    calls: list[dict[str, Any]] = []

    def load_dataset(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise ConnectionError("offline (test double): hub unreachable")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


# ------------------------------------------------------------------------------------------------
# resolution chain


def test_default_root_is_shared_data_beside_project() -> None:
    assert tdata.PROJECT_ROOT == PROJECT
    assert tdata.DEFAULT_ROOT == PROJECT.parent / "shared" / "data"


def test_data_roots_order_and_dedup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv("PEFTBENCH_DATA", str(env))
    assert data_roots(str(explicit)) == [explicit, env, tdata.DEFAULT_ROOT]
    assert data_roots(None) == [env, tdata.DEFAULT_ROOT]
    assert data_roots(str(env)) == [env, tdata.DEFAULT_ROOT]  # duplicates collapse
    monkeypatch.delenv("PEFTBENCH_DATA")
    assert data_roots(None) == [tdata.DEFAULT_ROOT]
    assert data_roots("") == [tdata.DEFAULT_ROOT]


def test_relative_data_dir_is_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEFTBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_roots("rel/data")[0] == tmp_path / "rel" / "data"


def test_explicit_beats_env_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rel = "gsm8k/test.jsonl"  # also present in the default root (real shared data)
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    for root in (explicit, env):
        (root / "gsm8k").mkdir(parents=True)
        (root / rel).write_text("{}\n")
    monkeypatch.setenv("PEFTBENCH_DATA", str(env))
    assert resolve_local(rel, str(explicit)) == (explicit / rel).resolve()
    (explicit / rel).unlink()
    assert resolve_local(rel, str(explicit)) == (env / rel).resolve()
    (env / rel).unlink()
    if not (tdata.DEFAULT_ROOT / rel).exists():
        pytest.skip("shared data not present beside the project")
    assert resolve_local(rel, str(explicit)) == (tdata.DEFAULT_ROOT / rel).resolve()


def test_not_found_lists_every_place_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    monkeypatch.setenv("PEFTBENCH_DATA", str(env))
    rel = "no/such/file.tsv"
    with pytest.raises(DataNotFoundError) as info:
        resolve_local(rel, str(explicit))
    msg = str(info.value)
    places = [str(explicit / rel), str(env / rel), str(tdata.DEFAULT_ROOT / rel)]
    assert info.value.searched == places
    positions = [msg.index(p) for p in places]
    assert positions == sorted(positions)
    assert "PEFTBENCH_DATA" in msg and isinstance(info.value, FileNotFoundError)


def test_splits_come_from_one_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_datasets: list
) -> None:
    """A root holding only train.tsv is skipped: the two splits never mix two copies of the data."""
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    (explicit / "toy").mkdir(parents=True)
    (explicit / "toy" / "train.tsv").write_text("s1\ts2\tlabel\na\tb\tentailment\n")
    write_toy(env, "s1\ts2\tlabel\nc\td\tnot_entailment\n")
    monkeypatch.setenv("PEFTBENCH_DATA", str(env))
    data = load_task(glue_cfg(), str(explicit))
    assert data.files["train"] == str((env / "toy" / "train.tsv").resolve())
    assert data.train[0].text_a == "c" and data.train[0].label == 1
    assert fake_datasets == []


# ------------------------------------------------------------------------------------------------
# hub fallback


def test_missing_everywhere_names_local_places_and_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_datasets: list
) -> None:
    monkeypatch.setenv("PEFTBENCH_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(tdata, "_hub_problem", lambda hub: None)   # the hub answers, the load then fails
    with pytest.raises(DataNotFoundError) as info:
        load_task(glue_cfg(), str(tmp_path / "explicit"))
    msg = str(info.value)
    for root in (tmp_path / "explicit", tmp_path / "env", tdata.DEFAULT_ROOT):
        assert str(root / "toy" / "train.tsv") in msg
        assert str(root / "toy" / "dev.tsv") in msg
    assert "nyu-mll/glue/rte" in msg and "offline (test double)" in msg and "ConnectionError" in msg
    assert info.value.searched[-1] == "hub:nyu-mll/glue/rte"
    assert fake_datasets == [{"path": "nyu-mll/glue", "name": "rte"}]


def test_no_hub_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_datasets: list) -> None:
    monkeypatch.delenv("PEFTBENCH_DATA", raising=False)
    cfg = glue_cfg()
    del cfg["source"]["hub"]
    with pytest.raises(DataNotFoundError, match="no source.hub configured"):
        load_task(cfg, str(tmp_path))
    assert fake_datasets == []


def test_hub_rows_become_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GLUE hub rows (int labels, hub column names) and raw google/boolq rows (bool answers)."""
    cache = tmp_path / "cache.arrow"
    cache.write_bytes(b"")

    class Split(list):
        cache_files: ClassVar[list[dict[str, str]]] = [{"filename": str(cache)}]

    tables = {
        "nyu-mll/glue": {
            "train": Split([{"sentence1": "a", "sentence2": "b", "label": 1, "idx": 0}]),
            "validation": Split([{"sentence1": "c", "sentence2": "d", "label": 0, "idx": 0}]),
        },
        "zwhe99/commonsense_170k": {   # LLM-Adapters records already: they pass through
            "train": Split([{"instruction": "Please choose ...\n\nAnswer format: answer1/answer2", "input": "",
                             "output": "the correct answer is answer2", "answer": "answer2"}]),
        },
        "google/boolq": {
            "train": Split([{"question": "is the sky blue", "answer": True, "passage": "p"}]),
            "validation": Split([{"question": "do fish fly", "answer": False, "passage": "p"}]),
        },
    }
    monkeypatch.setitem(
        sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda **kw: tables[kw["path"]])
    )
    monkeypatch.setattr(tdata, "_hub_problem", lambda hub: None)   # the hub "answers" (no network here)
    monkeypatch.delenv("PEFTBENCH_DATA", raising=False)
    data = load_task(glue_cfg(), str(tmp_path))
    assert data.source == "hub" and data.files == {"train": str(cache), "eval": str(cache)}
    assert data.train == [tasks.Example(text_a="a", text_b="b", label=1)]
    assert data.eval == [tasks.Example(text_a="c", text_b="d", label=0)]
    assert any("hub" in n for n in data.notes)

    from tests.conftest import compose_dict

    boolq = tasks.resolve_task(compose_dict(["task=commonsense/boolq"])["task"], None)
    boolq["evals"]["commonsense/boolq"]["local"] = "not/here"   # the test set falls back to google/boolq
    assert boolq["train_set"] == "commonsense_170k"   # no local copy, but the hub answers: the literature's set
    data = load_task(boolq, str(tmp_path))
    assert data.train == [tasks.Example(prompt=data.train[0].prompt, target="the correct answer is answer2",
                                        answer="answer2", choices=("answer1", "answer2"))]
    assert data.files["train"] == str(cache)
    assert data.eval[0].answer == "false" and data.eval[0].choices == ("true", "false")
    assert (
        "question: do fish fly?\n\nAnswer format: true/false\n\n### Response:\n" in data.eval[0].prompt
    )
    assert data.files["eval:commonsense/boolq"] == str(cache)


def test_hub_unreachable_fails_at_once_without_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      fake_datasets: list) -> None:
    """No local copy and an unreachable hub: one DataNotFoundError naming both, and load_dataset is
    never called (it would retry for ~25 s)."""
    monkeypatch.setattr(tdata, "_hub_problem", lambda hub: "ConnectError: no network")
    cfg = glue_cfg()
    cfg["source"]["local"] = "not/here"
    with pytest.raises(DataNotFoundError, match=r"nyu-mll/glue/rte: not reachable \(ConnectError"):
        load_task(cfg, str(tmp_path))
    assert fake_datasets == []
    problem = tasks.data_problems(cfg, str(tmp_path))
    assert len(problem) == 1 and "needs the Hugging Face hub (nyu-mll/glue/rte) or a local copy" in problem[0]
    assert str(tmp_path / "not/here") in problem[0]


def test_real_datasets_offline_fails_fast(tmp_path: Path) -> None:
    """With the real ``datasets`` and HF_HUB_OFFLINE=1, a missing task fails quickly and clearly."""
    pytest.importorskip("datasets")
    code = textwrap.dedent(
        f"""
        import tasks
        cfg = {json.dumps(glue_cfg())}
        cfg["source"]["local"] = "definitely/not/here"
        try:
            tasks.load_task(cfg, {str(tmp_path)!r})
        except tasks.DataNotFoundError as exc:
            print("RAISED", exc)
        """
    )
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(PROJECT),
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "RAISED" in out.stdout, out.stderr[-2000:]
    assert "nyu-mll/glue/rte" in out.stdout and str(tmp_path / "definitely/not/here") in out.stdout


def test_malformed_local_file_does_not_fall_back_to_hub(tmp_path: Path, fake_datasets: list) -> None:
    write_toy(tmp_path, "s1\ts2\tlabel\na\tb\n")
    with pytest.raises(DataFormatError):
        load_task(glue_cfg(), str(tmp_path))
    assert fake_datasets == []


# ------------------------------------------------------------------------------------------------
# format errors name file and line


def test_tsv_wrong_column_count(tmp_path: Path) -> None:
    write_toy(tmp_path, "s1\ts2\tlabel\na\tb\tentailment\nc\td\n")
    with pytest.raises(DataFormatError) as info:
        load_task(glue_cfg(), str(tmp_path))
    err = info.value
    assert err.path == str(tmp_path / "toy" / "train.tsv") and err.line == 3
    assert f"{tmp_path / 'toy' / 'train.tsv'}:3" in str(err) and "3 tab-separated columns" in str(err)


def test_tsv_bad_label(tmp_path: Path) -> None:
    write_toy(tmp_path, "s1\ts2\tlabel\na\tb\tentailment\n", "s1\ts2\tlabel\na\tb\tmaybe\n")
    with pytest.raises(DataFormatError) as info:
        load_task(glue_cfg(), str(tmp_path))
    assert info.value.line == 2 and info.value.path.endswith("dev.tsv")
    assert "'maybe'" in str(info.value) and "entailment" in str(info.value)


def test_tsv_integer_label_out_of_range(tmp_path: Path) -> None:
    write_toy(tmp_path, "s1\ts2\tlabel\na\tb\t2\n")
    with pytest.raises(DataFormatError, match=r"train.tsv:2: .*\[0, 2\)"):
        load_task(glue_cfg(), str(tmp_path))


def test_tsv_missing_column(tmp_path: Path) -> None:
    write_toy(tmp_path, "s1\tother\tlabel\na\tb\t0\n")
    with pytest.raises(DataFormatError, match=r"train.tsv:2: .*missing \['s2'\]"):
        load_task(glue_cfg(), str(tmp_path))


def test_tsv_quotes_are_literal(tmp_path: Path) -> None:
    """QUOTE_NONE: a lone quote must not swallow the following lines."""
    write_toy(tmp_path, 's1\ts2\tlabel\nhe said "hi\tb\t0\nnext\t"x" y\t1\n')
    data = load_task(glue_cfg(), str(tmp_path))
    assert [e.text_a for e in data.train] == ['he said "hi', "next"]
    assert data.train[1].text_b == '"x" y'


def test_jsonl_errors(tmp_path: Path) -> None:
    import yaml

    cfg = yaml.safe_load((PROJECT / "conf/task/gsm8k/gsm8k.yaml").read_text())
    cfg["source"]["local"] = "g"
    d = tmp_path / "g"
    d.mkdir()
    good = json.dumps({"question": "q", "answer": "1+1=<<1+1=2>>2\n#### 2"})
    (d / "test.jsonl").write_text(good + "\n")
    (d / "train.jsonl").write_text(good + "\n" + "\n" + "{not json\n")
    with pytest.raises(DataFormatError, match=r"train.jsonl:3: one JSON object per line"):
        load_task(cfg, str(tmp_path))
    (d / "train.jsonl").write_text(good + "\n" + json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DataFormatError, match=r"train.jsonl:2: .*'#### <number>'"):
        load_task(cfg, str(tmp_path))
    (d / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "x\n#### seven"}) + "\n")
    with pytest.raises(DataFormatError, match=r"train.jsonl:1: a number after '####', got 'seven'"):
        load_task(cfg, str(tmp_path))
    (d / "train.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataFormatError, match=r"train.jsonl:1: .*missing \['answer'\]"):
        load_task(cfg, str(tmp_path))


def test_json_array_errors_name_the_record_line(tmp_path: Path) -> None:
    from tests.conftest import compose_dict

    cfg = compose_dict(["task=commonsense/boolq", "task.train_set=local_union"])["task"]
    cfg["evals"]["commonsense/boolq"]["local"] = "b"
    d = tmp_path / "b"
    d.mkdir()
    rec = {"instruction": "i", "input": "", "output": "the correct answer is true", "answer": "true"}
    (d / "train.json").write_text(json.dumps([rec], indent=4))
    bad = dict(rec, answer="maybe")
    (d / "test.json").write_text(json.dumps([rec, bad], indent=4))  # second record starts on line 8
    with pytest.raises(DataFormatError) as info:
        load_task(cfg, str(tmp_path))
    assert info.value.path == str(d / "test.json") and info.value.line == 8
    assert "'maybe'" in str(info.value)
    (d / "test.json").write_text('[\n  {"instruction": "i",\n   "answer": }\n]')
    with pytest.raises(DataFormatError, match=r"test.json:3: a JSON array of objects"):
        load_task(cfg, str(tmp_path))
    (d / "test.json").write_text(json.dumps([rec, 5], indent=1))
    with pytest.raises(DataFormatError, match=r"test.json:8: a JSON object, got int"):
        load_task(cfg, str(tmp_path))


def test_invalid_config_is_rejected_with_every_problem() -> None:
    cfg = glue_cfg(protocol="regress", loader="nope", metrics=[{"name": "bleu", "direction": "max"}])
    problems = tasks.task_config_problems(cfg)
    joined = "\n".join(problems)
    assert "protocol" in joined and "loader" in joined and "metrics[0].name" in joined
    with pytest.raises(ValueError, match="invalid task config"):
        load_task(cfg, None)


def test_import_is_light() -> None:
    code = "import sys, tasks; print([m for m in ('torch', 'transformers', 'datasets') if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_regression_score_must_be_a_number(tmp_path: Path) -> None:
    """STS-B: a score cell that is not a finite number names the file and line."""
    cfg = glue_cfg(regression=True, num_labels=1, label_names=None, baseline="chance",
                   metrics=[{"name": "pearson", "direction": "max"}])
    write_toy(tmp_path, "s1\ts2\tlabel\na\tb\t4.5\nc\td\tn/a\n")
    with pytest.raises(DataFormatError, match=r"toy/train.tsv:3: a real-valued score, got 'n/a'"):
        load_task(cfg, str(tmp_path))
    write_toy(tmp_path, "s1\ts2\tlabel\na\tb\t4.5\nc\td\tnan\n")
    with pytest.raises(DataFormatError, match=r"train.tsv:3: a real-valued score, got 'nan'"):
        load_task(cfg, str(tmp_path))
    write_toy(tmp_path, "s1\ts2\tlabel\na\tb\t4.5\nc\td\t0.25\n")
    assert [e.label for e in load_task(cfg, str(tmp_path)).train] == [4.5, 0.25]
