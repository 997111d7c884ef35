"""Metrics against hand-computed values and sklearn/scipy; answer parsers on tricky text."""

from __future__ import annotations

import math
import random

import pytest

from tasks import METRICS, compute_metrics, parse_answer
from tasks.metrics import normalize_number, parse_choice, parse_number

# ------------------------------------------------------------------------------------------------
# metrics, by hand

P = [1, 0, 1, 1, 0, 1, 0, 0]
R = [1, 0, 0, 1, 1, 1, 0, 1]
# tp = 3 (0, 3, 5), fp = 1 (2), fn = 2 (4, 7), tn = 2 (1, 6)


def test_accuracy_by_hand() -> None:
    assert METRICS["accuracy"](P, R) == pytest.approx(5 / 8)
    assert METRICS["accuracy"](["true", None, "false"], ["true", "false", "true"]) == pytest.approx(1 / 3)


def test_f1_by_hand() -> None:
    assert METRICS["f1"](P, R) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert METRICS["f1"]([0, 0], [0, 0]) == 0.0  # no positives anywhere: defined as 0 (sklearn)


def test_matthews_by_hand() -> None:
    expected = (3 * 2 - 1 * 2) / math.sqrt((3 + 1) * (3 + 2) * (2 + 1) * (2 + 2))
    assert METRICS["matthews"](P, R) == pytest.approx(expected)
    assert METRICS["matthews"]([1, 1, 1], [0, 1, 1]) == 0.0  # constant predictor


