"""The Python API (`sgtlab.fit`, `train_step`, `load_model`, `robustness`, `saliency_maps`,
`saliency_metrics`, `report`, the attack objects) on a user-defined module with a batch-norm."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sgtlab
from sgtlab.errors import SgtlabError


class Net(nn.Module):
    """Not in the registry, not a Sequential, with a batch-norm; normalisation inside."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv((x - 0.5) / 0.25))), 2).flatten(1))


def bars(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.4
    for k in range(3):
        x[y == k, :, 2 * k + 1, :] = 0.9
    return x, y


FAST = dict(batch_size=16, lr=0.05, train_eps=0.1, train_steps=2, device="cpu")


def fast(method):
    """FAST's options that `method` reads (an option a method does not use is refused)."""
    from sgtlab.train.resolve import method_options

    return {k: v for k, v in FAST.items() if k not in ("train_eps", "train_steps") or k in method_options(method)}


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_import_is_light():
    code = "import sys, sgtlab; assert 'torch' not in sys.modules, 'import sgtlab imported torch'; print(sorted(sgtlab.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in ("fit", "train_step", "load_model", "robustness", "saliency_maps", "saliency_metrics", "report",
                 "list_models", "list_methods", "list_attacks", "list_datasets"):
        assert name in out and name in dir(sgtlab)


@pytest.mark.parametrize("method", ["st", "sgt", "at-fgsm", "at-pgd", "sga", "asgt", "scaat"])
def test_fit_every_method_and_resume_after_interruption(method, tmp_path, monkeypatch):
    train, test = bars(32), bars(12, seed=1)
    torch.manual_seed(0)
    ref = Net()
    full = sgtlab.fit(ref, train, test, method=method, epochs=2, out=tmp_path / "full", **fast(method))
    assert set(full) >= {"train", "test_accuracy", "epoch"} and full["epoch"] == 2
    assert len((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()) == 2

    # the same run, interrupted in the second epoch (after epoch 1's checkpoint), then resumed
    import sgtlab.train.loop as loop

    real, calls = loop.accuracy, []

    def dies_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "accuracy", dies_in_epoch_2)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        sgtlab.fit(Net(), train, test, method=method, epochs=2, out=tmp_path / "cut", **fast(method))
    monkeypatch.setattr(loop, "accuracy", real)
    with pytest.raises(SgtlabError, match="already holds a run"):
        sgtlab.fit(Net(), train, test, method=method, epochs=2, out=tmp_path / "cut", **fast(method))
    resumed = Net()  # fresh weights: the checkpoint's replace them
    last = sgtlab.fit(resumed, train, test, method=method, epochs=2, out=tmp_path / "cut", resume=True, **fast(method))
    assert last["epoch"] == 2 and last["train"] == full["train"]
    for k, v in _weights(ref).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    # the run folder loads back into the user's class
    loaded = sgtlab.load_model(tmp_path / "cut", model=Net())
    assert not loaded.training and all(torch.equal(v, loaded.state_dict()[k]) for k, v in _weights(ref).items())


def test_fit_data_forms_and_no_folder():
    x, y = bars(32)
    results = []
    for data in ((x, y), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=10)):
        torch.manual_seed(0)
        net = Net()
        results.append((sgtlab.fit(net, data, method="sgt", epochs=1, **fast("sgt"))["train"], _weights(net)))
    for train, w in results[1:]:
        assert train == results[0][0] and all(torch.equal(v, results[0][1][k]) for k, v in w.items())


def test_fit_stops_on_nan_and_keeps_last_checkpoint(tmp_path):
    class GoesNaN(Net):  # the loss turns NaN in the second epoch (2 batches per epoch)
        steps = 0

        def forward(self, x):
            if self.training:
                self.steps += 1
            out = super().forward(x)
            return out * float("nan") if self.steps > 2 else out

    with pytest.raises(SgtlabError, match="loss became nan in epoch 2") as e:
        sgtlab.fit(GoesNaN(), bars(32), bars(6), method="st", epochs=3, out=tmp_path / "r", **fast("st"))
    assert "\n" not in str(e.value) and "epoch 1) is kept" in str(e.value)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    from sgtlab.train.checkpoint import read_checkpoint

    assert read_checkpoint(tmp_path / "r")[1]["epoch"] == 1


