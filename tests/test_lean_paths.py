"""The fast paths of issue 17 against their plain definitions: the first convolution's input
gradient by col2im, the SGT step that starts its graph at the first convolution, hooks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.models import build_model
from sgtlab.saliency import (conv_input_grad, conv_input_grad_fold, conv_input_grad_kernel, has_hooks, saliency,
                             saliency_and_clean_logits)


@pytest.mark.parametrize("kw", [dict(), dict(stride=2), dict(padding=1), dict(padding=(2, 1), dilation=2),
                                dict(stride=(2, 3), padding=1)])
@pytest.mark.parametrize("fn", [conv_input_grad, conv_input_grad_fold, conv_input_grad_kernel],
                         ids=["dispatch", "fold", "kernel"])
def test_conv_input_grad_is_autograds_input_gradient(kw, fn):
    """Both ways (col2im on a CPU, PyTorch's kernel elsewhere; both run on a CPU here), in the
    gradient's dtype: a float64 gradient through a float32 layer gives autograd's float64 result."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 8, 3, **kw)  # in-channels differ from the kernel size
    x = torch.randn(4, 2, 13, 11, requires_grad=True)
    out = conv(x)
    g = torch.randn_like(out)
    (ref,) = torch.autograd.grad(out, x, g)
    assert torch.allclose(fn(conv, g, (13, 11)), ref, atol=1e-5)
    x64 = x.detach().double().requires_grad_(True)
    out64 = F.conv2d(x64, conv.weight.detach().double(), conv.bias.detach().double(), conv.stride, conv.padding,
                     conv.dilation)
    (ref64,) = torch.autograd.grad(out64, x64, g.double())
    got = fn(conv, g.double(), (13, 11))
    assert got.dtype == torch.float64 and torch.allclose(got, ref64, atol=1e-10)


def test_lean_sgt_graph_has_no_input_gradient_and_matches_the_plain_saliency():
    torch.manual_seed(1)
    model = build_model("sgt-cnn", 1, 10, [0.13], [0.31]).train()
    x, y = torch.rand(5, 1, 28, 28), torch.randint(0, 10, (5,))
    torch.manual_seed(3)
    s, clean = saliency_and_clean_logits(model, x, y)
    assert torch.allclose(s, saliency(model, x, y), atol=1e-6)
    torch.manual_seed(3)
    assert torch.allclose(clean, model(x), atol=1e-6)
    # the training graph reaches the parameters only: the input gets no gradient
    (gx,) = torch.autograd.grad(F.cross_entropy(clean, y), [p for p in model.parameters()][:1], retain_graph=True)
    assert gx.shape == model.body[0].weight.shape
    params = {id(p) for p in model.parameters()}  # (sgt-cnn's layers sit in nested Sequentials)
    assert all(id(t) in params for t in _leaf_tensors(F.cross_entropy(clean, y)))


def test_a_model_with_hooks_takes_the_plain_path():
    torch.manual_seed(2)
    model = build_model("sgt-cnn", 1, 10, [0.13], [0.31]).train()
    seen = []
    model.body[2].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    assert has_hooks(model)
    x, y = torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,))
    s, clean = saliency_and_clean_logits(model, x, y)
    assert clean is None and seen == [3]  # one plain saliency forward, seen by the hook
    assert torch.allclose(s, saliency(model, x, y))


def test_the_input_size_check_does_not_stop_the_lean_path_and_still_fires():
    from sgtlab.errors import SgtlabError

    model = build_model("sgt-cnn", 1, 10, [0.13], [0.31]).train()
    assert not has_hooks(model)  # sgtlab's own input-size check is run by the lean path itself
    _, clean = saliency_and_clean_logits(model, torch.rand(2, 1, 28, 28), torch.tensor([1, 2]))
    assert clean is not None
    with pytest.raises(SgtlabError, match="built for 28x28"):
        saliency_and_clean_logits(model, torch.rand(2, 1, 20, 20), torch.tensor([1, 2]))


def _leaf_tensors(t):
    """The leaf tensors a backward from `t` would accumulate into."""
    seen, out, todo = set(), [], [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            out.append(fn.variable)
        todo.extend(f for f, _ in fn.next_functions)
    return out


@pytest.mark.parametrize("conv_kw", [dict(), dict(groups=2), dict(padding=1, padding_mode="reflect"),
                                     dict(padding="same"), dict(stride=2, padding=1, dilation=2)])
def test_shared_prefix_is_exact_for_any_first_convolution(conv_kw):
    """Grouped, reflect-padded and 'same'-padded first convolutions take the plain prefix (the
    col2im gradient covers only plain zero-padded ones); the saliency and the train-mode logits equal
    the two-pass ones either way. A plain first convolution (with any stride, padding, dilation)
    starts the training graph at its output: the backward reaches the parameters only."""
    from sgtlab.models.base import Normalize

    torch.manual_seed(7)
    model = nn.Sequential(Normalize([0.4, 0.5], [0.2, 0.3]), nn.Conv2d(2, 4, 3, **conv_kw), nn.ReLU(),
                          nn.Dropout(0.3), nn.Flatten(), nn.LazyLinear(3))
    x, y = torch.rand(5, 2, 9, 9), torch.tensor([0, 1, 2, 1, 0])
    model(x)  # materialise the lazy layer
    model.train()
    torch.manual_seed(1)
    s, clean = saliency_and_clean_logits(model, x, y, mode="signed")
    assert torch.allclose(s, saliency(model, x, y, mode="signed"), atol=1e-6)
    torch.manual_seed(1)
    assert torch.allclose(clean, model(x), atol=1e-6)
    params = {id(p) for p in model.parameters()}
    leaves = _leaf_tensors(F.cross_entropy(clean, y))
    plain_conv = "groups" not in conv_kw and "padding_mode" not in conv_kw and conv_kw.get("padding") != "same"
    assert all(id(t) in params for t in leaves) == plain_conv