def test_pearson_spearman_by_hand() -> None:
    x, y = [1.0, 2.0, 3.0], [2.0, 4.0, 7.0]
    # means 2 and 13/3; deviations (-1,0,1) and (-7/3,-1/3,8/3): sxy = 5, sxx = 2, syy = 114/9
    assert METRICS["pearson"](x, y) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert METRICS["spearman"](x, y) == pytest.approx(1.0)
    assert METRICS["spearman"]([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(METRICS["pearson"]([1, 1, 1], [1, 2, 3]))


def test_exact_match_is_numeric() -> None:
    preds = ["1080", "18.00", "$5", None, "7", "50%", "-3"]
    refs = ["1,080", "18", "5", "3", "8", "50", "-3.0"]
    assert METRICS["exact_match"](preds, refs) == pytest.approx(5 / 7)
    assert METRICS["exact_match"](["abc"], [" abc "]) == 1.0  # non-numbers: stripped string equality


def test_metric_input_checks() -> None:
    with pytest.raises(ValueError, match="2 predictions for 3 references"):
        METRICS["accuracy"]([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="no references"):
        METRICS["accuracy"]([], [])


def test_compute_metrics_lists_every_metric_in_order() -> None:
    cfg = {
        "name": "glue/mrpc",
        "metrics": [{"name": "accuracy", "direction": "max"}, {"name": "f1", "direction": "max"}],
    }
    out = compute_metrics(cfg, P, R)
    assert list(out) == ["accuracy", "f1"]
    assert out == {"accuracy": pytest.approx(5 / 8), "f1": pytest.approx(6 / 9)}
    with pytest.raises(KeyError, match="bleu"):
        compute_metrics({"name": "x", "metrics": [{"name": "bleu"}]}, P, R)


# ------------------------------------------------------------------------------------------------
# metrics, against the reference libraries on random data


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn(seed: int) -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = random.Random(seed)
    p = [rng.randint(0, 1) for _ in range(200)]
    r = [rng.randint(0, 1) for _ in range(200)]
    assert METRICS["accuracy"](p, r) == pytest.approx(skm.accuracy_score(r, p))
    assert METRICS["f1"](p, r) == pytest.approx(skm.f1_score(r, p))
    assert METRICS["matthews"](p, r) == pytest.approx(skm.matthews_corrcoef(r, p))
    p3 = [rng.randint(0, 2) for _ in range(200)]
    r3 = [rng.randint(0, 2) for _ in range(200)]
    assert METRICS["matthews"](p3, r3) == pytest.approx(skm.matthews_corrcoef(r3, p3))


@pytest.mark.parametrize("seed", range(5))
def test_against_scipy(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(seed)
    x = [rng.randint(0, 10) / 2 for _ in range(100)]  # many ties, like STS-B's half-point scores
    y = [v + rng.gauss(0, 2) for v in x]
    assert METRICS["pearson"](x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert METRICS["spearman"](x, y) == pytest.approx(stats.spearmanr(x, y)[0])


# ------------------------------------------------------------------------------------------------
# answer parsers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),
        ("The answer is: $1,080.", "1080"),
        ("so she makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("#### 1,234,567", "1234567"),
        ("####-7", "-7"),
        ("The answer is -3.", "-3"),
        ("The answer is 0.50", "0.5"),
        ("The answer is .5", "0.5"),
        ("The answer is 12.5%", "12.5"),
        ("The answer is **$2,125**", "2125"),
        ("The temperature fell to −4 degrees", "-4"),
        ("16 - 3 - 4 = 9 eggs", "9"),  # last number; the hyphens are operators, not signs
        ("20 - 5", "5"),  # a sign must touch its number
        ("It fell by -$5", "-5"),
        ("It is $-5", "-5"),
        ("It costs $ 30", "30"),
        ("Janet sells 16-3-4 = 9 eggs and makes 18", "18"),
        ("#### 18\n\nQuestion: next one? Answer: 99\n#### 99", "18"),  # first anchor: run-ons ignored
        ("The answer is that 9 * 2 = 18", "18"),  # anchor not followed by a number: last number
        ("1,2 and 3", "3"),
        ("The answer is 42. Next, 7", "42"),
        ("no number here", None),
        ("", None),
        ("$ and % only", None),
    ],
)
def test_parse_number(text: str, expected: str | None) -> None:
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,080", "1080"),
        ("$18.00", "18"),
        ("-0", "0"),
        ("-0.50", "-0.5"),
        ("1e3", "1000"),
        ("100", "100"),
        ("50%", "50"),
        ("abc", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_normalize_number(raw: str | None, expected: str | None) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the correct answer is true", "true"),
        ("The correct answer is False.", "false"),
        ("TRUE", "true"),
        ("false, not true", "false"),  # the first one in the text wins, whatever the choice order
        ("it is untrue that ... false", "false"),  # whole words only
        ("I cannot tell", None),
        ("", None),
    ],
)
def test_parse_choice(text: str, expected: str | None) -> None:
    assert parse_choice(text, ["true", "false"]) == expected


def test_parse_choice_multi_and_bool_choices() -> None:
    choices = [f"answer{i}" for i in range(1, 6)]
    assert parse_choice("the correct answer is answer3", choices) == "answer3"
    assert parse_choice("Answer5 then answer1", choices) == "answer5"
    # unquoted YAML true/false arrive as booleans; they still mean the words
    assert parse_choice("the correct answer is true", [True, False]) == "true"


def test_parse_answer_dispatches_on_task() -> None:
    assert parse_answer({"answer_parser": "number"}, "#### 1,000") == "1000"
    cfg = {"answer_parser": "choice", "choices": ["true", "false"]}
    assert parse_answer(cfg, "the correct answer is false") == "false"
    with pytest.raises(ValueError, match="answer_parser"):
        parse_answer({"name": "glue/sst2"}, "positive")


# ------------------------------------------------------------------------------------------------
# degenerate cases the GLUE metrics meet at tiny budgets


def test_matthews_degenerate_cases() -> None:
    """One predicted class (or one gold class) has no correlation: 0, as sklearn; perfect and inverted
    predictions are +1 and -1, also with three classes (MNLI-sized label spaces)."""
    assert METRICS["matthews"]([0, 0, 0, 0], [0, 1, 0, 1]) == 0.0
    assert METRICS["matthews"]([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0
    assert METRICS["matthews"]([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)
    assert METRICS["matthews"]([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # three classes by hand: C = [[1,1,0],[0,1,0],[0,0,1]] (rows gold, cols predicted), n = 4, c = 3
    # t = (2,1,1), p = (1,2,1): (3*4 - (2+2+1)) / sqrt((16-6)*(16-6)) = 7/10
    assert METRICS["matthews"]([0, 1, 1, 2], [0, 0, 1, 2]) == pytest.approx(0.7)


def test_correlation_of_constant_predictions_is_undefined() -> None:
    """A constant regression output (an untrained STS-B head can be one) has no defined correlation:
    NaN, which the record stores as null rather than pretending it is 0."""
    assert math.isnan(METRICS["pearson"]([2.5, 2.5, 2.5], [1.0, 2.0, 4.0]))
    assert math.isnan(METRICS["spearman"]([2.5, 2.5, 2.5], [1.0, 2.0, 4.0]))
    assert METRICS["pearson"]([1.0, 2.0, 4.0], [1.0, 2.0, 4.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_spearman_with_heavy_ties_against_scipy(seed: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(100 + seed)
    x = [rng.randint(0, 3) for _ in range(60)]
    y = [rng.randint(0, 2) for _ in range(60)]
    assert METRICS["spearman"](x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert METRICS["pearson"](x, y) == pytest.approx(stats.pearsonr(x, y)[0])


def test_long_numbers_keep_every_digit() -> None:
    """Decimal.normalize rounds to 28 digits by default: two different 40-digit answers must differ."""
    a, b = "1" * 40, "1" * 39 + "2"
    assert normalize_number(a) == a and normalize_number(b) == b
    assert METRICS["exact_match"]([a], [b]) == 0.0
    assert normalize_number("1" * 35 + "00.000") == "1" * 35 + "00"
