"""The CUDA-graph option (`sgtlab.fast.graphs`), as far as a CPU can check it: when it applies, and
that the wrapped model (torch.compile with the cudagraphs backend, which on CPU tensors runs the
captured graphs eagerly instead of recording them) trains and is attacked exactly as the plain one.
What only a GPU shows (the recording, the replay, the speed) is in docs/scale.md."""
from __future__ import annotations

import warnings

import pytest
import torch

from sgtlab.data.base import TensorData
from sgtlab.errors import SgtlabWarning
from sgtlab.evaluate.robustness import robustness_sweep
from sgtlab.experiments.presets import RunSpec
from sgtlab.fast import graphs
from sgtlab.models import build_model
from sgtlab.train.config import TrainConfig
from sgtlab.train.loop import train_model


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("sgt-cnn", 1, 10, [0.13], [0.31])


def _data(n=96, seed=1):
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), "rand")


def test_graphs_apply_only_on_cuda_to_models_without_hooks():
    model = _model()
    assert "CUDA" in graphs.graph_ineligible(model, torch.device("cpu"))
    assert graphs.graph_ineligible(model, torch.device("cuda")) is None
    hooked = _model()
    hooked.body[3].register_forward_hook(lambda m, i, o: None)
    assert graphs.graph_ineligible(hooked, torch.device("cuda")) == "the model has hooks"
    compiled = torch.compile(model, backend="cudagraphs")
    assert graphs.graph_ineligible(compiled, torch.device("cuda")) == "the model is already compiled"


def test_graphed_falls_back_with_a_warning_only_when_asked_for():
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert graphs.graphed(model, "cpu", enabled=False) is model
    with pytest.warns(SgtlabWarning, match="CUDA graphs not used: not on a CUDA device"):
        assert graphs.graphed(model, "cpu") is model


def _count_wrapped_calls(monkeypatch) -> list[int]:
    """The batch sizes the wrapper's forward saw."""
    calls: list[int] = []
    forward = graphs.Graphed.forward

    def spy(self, x):
        calls.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(graphs.Graphed, "forward", spy)
    return calls


@pytest.fixture
def cpu_graphs(monkeypatch):
    """Let the wrapper run on the CPU (compiled, not recorded)."""
    monkeypatch.setattr(graphs, "DEVICES", ("cuda", "cpu"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


STEPS = 3  # PGD steps of the inner attacks


@pytest.mark.parametrize("method,calls_per_step", [("st", 1), ("at-fgsm", 2), ("at-pgd", 1 + STEPS), ("sgt", 1),
                                                   ("sga", 1 + STEPS), ("asgt", 2 + STEPS), ("scaat", 1 + STEPS)])
def test_training_through_the_wrapper_gives_the_plain_weights(cpu_graphs, monkeypatch, method, calls_per_step):
    """Two epochs (two batch shapes: 64 and the last 32), dropout in train mode, every method: the
    same weights, bit for bit. The saliency-guided methods keep their
    path (the shared eval/train prefix on the plain module) and so their order of random draws; the
    training forwards and the inner attacks' steps go through the wrapper."""
    train, test = _data(), _data(32, seed=2)
    calls = _count_wrapped_calls(monkeypatch)
    weights = {}
    for on in (False, True):
        model = _model()
        cfg = TrainConfig(method=method, epochs=2, batch_size=64, lr=0.05, device="cpu", cuda_graphs=on)
        cfg.method_cfg.train_eps, cfg.method_cfg.train_steps, cfg.method_cfg.warmup_epochs = 0.1, STEPS, 1
        torch.manual_seed(5)
        train_model(model, {}, train, test, cfg, None, progress=False)
        weights[on] = model.state_dict()
    assert calls == [b for b in (64, 32, 64, 32) for _ in range(calls_per_step)]
    assert all(torch.equal(weights[False][k], weights[True][k]) for k in weights[False])


def test_the_sweep_attacks_through_the_wrapper_and_gets_the_plain_result(cpu_graphs, monkeypatch):
    model, data = _model().eval(), _data(40)
    calls = _count_wrapped_calls(monkeypatch)
    plain = robustness_sweep(model, data, ["fgsm", "pgd"], [0.05, 0.1], batch_size=16, progress=False)
    wrapped = robustness_sweep(model, data, ["fgsm", "pgd"], [0.05, 0.1], batch_size=16, progress=False,
                               cuda_graphs=True)
    assert calls and wrapped.robust_accuracy == plain.robust_accuracy
    assert all(torch.equal(wrapped.first_fooled[a], plain.first_fooled[a]) for a in plain.first_fooled)


def test_the_sweep_and_the_loop_use_no_graphs_unless_asked(cpu_graphs, monkeypatch):
    calls = _count_wrapped_calls(monkeypatch)
    model, data = _model().eval(), _data(8)
    robustness_sweep(model, data, ["pgd"], [0.1], progress=False)  # (FGSM needs only the clean gradient)
    train_model(_model(), {}, data, None, TrainConfig(epochs=1, batch_size=8, device="cpu"), None, progress=False)
    assert calls == []


def test_the_option_does_not_change_a_runs_identity():
    base = RunSpec("st-s0", "ST", 0, {"method": "st", "epochs": 1}, {"eps": [0.1]}, {})
    on = RunSpec("st-s0", "ST", 0, {"method": "st", "epochs": 1, "cuda_graphs": True},
                 {"eps": [0.1], "cuda_graphs": True}, {})
    assert on.config_hash() == base.config_hash()
    other = RunSpec("st-s0", "ST", 0, {"method": "st", "epochs": 2}, {"eps": [0.1]}, {})
    assert other.config_hash() != base.config_hash()


def test_the_command_line_says_in_one_line_that_graphs_were_not_used(tmp_path, capsys):
    from sgtlab.cli import main

    args = ["train", "--cuda-graphs", "--epochs", "1", "--train-subset", "64", "--eval-subset", "32",
            "--batch-size", "32", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    # (64 images, one epoch: the run also says it ended at chance, a line of its own)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "at or below chance" not in line]
    assert err == ["sgtlab: warning: CUDA graphs not used: not on a CUDA device (cpu); running the model as it is"]
    assert main([*args, "--resume", "--epochs", "2"]) == 0  # resumable with the option


def test_the_estimate_times_training_steps_through_the_wrapper_when_asked(cpu_graphs, monkeypatch):
    from sgtlab.experiments.estimate import time_training_steps

    calls = _count_wrapped_calls(monkeypatch)
    for on in (False, True):
        tc = TrainConfig(dataset="mnist5k", model="sgt-cnn", method="st", batch_size=16, device="cpu", cuda_graphs=on)
        seconds, _ = time_training_steps(tc, _data(64), torch.device("cpu"), steps=2, warmup=1)
        assert seconds > 0
    assert calls == [16, 16, 16]  # the run with the option only
