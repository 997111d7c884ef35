"""Every task YAML under conf/task/ against the schema and the real data (row counts of SOURCES.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

import tasks
from tasks import LOADERS, TaskData, load_task, parse_answer, task_config_problems
from tasks.metrics import ANSWER_PARSERS, METRICS, normalize_number
from tests.conftest import compose_dict

CONF = Path(tasks.__file__).resolve().parent.parent / "conf" / "task"
YAMLS = sorted(p for p in CONF.rglob("*.yaml") if not p.name.startswith("_"))
TASK_IDS = [p.relative_to(CONF).with_suffix("").as_posix() for p in YAMLS]
# The scope: GLUE-9, GSM8K, commonsense-8 (+ the one-job commonsense/all).
SCOPE = {*(f"glue/{t}" for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")),
         "gsm8k/gsm8k",
         *(f"commonsense/{t}" for t in ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy",
                                        "arc_challenge", "openbookqa", "all"))}
HUB_ONLY = {"glue/qqp", "glue/mnli", "glue/qnli"}   # not stored offline (too large)
# issue #21: MetaMathQA is not stored offline (hub, or a local copy; tests/harness/test_peft_mc.py writes one)
SCOPE |= {"math/metamathqa"}
NO_OFFLINE_TRAIN = {"math/metamathqa"}
UNION = 9_427 + 2_251 + 1_119 + 4_957   # the local commonsense train files (SOURCES.md)

# (train, evaluated set sizes) as listed in shared/data/SOURCES.md
EXPECTED_ROWS = {
    "glue/cola": (8_551, [1_043]),
    "glue/sst2": (67_349, [872]),
    "glue/mrpc": (3_668, [408]),
    "glue/stsb": (5_749, [1_500]),
    "glue/rte": (2_490, [277]),
    "glue/wnli": (635, [71]),
    "gsm8k/gsm8k": (7_473, [1_319]),
    "commonsense/boolq": (UNION, [3_270]),
    "commonsense/piqa": (UNION, [1_838]),
    "commonsense/siqa": (UNION, [1_954]),
    "commonsense/hellaswag": (UNION, [10_042]),
    "commonsense/winogrande": (UNION, [1_267]),
    "commonsense/arc_easy": (UNION, [2_376]),
    "commonsense/arc_challenge": (UNION, [1_172]),
    "commonsense/openbookqa": (UNION, [500]),
    "commonsense/all": (UNION, [3_270, 1_838, 1_954, 10_042, 1_267, 2_376, 1_172, 500]),
}

_cache: dict[str, TaskData] = {}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub probes: these tests read the shared data; commonsense resolves to the local union."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def cfg_of(task_id: str, *overrides: str) -> dict[str, Any]:
    """The task block as a job sees it: composed through Hydra (commonsense tasks include _base)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tasks.resolve_task(compose_dict((f"task={task_id}", *overrides))["task"], None)


def data_of(task_id: str) -> TaskData:
    """Load once per session; skip (not fail) where the shared data is absent."""
    if task_id not in _cache:
        cfg = cfg_of(task_id)
        problems = tasks.data_problems(cfg, None)
        if problems:
            pytest.skip(f"real data not available: {problems}")
        _cache[task_id] = load_task(cfg, None)
    return _cache[task_id]


def test_there_are_task_yamls() -> None:
    assert set(TASK_IDS) == SCOPE
    assert set(EXPECTED_ROWS) | HUB_ONLY | NO_OFFLINE_TRAIN == SCOPE
    assert {"glue", "gsm8k", "commonsense", "metamathqa"} <= set(LOADERS)


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_yaml_schema(task_id: str) -> None:
    path = CONF / f"{task_id}.yaml"
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith(f"# peftbench run task={task_id} "), "first line: the command that runs it"
    assert yaml.safe_load(text)["name"] == task_id, "name must equal the path under conf/task/"
    cfg = cfg_of(task_id)
    assert cfg["suite"] == task_id.split("/")[0]
    assert task_config_problems(cfg) == []
    assert cfg["loader"] in LOADERS
    assert all(m["name"] in METRICS and m["direction"] in ("max", "min") for m in cfg["metrics"])
    for protocol in tasks.protocols_of(cfg):   # every protocol a task offers validates
        assert task_config_problems({**cfg, "protocol": protocol}) == []
    if cfg["protocol"] == "generate":
        assert cfg["answer_parser"] in ANSWER_PARSERS
        for spec in [cfg, *(cfg.get("evals") or {}).values()]:
            assert all(isinstance(c, str) for c in spec.get("choices", [])), "quote true/false in YAML"


