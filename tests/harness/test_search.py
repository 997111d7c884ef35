"""Optuna search on the real embedded MiniLM and real SST-2: trials are jobs on the validation split.

Tiny budgets (a few optimizer steps, 32 validation examples) keep each job to seconds; the scores are
near chance, which is fine: what is tested is the driver (parallelism, resume after a kill, pruning
from a subprocess, reproducibility, tune's equal budget), not the model.
"""
from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from harness.cli import main as cli_main
from harness.dispatch import execute
from harness.leaderboard.report import generate
from harness.records import iter_records, read_record
from harness.search import Driver, make_sampler, open_study, plan, run_search, trial_spec, tune
from harness.spec import PROJECT_ROOT, ConfigError
from harness.trial_report import open_storage

TINY = ["method=lora", "task=glue/sst2", "budget=smoke", "budget.tokens=150", "budget.max_seq_len=32",
        "budget.eval_size=32", "task.validation.size=32", "logger=none"]


def _dirs(root: Path) -> list[str]:
    return [f"results_dir={root / 'results'}", f"runs_dir={root / 'runs'}"]


def _load(search) -> optuna.Study:
    return optuna.load_study(study_name=search.study_name, storage=open_storage(search.storage))


def _assert_only_validation(results: Path) -> None:
    records = list(iter_records(results))
    assert records
    for rec in records:
        assert rec["run"]["spec"]["task"]["eval_split"] == "validation"
        if rec["eval"] is not None:
            assert rec["eval"]["eval_split"] == "validation" and rec["eval"]["split"] == "validation"


def test_every_problem_listed_before_any_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "conf" / "search"
    space.mkdir(parents=True)
    (space / "bad.yaml").write_text("""name: bad
methods: []
params:
  method.optim.lr: {type: float, low: 0.0, high: 1.0e-2, log: true}
  method.params.r: {type: categorical, choices: [0, 8]}
  method.params.lora_dropout: {type: float, low: 0.3, high: 0.1}
  method.params.rank: {type: int, low: 1, high: 4}
sampler: annealing
seed: 0
pruner: successive
pruner_args: {}
n_trials: 4
parallelism: 1
storage: null
objective: {metric: f1, direction: null, second: null}
""")
    rc = cli_main(["search", *TINY, *_dirs(tmp_path), f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                   "search=bad"])
    err = capsys.readouterr().err
    assert rc == 2
    for expected in ("method.optim.lr: a log range must be > 0", "method.params.r=0: method.params.r: 0 must be > 0",
                     "lora_dropout: empty range", "method.params.rank: not a parameter of method 'lora'",
                     "search.sampler: 'annealing' is not one of", "search.pruner: 'successive' is not one of",
                     "search.objective.metric: 'f1' is not a metric task glue/sst2 produces"):
        assert expected in err, expected
    assert "7 problem(s)" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


