"""Custom methods through the real training loop (MiniLM on SST-2, a few hundred tokens): the init hook
(LoRA-SB), the per-step callbacks (SingLoRA's ramp, LaMDA's freezing, DyLoRA's rank sampling, ElaLoRA's rank
moves) run, evaluation variants (DyLoRA at every rank) reach the record, and the saved adapter reloads onto a
fresh copy of the real backbone."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.integration

# 700 tokens: 11 optimizer steps; 16 dev sentences (DyLoRA is evaluated at each of its 8 ranks)
JOB = ["task=glue/sst2", "seed=0", "logger=none", "threads=1", "budget=smoke", "budget.steps=null",
       "budget.tokens=700", "budget.eval_size=16", "budget.checkpoint_every=null"]


def spec_in(name: str, root: Path) -> Any:
    from harness.spec import spec_from_config
    from tests.conftest import compose_dictconfig

    return spec_from_config(compose_dictconfig([f"method={name}", *JOB, f"results_dir={root}",
                                                f"runs_dir={root / 'runs'}"]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Any]]:
    """trained(name) -> (spec, TrainResult) of one uninterrupted run of the method, made when first asked for:
    the trains-saves-reloads test checks it and the resume test compares with it (DyLoRA and ElaLoRA are in
    both; an identical second run would prove nothing more)."""
    from harness.train import train

    runs: dict[str, tuple[Any, Any]] = {}

    def get(name: str) -> tuple[Any, Any]:
        if name not in runs:
            spec = spec_in(name, tmp_path_factory.mktemp(name))
            runs[name] = (spec, train(spec, progress=False))
        return runs[name]

    return get


@pytest.mark.parametrize("name", ["lora_sb", "singlora", "lamda", "dylora", "elalora"])
def test_custom_method_trains_saves_and_reloads(name: str, trained: Callable[[str], tuple[Any, Any]]) -> None:
    from harness.models import load
    from methods import _adapters

    spec, res = trained(name)
    assert res.steps > 0 and res.loss_curve and res.adapter_bytes > 0
    adapter = spec.run_dir / "adapter"
    assert (adapter / _adapters.WEIGHTS_FILE).exists() and (adapter / "classifier.safetensors").exists()
    saved = _adapters.load(load(spec.model, spec.cache_dir).backbone, adapter)
    layers = _adapters.adapter_layers(saved)
    assert layers
    if name == "singlora":   # the ramp advanced with the steps taken, and was saved
        assert all(int(lyr.steps_done) == res.steps for _, lyr in layers)
    if name == "lamda":      # some of B's columns froze during the run
        assert all(int(lyr.b_frozen_cols) >= 1 for _, lyr in layers)
    if name == "dylora":     # evaluated at every rank b < r besides the primary (rank r), and recorded so
        from harness.dispatch import eval_block

        r = spec.method["params"]["r"]
        variants = res.final_eval["variants"]
        assert sorted(variants, key=lambda n: int(n[2:])) == [f"r={b}" for b in range(1, r)]
        assert all(v["n_examples"] == res.final_eval["n_examples"] == 16 for v in variants.values())
        block = eval_block(spec, res)
        assert set(block["variants"]) == set(variants)
        assert all(set(v["metrics"]) == set(block["metrics"]) for v in block["variants"].values())
        # the trained adapter differs between ranks: rank 1 is not the full adapter
        import methods

        ids = torch.randint(1000, 2000, (2, 12), generator=torch.Generator().manual_seed(0))
        saved.eval()
        with torch.no_grad():
            full = saved(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            with dict(methods.resolve(spec.method).eval_variants(saved, spec.method))["r=1"]:
                low = saved(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        assert not torch.allclose(full, low, atol=1e-5)
    if name == "elalora":    # ranks moved between layers in the run, the total kept; the reload has them
        r = spec.method["params"]["r"]
        ranks = [lyr.rank for _, lyr in layers]
        assert sum(ranks) == r * len(ranks) and len(set(ranks)) > 1, ranks
    if name == "lora_sb":    # B, A came from the gradient estimate: orthonormal, not W0's singular vectors
        lyr = layers[0][1]
        r = lyr.lora_R.shape[0]
        torch.testing.assert_close(lyr.lora_B.T @ lyr.lora_B, torch.eye(r), atol=1e-4, rtol=0)
        u = torch.linalg.svd(lyr.base_layer.weight.float())[0][:, :r]
        assert not torch.allclose((u.T @ lyr.lora_B).abs(), torch.eye(r), atol=1e-2)


@pytest.mark.parametrize("name", ["dylora", "elalora"])
def test_interrupted_custom_run_resumes_exactly(name: str, tmp_path: Path,
                                                trained: Callable[[str], tuple[Any, Any]]) -> None:
    """train() stopped by a (simulated) USR2 mid-run and started again equals the uninterrupted run bit for bit:
    loss curve, final metrics (DyLoRA's per-rank variants too) and every saved adapter tensor (ElaLoRA's moved
    ranks included)."""
    import signal

    from safetensors.torch import load_file

    from harness.preempt import Interrupted, SignalGuard
    from harness.train import train
    from methods import _adapters

    class StopAfter(SignalGuard):
        """A guard whose USR2 arrives at the `n`-th step boundary (train() looks once per step)."""

        def __init__(self, n: int) -> None:
            self.n = n
            super().__init__()

        @property
        def pending(self) -> int | None:
            self.n -= 1
            return signal.SIGUSR2 if self.n <= 0 else None

        @pending.setter
        def pending(self, value: int | None) -> None:
            pass

    ref_spec, reference = trained(name)
    spec = spec_in(name, tmp_path)
    assert spec.signature == ref_spec.signature
    with pytest.raises(Interrupted):
        train(spec, progress=False, guard=StopAfter(4))
    assert (spec.run_dir / "checkpoint.pt").exists()
    resumed = train(spec, progress=False)
    assert resumed.resumed_from_step == 4 and resumed.steps == reference.steps > 10
    assert resumed.loss_curve == reference.loss_curve
    assert resumed.final_eval["metrics"] == reference.final_eval["metrics"]
    assert resumed.final_eval.get("variants", {}).keys() == reference.final_eval.get("variants", {}).keys()
    for key, v in reference.final_eval.get("variants", {}).items():
        assert resumed.final_eval["variants"][key]["metrics"] == v["metrics"]
    expected = load_file(str(ref_spec.run_dir / "adapter" / _adapters.WEIGHTS_FILE))
    got = load_file(str(spec.run_dir / "adapter" / _adapters.WEIGHTS_FILE))
    assert sorted(got) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key
    if name == "elalora":   # the ranks did move (a resume at equal ranks would prove less): the warm-ups leave
        # steps 3..5 of 11 to reallocate in, so rounds ran both before the cut at step 4 and after it
        ranks = {k: v.shape[0] for k, v in got.items() if k.endswith("lora_E")}
        assert len(set(ranks.values())) > 1, ranks
        assert reference.steps == 11