def test_train_step_own_loop():
    x, y = bars(32)
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    first = None
    for epoch in range(8):
        parts = sgtlab.train_step(net, x, y, opt, "sgt", k=0.3, epoch=epoch)
        assert set(parts) == {"loss", "ce", "kl"} and parts["loss"].requires_grad is False
        first = first if first is not None else parts["loss"].item()
    assert parts["loss"].item() < first  # it learns
    with pytest.raises(SgtlabError, match="keeps per-sample state"):
        sgtlab.train_step(net, x, y, opt, "scaat")
    state = {}
    sgtlab.train_step(net, x, y, opt, "scaat", idx=torch.arange(32), state=state, n_train=32, train_steps=2)
    assert state["q"].shape == (32,)
    with pytest.raises(SgtlabError, match="unknown method option"):
        sgtlab.train_step(net, x, y, opt, "sgt", kk=0.3)


def test_attack_objects_torchattacks_style():
    ta = pytest.importorskip("torchattacks")
    from sgtlab.attacks import FGSM, MIFGSM, PGD, fgsm, mifgsm, pgd

    x, y = bars(16)
    torch.manual_seed(0)
    net = Net()
    net.train()  # all of them attack in eval mode
    for eps in (0.1, 8 / 255):
        torch.manual_seed(3)
        a = PGD(net, eps=eps, alpha=0.02, steps=5)(x, y)
        torch.manual_seed(3)
        b = pgd(net, x, y, eps, alpha=0.02, steps=5)
        torch.manual_seed(3)
        c = ta.PGD(net, eps=eps, alpha=0.02, steps=5, random_start=True)(x, y)
        assert torch.equal(a, b) and torch.equal(a, c)
    torch.manual_seed(3)
    a = PGD(net)(x, y)  # torchattacks' defaults: eps 8/255, alpha 2/255, 10 steps
    torch.manual_seed(3)
    assert torch.equal(a, ta.PGD(net)(x, y))
    assert torch.equal(FGSM(net, eps=0.1)(x, y), fgsm(net, x, y, 0.1))
    assert torch.equal(FGSM(net, eps=0.1)(x, y), ta.FGSM(net, eps=0.1)(x, y))
    assert torch.equal(MIFGSM(net, eps=0.1, steps=3)(x, y), mifgsm(net, x, y, 0.1, steps=3))
    assert PGD(steps=3)(net, x, y, 0.1).shape == x.shape  # the sgtlab form still works
    assert net.training
    with pytest.raises(SgtlabError, match="not bound to a model"):
        PGD(steps=3)(x, y)
    with pytest.raises(SgtlabError, match="images must lie in"):
        PGD(net, eps=0.1)(x * 2, y)


# -- wrong data: one-line errors before any work ------------------------------------------------------

X, Y = bars(12)
BAD = [
    ((X[:, 0], Y), "add the channel axis"),
    (((X * 255).to(torch.uint8), Y), "float tensor"),
    ((X * 2, Y), "must lie in \\[0, 1\\]"),
    ((X.clone().fill_(float("nan")), Y), "must lie in \\[0, 1\\]"),
    ((X, Y.float()), "integer class indices"),
    ((X, Y[:5]), "shape \\(12,\\)"),
    ((X, F.one_hot(Y, 3)), "one-hot"),
    ((X, Y + 5), "class indices \\[0, 2\\]"),
    ((X, -Y - 1), "class indices"),
    ((X, Y, Y), "pair"),
    ("images.npy", "'images.npy' is not a data set name; give a name"),
    (X, "cannot read a Tensor"),
]


def _calls(tmp_path):
    return {
        "fit": lambda net, d: sgtlab.fit(net, d, method="sgt", epochs=1, out=tmp_path / "run", **fast("sgt")),
        "fit-test": lambda net, d: sgtlab.fit(net, bars(12), d, method="st", epochs=1, out=tmp_path / "run", **fast("st")),
        "train_step": lambda net, d: sgtlab.train_step(net, *d, torch.optim.SGD(net.parameters(), lr=0.1), "sgt"),
        "robustness": lambda net, d: sgtlab.robustness(net, d, [0.1], out=tmp_path / "run"),
        "saliency_maps": lambda net, d: sgtlab.saliency_maps(net, d),
        "saliency_metrics": lambda net, d: sgtlab.saliency_metrics(net, d, out=tmp_path / "run"),
    }


@pytest.mark.parametrize("data,message", BAD)
def test_every_function_refuses_wrong_data(data, message, tmp_path):
    torch.manual_seed(0)
    net = Net()
    before = _weights(net)
    for name, call in _calls(tmp_path).items():
        if name == "train_step" and not (isinstance(data, tuple) and len(data) == 2):
            continue  # train_step takes x and y, not a data argument
        if name == "saliency_maps" and isinstance(data, torch.Tensor):
            continue  # images alone are fine there: the maps of the predicted classes
        with pytest.raises(SgtlabError, match=message) as e:
            call(net, data)
        assert "\n" not in str(e.value), name
        assert not (tmp_path / "run").exists(), name  # no work done, nothing written
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items()), name