def test_study_name_is_identity() -> None:
    a = plan([*TINY, "search.n_trials=3"])
    assert a.study_name == plan([*TINY, "search.n_trials=9", "search.parallelism=4"]).study_name
    assert a.study_name != plan([*TINY, "search.sampler=random"]).study_name
    assert a.study_name != plan([*TINY, "budget.tokens=300"]).study_name
    assert a.study_name.startswith("lora.minilm-l6.glue-sst2.smoke.lora.tpe-")
    assert a.base_spec.task["eval_split"] == "validation"
    spec = trial_spec(a, {"method.optim.lr": 1e-3, "method.params.r": 4, "method.params.lora_alpha": 8,
                          "method.params.lora_dropout": 0.0}, number=0, trial_id=0)
    assert spec.method["params"]["r"] == 4 and spec.method["optim"]["lr"] == 1e-3
    assert "trial" not in spec.semantic() and spec.sweep_name == a.study_name


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 4-trial study, parallelism 2, local launcher: the driver is SIGKILLed once 2 trials are
    complete (the next ones in flight), then the same command resumes it to 4."""
    root = tmp_path_factory.mktemp("study")
    overrides = [*TINY, *_dirs(root), "launcher=local", "search.n_trials=4", "search.parallelism=2",
                 "search.sampler=random"]
    search = plan(overrides)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "search", *overrides], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    complete, running, killed_at = 0, 0, None
    try:
        while proc.poll() is None and time.perf_counter() - t0 < 240:
            if Path(search.storage).exists():
                try:
                    trials = _load(search).get_trials(deepcopy=False)
                except KeyError:   # the study is being created
                    trials = []
                complete = sum(t.state.name == "COMPLETE" for t in trials)
                running = sum(t.state.name == "RUNNING" for t in trials)
                if complete >= 2:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = datetime.datetime.now()
                    break
            time.sleep(0.2)
    finally:
        proc.wait(timeout=30)
    assert complete >= 2 and killed_at is not None, "the driver never got to 2 complete trials"
    lines: list[str] = []
    result = run_search(overrides, log_fn=lines.append)
    return {"search": search, "result": result, "root": root, "running_at_kill": running, "log": lines,
            "killed_at": killed_at}


def test_killed_study_resumes_to_four_without_duplicates(killed_and_resumed: dict) -> None:
    search, result = killed_and_resumed["search"], killed_and_resumed["result"]
    trials = _load(search).get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(4))
    assert result.n_trials == 4 and result.states == {"COMPLETE": 4}
    # the killed driver left trials RUNNING: they were reconciled (watched, told from a record, or rerun)
    if killed_and_resumed["running_at_kill"]:
        assert any("still running" in s or "reconciled" in s or "running it again" in s
                   for s in killed_and_resumed["log"])
    # parallelism 2 (judged on the first driver's trials: a rerun trial keeps its first start time):
    # two trials were in flight together, never three
    spans = [(t.datetime_start, t.datetime_complete) for t in trials
             if t.datetime_complete < killed_and_resumed["killed_at"]]
    overlap = [sum(a <= s < b for a, b in spans) for s, _ in spans]
    assert max(overlap) <= 2 and any(o == 2 for o in overlap)
    # one record per trial, each naming its trial; every one evaluated on the validation split
    records = {rec["run"]["search"]["trial"]: rec for rec in iter_records(killed_and_resumed["root"] / "results")}
    assert sorted(records) == list(range(4))
    for t in trials:
        rec = records[t.number]
        assert rec["run"]["search"] == {"study": search.study_name, "trial": t.number, "params": t.params}
        assert rec["eval"]["metrics"]["accuracy"]["value"] == pytest.approx(t.value)
        assert rec["run"]["sweep"] == search.study_name   # the W&B group
    _assert_only_validation(killed_and_resumed["root"] / "results")


def test_best_config_rerun_reproduces_its_score(killed_and_resumed: dict, capsys: pytest.CaptureFixture) -> None:
    search = killed_and_resumed["search"]
    best = _load(search).best_trial
    spec = trial_spec(search, best.params, number=best.number, trial_id=0)
    import dataclasses

    summary = execute(dataclasses.replace(spec, force=True, launcher="debug"))
    assert summary["status"] == "success"
    assert summary["accuracy"] == pytest.approx(best.value, abs=1e-9)
    assert cli_main(["studies", "--results-dir", str(killed_and_resumed["root"] / "results")]) == 0
    out = capsys.readouterr().out
    assert f"{search.study_name}: 4 trial(s) (4 complete)" in out and f"best: trial {best.number}" in out


def test_median_pruner_prunes_a_bad_trial_from_a_subprocess_job(tmp_path: Path) -> None:
    overrides = [*TINY, *_dirs(tmp_path), "launcher=local", "search.n_trials=3", "search.pruner=median",
                 "+search.pruner_args.n_startup_trials=2", "budget.eval_every=2", "budget.tokens=400"]
    search = plan(overrides)
    study = open_study(search)
    dists = {p.path: p.distribution() for p in search.params}
    good = {"method.optim.lr": 5e-3, "method.params.r": 8, "method.params.lora_alpha": 16,
            "method.params.lora_dropout": 0.0}
    for _ in range(2):   # two earlier trials that scored well at every evaluation
        study.add_trial(optuna.trial.create_trial(params=good, distributions=dists, value=0.99,
                                                  intermediate_values={s: 0.99 for s in range(2, 40, 2)}))
    study.enqueue_trial({**good, "method.optim.lr": 1e-5})   # deliberately bad: barely learns
    result = Driver(search).run()
    assert result.states == {"COMPLETE": 2, "PRUNED": 1}
    pruned = study.trials[2]
    assert pruned.state.name == "PRUNED" and list(pruned.intermediate_values) == [2]
    rec = read_record(Path(pruned.user_attrs["record"]))
    assert rec["run"]["status"] == "pruned" and rec["run"]["search"]["trial"] == 2
    assert "pruned by the median pruner at step 2" in rec["run"]["error"]
    assert rec["run"]["launcher"] == "local"


def test_tune_gives_every_method_the_same_budget_then_reports(tmp_path: Path) -> None:
    overrides = ["method=lora,vera", *TINY[1:], *_dirs(tmp_path), "search.n_trials=2", "budget.seeds=1"]
    out = tune(overrides, log_fn=lambda s: None)
    assert len(out["studies"]) == 2 and [f["status"] for f in out["finals"]] == ["success", "success"]
    finals = [r for r in iter_records(tmp_path / "results") if r.get("tuning")]
    assert sorted(r["run"]["method"] for r in finals) == ["lora", "vera"]
    for rec in finals:
        t = rec["tuning"]
        assert rec["eval"]["eval_split"] == "reported" and rec["eval"]["split"] == "dev"
        assert t["trials"] == 2 and t["split"] == "validation" and t["study"] in out["studies"]
        assert rec["run"]["spec"]["method"]["optim"]["lr"] == t["params"]["method.optim.lr"]
        assert set(t["space"]["params"]) == set(t["params"])
    trials = [r for r in iter_records(tmp_path / "results") if r["run"].get("search")]
    assert len({r["run"]["signature"] for r in trials}) >= 2 and all(
        r["eval"]["eval_split"] == "validation" for r in trials)
    md, _, reports = generate(tmp_path / "results", tmp_path / "board", n_boot=0, html=False, jobs=1,
                              use_cache=False)
    (rep,) = reports
    assert "equal search budget: every method had 2 Optuna trial(s)" in md
    assert sorted(rep.board.scores.index) == ["lora", "vera"]
    assert rep.board.n_seeds.to_numpy().max() == 1   # the validation trials are not ranked as seeds


def test_unequal_budget_is_flagged() -> None:
    from harness.leaderboard.tuning import search_budget_note

    assert search_budget_note(["lora", "vera"], {}) is None
    assert search_budget_note(["lora", "vera"], {"lora": {6}, "vera": {6}}).startswith("equal search budget")
    note = search_budget_note(["full", "lora", "vera"], {"lora": {6}, "vera": {2}})
    assert note.startswith("UNEQUAL search budget") and "full untuned" in note and "vera 2 trial(s)" in note


def test_two_objectives_report_a_pareto_front(tmp_path: Path) -> None:
    overrides = [*TINY, *_dirs(tmp_path), "search.n_trials=2", "search.sampler=nsgaii",
                 "search.objective.second=trainable_params"]
    with pytest.raises(Exception, match="cannot prune a multi-objective study"):
        plan([*overrides, "search.pruner=hyperband"])
    result = run_search(overrides, log_fn=lambda s: None)
    assert result.states == {"COMPLETE": 2} and result.best
    records = {r["run"]["search"]["trial"]: r for r in iter_records(tmp_path / "results")}
    for b in result.best:   # the Pareto front: (validation accuracy, trainable parameters)
        rec = records[b["number"]]
        assert b["values"] == [rec["eval"]["metrics"]["accuracy"]["value"], rec["train"]["trainable_params"]]


def test_a_trial_killed_while_being_sampled_is_finished_not_lost(tmp_path: Path) -> None:
    """A driver killed inside ask() leaves a RUNNING trial with some values drawn: the next driver
    draws the rest for the same trial number and runs it (launcher=debug)."""
    overrides = [*TINY, *_dirs(tmp_path), "search.n_trials=1"]
    search = plan(overrides)
    study = open_study(search)
    half = study.ask()
    half.suggest_float("method.optim.lr", 1e-5, 1e-2, log=True)   # killed here, before the rest
    result = run_search(overrides, log_fn=lambda s: None)
    assert result.states == {"COMPLETE": 1}
    (trial,) = _load(search).trials
    assert trial.number == 0 and set(trial.params) == {p.path for p in search.params}
    assert trial.params["method.optim.lr"] == half.params["method.optim.lr"]
    (rec,) = iter_records(tmp_path / "results")
    assert rec["run"]["search"]["params"] == trial.params


SPACES = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "search").glob("*.yaml"))


@pytest.mark.parametrize("space", SPACES)
def test_every_search_space_is_valid_for_every_method_it_lists(space: str) -> None:
    """Each conf/search/ space names real config fields with sane ranges for each of its methods
    (plan() runs the same checks a search makes before its first trial)."""
    import yaml

    from harness.search import plan, space_for

    methods = yaml.safe_load((PROJECT_ROOT / "conf" / "search" / f"{space}.yaml").read_text())["methods"]
    assert methods
    for method in methods:
        assert space_for(method) == space
        plan([f"method={method}", "model=minilm-l6", "task=glue/sst2", f"search={space}", "logger=none"])


def test_rdb_storage_study_resumes(tmp_path: Path) -> None:
    """search.storage takes an RDB URL (SQLite here, PostgreSQL on a cluster): the study lives in the
    database, and the same command run again continues it to n_trials with no duplicate number."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = [*TINY, *_dirs(tmp_path), f"search.storage={url}", "search.sampler=random"]
    first = Driver(plan([*base, "search.n_trials=2"])).run()
    assert first.states == {"COMPLETE": 2}
    again = plan([*base, "search.n_trials=3"])
    assert again.study_name == plan([*base, "search.n_trials=2"]).study_name   # n_trials is not identity
    Driver(again).run()
    study = optuna.load_study(study_name=again.study_name, storage=url)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert not (tmp_path / "results" / "studies").exists() or not list(
        (tmp_path / "results" / "studies").glob("*.journal"))
    _assert_only_validation(tmp_path / "results")


