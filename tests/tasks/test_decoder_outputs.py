"""Answer parsing on real generations of the embedded decoder (SmolLM2-135M-Instruct, untrained),
for every generate task and commonsense set: what a careful reader finds in each generation, checked
by hand when the fixture was recorded (tests/tasks/fixtures/record_decoder_outputs.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks
from tasks.catalog import compose_task

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "decoder_outputs.json"
ITEMS = json.loads(FIXTURE.read_text())["items"]


def test_every_generate_task_and_set_is_covered() -> None:
    sets = {i["set"] for i in ITEMS}
    voters = {v for name in ("gsm8k/gsm8k", "commonsense/all")
              for v in tasks.eval_set_names(compose_task(name))}
    assert sets == voters
    assert {i["num_fewshot"] for i in ITEMS if i["task"] == "gsm8k/gsm8k"} == {0, 3}


@pytest.mark.parametrize("item", ITEMS, ids=[f"{i['set']}-{i['num_fewshot']}shot-{n}" for n, i in enumerate(ITEMS)])
def test_parse_real_generation(item: dict) -> None:
    cfg = compose_task(item["task"])
    assert tasks.parse_answer(cfg, item["generation"], item["choices"]) == item["expected"]