def test_other_wrong_arguments(tmp_path):
    net = Net()
    x, y = bars(12)
    for call, message in [
        (lambda: sgtlab.fit(net, (x, y), method="nope"), "unknown training method 'nope'"),
        (lambda: sgtlab.fit(net, (x, y), lr_rate=0.1), "unknown option"),
        (lambda: sgtlab.fit("sgt-cnn", (x, y)), "torch.nn.Module"),
        (lambda: sgtlab.fit(net, (x, y), (x[:, :, :4], y)), "expected \\(1, 8, 8\\)"),
        (lambda: sgtlab.fit(nn.Linear(3, 3), (x, y)), "does not take images"),
        (lambda: sgtlab.robustness(net, (x, y), [0.1], attacks=["cw"]), "unknown attack 'cw'"),
        (lambda: sgtlab.robustness(net, (x, y), [-1.0]), "eps must be"),
        (lambda: sgtlab.load_model(tmp_path / "missing"), "no checkpoint"),
        (lambda: sgtlab.report([tmp_path]), "holds no finished runs"),
        (lambda: sgtlab.report([tmp_path / "missing"]), "does not exist"),
        (lambda: sgtlab.report([tmp_path], tmp_path / "rep"), "not a run folder"),
    ]:
        with pytest.raises(SgtlabError, match=message) as e:
            call()
        assert "\n" not in str(e.value)


def test_user_model_checkpoint_needs_its_class(tmp_path):
    sgtlab.fit(Net(), bars(16), method="st", epochs=1, out=tmp_path / "r", **fast("st"))
    with pytest.raises(SgtlabError, match=r"model=Net\(...\)") as e:
        sgtlab.load_model(tmp_path / "r")
    assert "\n" not in str(e.value)


# -- eval mode: a frozen batch-norm stays frozen ---------------------------------------------------------

def test_frozen_batchnorm_stays_frozen_through_every_evaluation(tmp_path):
    from sgtlab.attacks import PGD
    from sgtlab.data.base import TensorData
    from sgtlab.evaluate.accuracy import accuracy, predict

    x, y = bars(12)
    torch.manual_seed(0)
    net = Net()
    net.train()
    net.bn.eval()  # frozen: fine-tuning with fixed statistics
    stats = (net.bn.running_mean.clone(), net.bn.running_var.clone())
    evaluations = [
        lambda: accuracy(net, TensorData(x, y)),
        lambda: predict(net, x),
        lambda: PGD(net, eps=0.1, steps=2)(x, y),
        lambda: sgtlab.robustness(net, (x, y), [0.1], attacks=["fgsm", "pgd"]),
        lambda: sgtlab.saliency_maps(net, x, y, "smoothgrad", samples=2),
        lambda: sgtlab.saliency_metrics(net, (x, y), ["grad"], ["entropy", "aopc", "low_saliency"], aopc_steps=3,
                                        qs=[0, 1], pgd_steps=2),
    ]
    for evaluate in evaluations:
        evaluate()
        assert net.training and net.conv.training and not net.bn.training
        assert torch.equal(net.bn.running_mean, stats[0]) and torch.equal(net.bn.running_var, stats[1])


def test_model_without_parameters():
    from sgtlab.device import model_device
    from sgtlab.evaluate.accuracy import predict

    class Fixed(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]

    assert model_device(Fixed()) == torch.device("cpu")
    assert predict(Fixed(), bars(6)[0]).shape == (6,)


# -- tensorboard -------------------------------------------------------------------------------------------

def test_tensorboard_logs_and_clear_error_without_it(tmp_path, monkeypatch):
    x, y = bars(16)
    pytest.importorskip("tensorboard")
    sgtlab.fit(Net(), (x, y), (x, y), method="st", epochs=1, out=tmp_path / "r", tensorboard=True, **fast("st"))
    sgtlab.robustness(Net(), (x, y), [0.1], attacks=["fgsm"], out=tmp_path / "r", tensorboard=True)
    events = list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 200
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/loss", "test/accuracy", "robust_accuracy/fgsm"} <= tags
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(SgtlabError, match="pip install 'sgtlab\\[tensorboard\\]'"):
        sgtlab.fit(Net(), (x, y), method="st", epochs=1, out=tmp_path / "r2", tensorboard=True, **fast("st"))
    assert not (tmp_path / "r2").exists()
