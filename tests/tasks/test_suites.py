"""Suites: their files, what task=<suite> launches, and that every voter is a task's evaluated set."""
from __future__ import annotations

from pathlib import Path

import pytest

import tasks
from tasks.suites import expand_override, expand_tasks, load_suites, suite_problems
from tests.conftest import compose_dict, conf_names


def test_the_three_suites_exist_and_cover_every_task() -> None:
    suites = load_suites()
    assert set(suites) == {"glue", "gsm8k", "commonsense"}
    assert len(suites["glue"].expand) == 9 and len(suites["commonsense"].voters) == 8
    launched = {t for s in suites.values() for t in s.expand}
    assert launched <= set(conf_names("task"))


@pytest.mark.parametrize("suite", ["glue", "gsm8k", "commonsense"])
def test_voters_are_the_evaluated_sets_of_the_launched_tasks(suite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the leaderboard expects as columns is exactly what the suite's jobs evaluate."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = load_suites()[suite]
    voters = [v for t in s.expand for v in tasks.eval_set_names(compose_dict([f"task={t}"])["task"])]
    assert voters == list(s.voters)


def test_expand_override() -> None:
    glue = ",".join(load_suites()["glue"].expand)
    assert expand_override("task=glue") == f"task={glue}"
    assert expand_override("task=gsm8k,glue/rte") == "task=gsm8k/gsm8k,glue/rte"
    assert expand_override("task=glue/rte,glue") == "task=glue/rte," + glue.replace("glue/rte,", "")
    assert expand_override("task=commonsense") == "task=commonsense/all"
    assert expand_override("task=glue/sst2") == "task=glue/sst2"
    assert expand_override("method=lora,dora") == "method=lora,dora"
    assert expand_override("task=choice(glue/sst2,glue/rte)") == "task=choice(glue/sst2,glue/rte)"
    assert expand_tasks(["glue/sst2", "glue"])[0] == "glue/sst2"


def test_bad_suite_file_names_every_problem(tmp_path: Path) -> None:
    problems = suite_problems("x", {"name": "y", "expand": [], "voters": ["a/b"],
                                    "average": {"name": 3, "metrics": "most", "groups": {"a": ["c/d"]}}})
    joined = "\n".join(problems)
    for field in ("name", "expand", "average.name", "average.metrics", "average.groups.a"):
        assert field in joined
    (tmp_path / "x.yaml").write_text("name: y\n")
    with pytest.raises(ValueError, match="invalid suite config"):
        load_suites.__wrapped__(str(tmp_path))