@pytest.mark.parametrize(("peer_score", "expected"), [(0.99, "PRUNED"), (0.0, "COMPLETE")])
def test_hyperband_pruner_prunes_a_trial_below_its_bracket(tmp_path: Path, peer_score: float,
                                                          expected: str) -> None:
    """The hyperband pruner, fed by a job's periodic validation reports, stops a trial that scores
    below the earlier trials of its bracket at the same step, and lets one that beats them finish
    (in-process job: the debug launcher)."""
    overrides = [*TINY, *_dirs(tmp_path), "search.pruner=hyperband",
                 "+search.pruner_args.min_resource=2", "+search.pruner_args.max_resource=8",
                 "+search.pruner_args.reduction_factor=2", "budget.eval_every=2", "budget.tokens=400"]
    search = plan([*overrides, "search.n_trials=9"])
    study = open_study(search)
    dists = {p.path: p.distribution() for p in search.params}
    # Hyperband compares a trial only with trials of its own bracket that passed the same rungs (what
    # should_prune records), so the earlier trials report step by step like real ones would.
    n_peers = 8
    for _ in range(n_peers):
        trial = study.ask(fixed_distributions=dists)
        for step in range(2, 10, 2):
            trial.report(peer_score, step)
            trial.should_prune()
        study.tell(trial, peer_score)
    study.enqueue_trial({"method.optim.lr": 5e-3, "method.params.r": 8, "method.params.lora_alpha": 16,
                         "method.params.lora_dropout": 0.0})
    result = Driver(search).run()
    want = {"COMPLETE": n_peers, "PRUNED": 1} if expected == "PRUNED" else {"COMPLETE": n_peers + 1}
    assert result.states == want
    rec = read_record(Path(study.trials[n_peers].user_attrs["record"]))
    if expected == "PRUNED":
        assert rec["run"]["status"] == "pruned" and "hyperband" in rec["run"]["error"]
    else:
        assert rec["run"]["status"] == "success"


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "nsgaii", "grid"])
def test_every_sampler_is_seeded_and_reproducible(tmp_path: Path, sampler: str) -> None:
    """The same seed draws the same trials with every sampler (grid: over a categorical space; on the
    LoRA space, whose lr is continuous, it is refused before any trial with the reason)."""
    base = [*TINY, *_dirs(tmp_path), f"search.sampler={sampler}"]
    if sampler == "grid":
        with pytest.raises(ConfigError, match="grid needs categorical, int or stepped float params"):
            plan(base)
        space = tmp_path / "conf" / "search"
        space.mkdir(parents=True)
        (space / "gridded.yaml").write_text(
            "name: gridded\nmethods: []\nparams:\n"
            "  method.params.r: {type: categorical, choices: [4, 8]}\n"
            "  method.params.lora_alpha: {type: categorical, choices: [8, 16]}\n"
            "sampler: grid\nseed: 0\npruner: none\npruner_args: {}\nn_trials: 4\nparallelism: 1\n"
            "storage: null\nobjective: {metric: null, direction: null, second: null}\n")
        base += [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "search=gridded"]
    search = plan(base)
    dists = {p.path: p.distribution() for p in search.params}
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=make_sampler(search, 0), directions=search.directions)
        draws.append([study.ask(dists).params for _ in range(4)])
    assert draws[0] == draws[1]
    assert len({tuple(sorted(p.items())) for p in draws[0]}) > 1   # it explores, not one point
    if sampler == "grid":
        assert {(p["method.params.r"], p["method.params.lora_alpha"]) for p in draws[0]} == {
            (4, 8), (4, 16), (8, 8), (8, 16)}


def test_launcher_local_fields_reach_submitit_as_it_knows_them(tmp_path: Path) -> None:
    """launcher=local's own fields (parallel, nproc_per_job) never reach submitit's local executor, which refuses
    an argument it does not know; several ranks per trial are refused with the launcher that gives them."""
    from harness.search import make_executor

    local = {"parallel": 2, "nproc_per_job": 1, "timeout_min": 5, "cpus_per_task": 1, "gpus_per_node": 0}
    assert make_executor("local", local, tmp_path) is not None
    with pytest.raises(ValueError, match="nproc_per_job.*tasks_per_node"):
        make_executor("local", {**local, "nproc_per_job": 2}, tmp_path)