@pytest.mark.parametrize("task_id", sorted(HUB_ONLY))
def test_hub_only_tasks_fail_before_compute_offline(task_id: str) -> None:
    """MNLI, QQP, QNLI are not stored here: offline, one message says they need the hub or a local
    copy and where the copy was looked for."""
    problems = tasks.data_problems(cfg_of(task_id), None)
    assert len(problems) == 1
    assert "needs the Hugging Face hub" in problems[0] and "or a local copy" in problems[0]
    assert f"shared/data/glue/{task_id.split('/')[1].upper()}" in problems[0]
    assert "HF_HUB_OFFLINE" in problems[0]


@pytest.mark.integration
@pytest.mark.parametrize("task_id", sorted(EXPECTED_ROWS))
def test_load_task_on_real_data(task_id: str) -> None:
    cfg = cfg_of(task_id)
    data = data_of(task_id)
    assert data.source == "local"
    assert data.train and data.eval
    assert [s.name for s in data.evals] == tasks.eval_set_names(cfg)
    for path in data.files.values():
        assert Path(path).is_absolute() and Path(path).is_file()
    examples = [*data.train, *(e for s in data.evals for e in s.examples)]
    if cfg["protocol"] == "classify":
        for ex in examples:
            assert isinstance(ex.text_a, str) and ex.text_a
            assert (ex.text_b is None) == (cfg["fields"].get("text_b") is None)
            if cfg.get("regression"):
                assert isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0
            else:
                assert isinstance(ex.label, int) and 0 <= ex.label < cfg["num_labels"]
        if not cfg.get("regression"):
            assert {ex.label for ex in data.train} == set(range(cfg["num_labels"]))
    else:
        for ex in examples:
            assert ex.prompt and ex.target and ex.answer is not None
            # parsing the training target recovers the gold answer: targets and parser agree
            assert parse_answer(cfg, ex.target, ex.choices) == ex.answer
            if cfg["answer_parser"] == "choice":
                assert ex.answer in ex.choices
        for s in data.evals:
            spec = (cfg.get("evals") or {}).get(s.name) or cfg
            if spec.get("choices"):
                assert {ex.answer for ex in s.examples} <= set(spec["choices"])


@pytest.mark.integration
@pytest.mark.parametrize("task_id", sorted(EXPECTED_ROWS))
def test_row_counts_match_sources(task_id: str) -> None:
    data = data_of(task_id)
    assert (len(data.train), [len(s.examples) for s in data.evals]) == EXPECTED_ROWS[task_id]


@pytest.mark.integration
def test_order_is_file_order_and_deterministic() -> None:
    data = data_of("glue/sst2")
    assert data.train[0].text_a.startswith("hide new secretions from the parental units")
    assert data.train[1] == tasks.Example(text_a="contains no wit , only labored gags ", label=0)
    again = load_task(cfg_of("glue/sst2"), None)
    assert again.train == data.train and again.eval == data.eval


@pytest.mark.integration
def test_label_strings_are_mapped() -> None:
    rte = data_of("glue/rte")  # first train row: "No Weapons of Mass Destruction ..." not_entailment
    assert rte.train[0].label == 1 and rte.eval[1].label == 0
    mrpc = data_of("glue/mrpc")  # UTF-8 BOM before the "Quality" header; quotes kept verbatim
    assert mrpc.train[0].label == 1 and mrpc.train[0].text_a.startswith(
        'Amrozi accused his brother, whom he called "the'
    )


@pytest.mark.integration
def test_gsm8k_answers_and_targets() -> None:
    data = data_of("gsm8k/gsm8k")
    for ex in [*data.train, *data.eval]:
        assert normalize_number(ex.answer) == ex.answer  # a canonical number
        assert "<<" not in ex.target and ">>" not in ex.target
        assert ex.target.rsplit("\n", 1)[-1].startswith("#### ")
    first = data.eval[0]
    assert first.answer == "18" and first.prompt.startswith("Question: Janet")
    assert first.prompt.endswith("\nAnswer:")
    assert "= 9 duck eggs" in first.target  # "16 - 3 - 4 = <<16-3-4=9>>9" lost only its annotation
    assert {"-7", "-47", "-12"} <= {ex.answer for ex in data.train}  # negative answers survive
    commas = [ex for ex in data.train if ex.target.endswith("#### 1,080")]
    assert commas and all(ex.answer == "1080" for ex in commas)


@pytest.mark.integration
def test_boolq_answers_and_notes() -> None:
    data = data_of("commonsense/boolq")
    assert {ex.answer for ex in data.eval} == {"true", "false"}
    assert sum(ex.answer == "true" for ex in data.eval) == 2_033
    assert any("no passage" in n for n in data.notes)
    ex = data.eval[0]
    assert ex.prompt.startswith("Below is an instruction that describes a task. Write a response")
    assert ex.prompt.endswith("\n\n### Response:\n") and ex.target == "the correct answer is false"
    assert ex.choices == ("true", "false")


