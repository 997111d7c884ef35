"""`peftbench rank` on the real GLUE leaderboard and on malformed inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.leaderboard.rank_cli import main
from harness.leaderboard.rules import RULES

REPO = Path(__file__).resolve().parents[3]
GLUE = Path("/work/shared/data/leaderboards/glue_systems.csv")
for candidate in (REPO / "shared/data/leaderboards/glue_systems.csv", GLUE):
    if candidate.exists():
        GLUE = candidate
        break
needs_glue = pytest.mark.skipif(not GLUE.exists(), reason="GLUE leaderboard file not available")

# GLUE's `Score` column is the leaderboard's own average: leave it out. Two-metric tasks count half
# per metric; AX is a diagnostic set, weight 0.
GLUE_TASKS = "CoLA,SST-2,MRPC-a,MRPC-b,STS-B-a,STS-B-b,QQP-a,QQP-b,MNLI-m,MNLI-mm,QNLI,RTE,WNLI,AX"
GLUE_WEIGHTS = {
    "AX": 0,
    "MRPC-a": 0.5,
    "MRPC-b": 0.5,
    "STS-B-a": 0.5,
    "STS-B-b": 0.5,
    "QQP-a": 0.5,
    "QQP-b": 0.5,
}


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@needs_glue
def test_glue_json(tmp_path, capsys):
    wfile = tmp_path / "glue_weights.json"
    wfile.write_text(json.dumps(GLUE_WEIGHTS))
    code, out, err = run_cli(
        [GLUE, "--index", "Model", "--columns", GLUE_TASKS, "--weights", wfile, "--format", "json"], capsys
    )
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"convention", "systems", "tasks", "weights", "condorcet_winner", "rules", "agreement"}
    assert doc["convention"] == "peftbench"
    assert len(doc["systems"]) == 105 and len(set(doc["systems"])) == 105
    assert all(s == s.strip() for s in doc["systems"])  # trailing spaces stripped
    assert doc["tasks"] == GLUE_TASKS.split(",") and "Score" not in doc["tasks"]
    assert doc["weights"]["AX"] == 0 and doc["weights"]["MRPC-a"] == 0.5 and doc["weights"]["CoLA"] == 1
    assert doc["condorcet_winner"] == "Microsoft Alexander v-teamTuring NLR v5"
    assert set(doc["rules"]) == set(RULES)
    for name, r in doc["rules"].items():
        assert set(r) == {"ranking", "scores", "winners", "skipped"}
        if r["skipped"] is None:
            flat = [s for g in r["ranking"] for s in g]
            assert sorted(flat) == sorted(doc["systems"]), name
            assert r["winners"] == r["ranking"][0]
        else:
            assert r["ranking"] == [] and isinstance(r["skipped"], str)
    # CoLA has a 0 and STS-B a negative score, so the geometric mean cannot run: skipped, not hidden
    assert doc["rules"]["geometric_mean"]["skipped"] and doc["rules"]["geometric_mean"]["scores"]
    assert all(v is None for v in doc["rules"]["geometric_mean"]["scores"].values())
    assert sum(r["skipped"] is None for r in doc["rules"].values()) == len(RULES) - 1
    assert doc["rules"]["kemeny"]["winners"] == ["Microsoft Alexander v-teamTuring NLR v5"]
    assert doc["agreement"]["kemeny"]["kemeny"] == 1.0 and "geometric_mean" not in doc["agreement"]


@needs_glue
def test_glue_weight_zero_on_score_instead_of_columns(tmp_path, capsys):
    # excluding the aggregate by weight 0 gives the same result as leaving it out with --columns
    wfile = tmp_path / "w.yaml"
    wfile.write_text(
        "# exclude the aggregate and the diagnostic\nScore: 0\n"
        + "".join(f"{k}: {v}\n" for k, v in GLUE_WEIGHTS.items())
    )
    code, out, _ = run_cli(
        [GLUE, "--index", "Model", "--weights", wfile, "--format", "json", "--rules", "borda,kemeny"], capsys
    )
    assert code == 0
    by_weight = json.loads(out)
    assert by_weight["weights"]["Score"] == 0
    wj = tmp_path / "w.json"
    wj.write_text(json.dumps(GLUE_WEIGHTS))
    code, out, _ = run_cli(
        [
            GLUE,
            "--index",
            "Model",
            "--columns",
            GLUE_TASKS,
            "--weights",
            wj,
            "--format",
            "json",
            "--rules",
            "borda,kemeny",
        ],
        capsys,
    )
    by_columns = json.loads(out)
    assert by_weight["rules"] == by_columns["rules"]


@needs_glue
def test_glue_markdown_and_csv(tmp_path, capsys):
    code, out, _ = run_cli([GLUE, "--index", "Model", "--columns", GLUE_TASKS, "--format", "md"], capsys)
    assert code == 0
    assert "| System |" in out and "**Condorcet winner:** Microsoft Alexander" in out
    assert "## Winners" in out and "geometric_mean**: skipped" in out and "Kendall" in out
    dest = tmp_path / "out" / "glue.csv"
    code, out, _ = run_cli(
        [GLUE, "--index", "Model", "--columns", GLUE_TASKS, "--format", "csv", "--out", dest], capsys
    )
    assert code == 0 and out == ""
    csv = pd.read_csv(dest)
    assert len(csv) == 105 and list(csv.columns) == ["Model", *RULES]
    assert csv.loc[csv["Model"] == "Microsoft Alexander v-teamTuring NLR v5", "kemeny"].item() == 1
    assert csv["geometric_mean"].isna().all()


@pytest.fixture
def small(tmp_path) -> Path:
    p = tmp_path / "small.csv"
    # loss: lower is better. On acc A > B > C; on loss as given, C has the "highest" loss.
    p.write_text("method,acc,f1,loss,notes\nA,0.9,0.8,3.0,x\nB,0.8,0.7,2.0,y\nC,0.7,0.6,1.0,z\n")
    return p


def test_lower_is_better_flips_a_column(small, capsys):
    code, out, _ = run_cli([small, "--columns", "loss", "--rules", "mean", "--format", "json"], capsys)
    assert json.loads(out)["rules"]["mean"]["winners"] == ["A"]  # highest loss "wins" without the flag
    code, out, _ = run_cli(
        [small, "--columns", "loss", "--lower-is-better", "loss", "--rules", "mean", "--format", "json"],
        capsys,
    )
    doc = json.loads(out)
    assert code == 0 and doc["rules"]["mean"]["ranking"] == [["C"], ["B"], ["A"]]
    assert doc["rules"]["mean"]["scores"]["C"] == -1.0


def test_default_columns_skip_text_columns(small, capsys):
    code, out, _ = run_cli([small, "--format", "json", "--rules", "borda"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["tasks"] == ["acc", "f1", "loss"] and doc["systems"] == ["A", "B", "C"]


def test_weights_yaml_and_json_change_the_result(small, tmp_path, capsys):
    # acc and f1 favour A; loss (not flipped) favours A too -> flip it and weight it 3: C wins borda
    # borda points: acc A2 B1 C0, f1 A2 B1 C0, -loss C2 B1 A0 (x3): A 4, B 5, C 6
    for name, text in [("w.yaml", "loss: 3\n"), ("w.json", '{"weights": {"loss": 3}}')]:
        f = tmp_path / name
        f.write_text(text)
        code, out, _ = run_cli(
            [small, "--lower-is-better", "loss", "--weights", f, "--rules", "borda", "--format", "json"],
            capsys,
        )
        doc = json.loads(out)
        assert code == 0 and doc["weights"] == {"acc": 1.0, "f1": 1.0, "loss": 3.0}
        assert doc["rules"]["borda"]["scores"] == {"A": 4.0, "B": 5.0, "C": 6.0}


def test_python_dash_m_entry_point(small):
    cmd = [sys.executable, "-m", "harness.leaderboard.rank_cli", str(small)]
    proc = subprocess.run(
        [*cmd, "--format", "csv", "--rules", "mean,kemeny"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "method,mean,kemeny"


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "--lower-is-better" in capsys.readouterr().out


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


MALFORMED = [
    # (case id, table text or None for a missing file, extra args, expected words in the message)
    ("no-numeric", "name,team\nA,x\nB,y\n", [], "no numeric score column"),
    ("duplicate-names", "name,t1\nA ,1\nA,2\n", [], "duplicate system names"),
    ("non-numeric-cell", "name,t1,t2\nA,1,2\nB,oops,3\n", [], "non-numeric cell 'oops'"),
    ("non-numeric-chosen", "name,t1,t2\nA,1,x\nB,2,y\n", ["--columns", "t1,t2"], "non-numeric cell 'x'"),
    ("unknown-rule", "name,t1\nA,1\nB,2\n", ["--rules", "borda,bogus"], "unknown rule(s) ['bogus']"),
    ("unknown-column", "name,t1\nA,1\nB,2\n", ["--columns", "t1,t9"], "unknown column(s) ['t9']"),
    ("unknown-lower", "name,t1\nA,1\nB,2\n", ["--lower-is-better", "t7"], "--lower-is-better"),
    ("unknown-index", "name,t1\nA,1\nB,2\n", ["--index", "Model"], "--index 'Model'"),
    ("bad-format", "name,t1\nA,1\nB,2\n", ["--format", "xml"], "invalid choice"),
    ("empty-file", "", [], "empty"),
    ("missing-file", None, [], "not found"),
]


@pytest.mark.parametrize("case,text,extra,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_inputs_exit_2_with_one_line(case, text, extra, words, tmp_path, capsys):
    path = tmp_path / "missing.csv" if text is None else _write(tmp_path, "t.csv", text)
    code, out, err = run_cli([path, *extra], capsys)
    assert code == 2, (case, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("peftbench rank: error:"), err
    assert words in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "fname,content,words",
    [
        ("w.json", '{"t9": 1}', "unknown column 't9'"),
        ("w.yaml", "t1: -1\n", ">= 0"),
        ("w.yaml", "t1: lots\n", ">= 0"),
        ("w.json", "{not json", "not valid JSON"),
        ("w.yaml", "t1: [1, \n", "not valid YAML"),
        ("w.yaml", "- 1\n- 2\n", "mapping"),
        ("w.txt", "t1: 1\n", ".json, .yaml or .yml"),
        ("w.json", '{"t1": 0}', "every weight is 0"),
    ],
)
def test_bad_weights_exit_2(fname, content, words, tmp_path, capsys):
    table = _write(tmp_path, "t.csv", "name,t1\nA,1\nB,2\n")
    code, _, err = run_cli([table, "--weights", _write(tmp_path, fname, content)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert words in err, err


def test_unreadable_paths_exit_2(tmp_path, capsys):
    code, _, err = run_cli([tmp_path], capsys)  # a directory, not a file
    assert code == 2 and "cannot read table" in err
    table = _write(tmp_path, "t.csv", "name,t1\nA,1\nB,2\n")
    code, _, err = run_cli([table, "--weights", tmp_path / "nope.json"], capsys)
    assert code == 2 and "cannot read weights file" in err


def test_missing_cells_are_allowed(tmp_path, capsys):
    table = _write(tmp_path, "t.csv", "name,t1,t2,t3\nA,1,,3\nB,2,2,1\nC,,1,2\n")
    code, out, _ = run_cli([table, "--format", "json"], capsys)
    doc = json.loads(out)
    assert code == 0
    assert doc["rules"]["copeland"]["ranking"] == [["A"], ["B"], ["C"]]
    assert "missing" in doc["rules"]["borda"]["skipped"]
    assert doc["condorcet_winner"] is None