@pytest.mark.integration
def test_commonsense_trains_on_the_local_union_and_says_so() -> None:
    """Offline, every commonsense task trains on the union of the local train files, and the notes
    say it is not commonsense_170k; the resolved training set is part of the config (signature)."""
    cfg = cfg_of("commonsense/piqa")
    assert cfg["train_set"] == "local_union"
    data = data_of("commonsense/piqa")
    assert {ex.answer for ex in data.train} >= {"true", "false", "answer1", "answer4"}
    assert sum(k.startswith("train:") for k in data.files) == 4
    assert any("NOT on commonsense_170k" in n and f"{UNION:,}" in n for n in data.notes)
    assert data_of("commonsense/all").train == data.train   # one union for every commonsense task


@pytest.mark.integration
def test_arc_items_offer_their_own_options() -> None:
    """ARC offers 3 to 5 options per item (its "Answer format" line); chance is the mean of 1/k."""
    data = data_of("commonsense/arc_easy")
    ks = {len(ex.choices) for ex in data.eval}
    assert {4, 5} <= ks and all(ex.answer in ex.choices for ex in data.eval)
    assert {len(ex.choices) for ex in data_of("commonsense/piqa").eval} == {2}


@pytest.mark.integration
def test_cola_is_read_by_column_index() -> None:
    """CoLA has no header row (SOURCES.md): columns are addressed by index with source.header false."""
    data = data_of("glue/cola")
    assert data.eval[0] == tasks.Example(text_a="The sailors rode the breeze clear of the rocks.", label=1)


@pytest.mark.integration
def test_stsb_labels_are_scores() -> None:
    data = data_of("glue/stsb")
    assert data.train[0] == tasks.Example(text_a="A plane is taking off.", text_b="An air plane is taking off.",
                                          label=5.0)
    assert data.train[1].label == 3.8


@pytest.mark.integration
def test_validation_split_is_carved_from_train_and_excluded() -> None:
    """eval_split=validation: a fixed slice of train, removed from it; the reported split unused."""
    full = data_of("glue/rte")
    cfg = cfg_of("glue/rte", "task.eval_split=validation")
    data = load_task(cfg, None)
    size = cfg["validation"]["size"]
    assert len(data.evals) == 1 and data.evals[0].split == "validation" and len(data.eval) == size
    assert len(data.train) == len(full.train) - size
    # train and validation partition the original train split (as multisets: RTE repeats some pairs)
    assert Counter(data.train) + Counter(data.eval) == Counter(full.train)
    assert load_task(cfg, None) == data   # deterministic
    assert any("carved from train" in n for n in data.notes)
    other = load_task(cfg_of("glue/rte", "task.eval_split=validation", "task.validation.seed=1"), None)
    assert other.eval != data.eval
    # commonsense/all under validation: one carved set from the union, not the eight test sets
    cs = load_task(cfg_of("commonsense/all", "task.eval_split=validation"), None)
    assert [s.name for s in cs.evals] == ["commonsense/all"] and len(cs.train) == UNION - 1000


@pytest.mark.integration
def test_gsm8k_fewshot_prompts() -> None:
    """k-shot: k train exemplars (prompt + target) before each evaluated prompt, the same for every
    example and every run; training prompts stay zero-shot."""
    cfg = cfg_of("gsm8k/gsm8k", "task.num_fewshot=3")
    data = load_task(cfg, None)
    zero = data_of("gsm8k/gsm8k")
    assert data.train == zero.train
    first, second = data.eval[0].prompt, data.eval[1].prompt
    prefix = first[: -len(zero.eval[0].prompt)]
    assert first.endswith(zero.eval[0].prompt) and second == prefix + zero.eval[1].prompt
    assert prefix.count("Question: ") == 3 and prefix.count("\n#### ") == 3 and prefix.endswith("\n\n")
    shots = [e for e in zero.train if f"{e.prompt}{e.target}\n\n" in prefix]
    assert len(shots) == 3
    assert load_task(cfg, None).eval == data.eval
    assert any("3-shot" in n for n in data.notes)


@pytest.mark.integration
def test_omegaconf_configs_work() -> None:
    """The harness passes Hydra DictConfigs, not dicts."""
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(cfg_of("commonsense/boolq"))
    data = load_task(cfg, None)
    assert len(data.eval) == EXPECTED_ROWS["commonsense/boolq"][1][0]
    assert parse_answer(cfg, "The correct answer is TRUE") == "true"
    mrpc = omegaconf.OmegaConf.create(cfg_of("glue/mrpc"))
    assert load_task(mrpc, None).train == data_of("glue/mrpc").train
