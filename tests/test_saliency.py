"""Training-time saliency S(x, y) and masking M_k: the semantics SPEC.md fixes."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.models import build_model
from sgtlab.saliency import lowest_mask, mask_lowest, n_masked, saliency, saliency_and_clean_logits


def linear_model(w: torch.Tensor) -> nn.Sequential:
    """logits = W x: the gradient of logit c w.r.t. x is W[c], known exactly."""
    c, n = w.shape
    lin = nn.Linear(n, c, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    return nn.Sequential(nn.Flatten(), lin)


def dropout_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model("sgt-cnn", 1, 10, [0.13], [0.31])


@pytest.mark.parametrize("k", [0.1, 0.29, 0.5, 0.97])
def test_mask_replaces_exactly_the_lowest_positions_in_every_channel(k):
    torch.manual_seed(0)
    N, C, H, W = 5, 3, 10, 10
    x = torch.rand(N, C, H, W)
    s = torch.randn(N, H, W)
    out = mask_lowest(x, s, k, fill="fixed", low=2.0, high=3.0)  # fill outside [0, 1]: masked = > 1
    masked = out > 1.5
    n = math.floor(k * H * W + 1e-9)
    assert n_masked(k, H, W) == n
    # every channel masked at the same positions, exactly n per image
    assert torch.equal(masked, masked[:, :1].expand_as(masked))
    assert masked[:, 0].flatten(1).sum(1).tolist() == [n] * N
    # exactly the n lowest scores
    lowest = s.flatten(1).argsort(1)[:, :n]
    expect = torch.zeros(N, H * W, dtype=torch.bool).scatter_(1, lowest, True).view(N, H, W)
    assert torch.equal(masked[:, 0], expect)
    # the rest untouched, the fill inside the fixed range
    assert torch.equal(out[~masked], x[~masked])
    assert out[masked].min() >= 2.0 and out[masked].max() <= 3.0
    assert not out.requires_grad


def test_image_fill_stays_in_each_images_per_channel_range():
    torch.manual_seed(1)
    N, C, H, W = 4, 3, 8, 8
    lo = torch.rand(N, C, 1, 1) * 0.5
    span = torch.rand(N, C, 1, 1) * 0.3 + 0.05
    x = lo + span * torch.rand(N, C, H, W)
    out = mask_lowest(x, torch.randn(N, H, W), 0.5)
    mn, mx = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    assert ((out >= mn) & (out <= mx)).all()
    changed = (out != x).any(1)
    assert changed.flatten(1).sum(1).tolist() == [32] * N  # uniform draws: all 32 positions change
    # independent draws per channel and position, not one value
    assert out[:, 0][changed].unique().numel() > 100


def test_per_sample_counts():
    torch.manual_seed(2)
    s = torch.randn(3, 6, 6)
    n = torch.tensor([0, 5, 36])
    sel = lowest_mask(s, n)
    assert sel.shape == (3, 1, 6, 6)
    assert sel.flatten(1).sum(1).tolist() == [0, 5, 36]
    assert torch.equal(sel[1, 0].flatten(), lowest_mask(s[1:2], 5)[0, 0].flatten())


def test_saliency_is_the_true_class_logit_gradient_channel_mean():
    torch.manual_seed(3)
    C, H, W = 2, 4, 4
    w = torch.randn(3, C * H * W)
    model = linear_model(w)
    x, y = torch.rand(5, C, H, W), torch.tensor([0, 1, 2, 1, 0])
    expect = w[y].view(5, C, H, W).mean(1)
    assert torch.allclose(saliency(model, x, y, mode="signed"), expect)
    assert torch.allclose(saliency(model, x, y), expect.abs())
    pred = model(x).argmax(1)
    assert torch.allclose(saliency(model, x, y, mode="signed", target="pred"), w[pred].view(5, C, H, W).mean(1))


def test_signed_ranking_masks_large_negative_gradients_that_abs_keeps():
    H = W = 4
    g = torch.linspace(0.01, 0.16, 16)  # small positive gradients ...
    g[[3, 7]] = -5.0                    # ... and two large negative ones
    model = linear_model(torch.stack([g, g]))
    x, y = torch.rand(1, 1, H, W), torch.tensor([0])
    k = 2 / 16
    fixed = dict(fill="fixed", low=2.0, high=3.0)
    signed = mask_lowest(x, saliency(model, x, y, mode="signed"), k, **fixed)[0, 0].flatten() > 1.5
    absolute = mask_lowest(x, saliency(model, x, y, mode="abs"), k, **fixed)[0, 0].flatten() > 1.5
    assert signed.nonzero().flatten().tolist() == [3, 7]   # lowest signed = highest |gradient|
    assert absolute.nonzero().flatten().tolist() == [0, 1]  # lowest |gradient|


def test_saliency_restores_modes_and_leaves_parameter_grads_alone():
    model = dropout_cnn()
    model.train()
    model.body[5].eval()  # a submodule the user froze in eval mode stays so
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    s1 = saliency(model, x, y)
    s2 = saliency(model, x, y)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())
    assert torch.equal(s1, s2)  # eval mode: dropout off, so deterministic
    assert s1.shape == (8, 28, 28) and not s1.requires_grad
    with torch.no_grad():  # works inside no_grad too
        assert torch.equal(saliency(model, x, y), s1)


def test_shared_prefix_gives_the_same_saliency_logits_and_gradients():
    """The saliency pass shares the mode-independent layers with the training forward: same
    scores, same train-mode logits (same dropout draws), same parameter gradients."""
    model = dropout_cnn(4).train()
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    torch.manual_seed(9)
    s, clean = saliency_and_clean_logits(model, x, y, mode="signed")
    F.cross_entropy(clean, y).backward()
    shared = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    s_ref = saliency(model, x, y, mode="signed")
    torch.manual_seed(9)
    ref = model(x)
    F.cross_entropy(ref, y).backward()
    assert model.training and all(m.training for m in model.modules())
    assert torch.allclose(s, s_ref, atol=1e-6) and torch.allclose(clean, ref, atol=1e-6)
    assert all(torch.allclose(p.grad, shared[n], atol=1e-6) for n, p in model.named_parameters())


def test_shared_prefix_with_batch_norm_keeps_eval_statistics_for_saliency():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    model[1].running_mean.fill_(0.3)
    x, y = torch.rand(5, 1, 8, 8), torch.randint(0, 3, (5,))
    ref = copy.deepcopy(model)
    s, clean = saliency_and_clean_logits(model, x, y)
    # the saliency uses the running statistics, the train-mode logits the batch ones
    assert torch.allclose(s, saliency(ref, x, y), atol=1e-6)
    assert torch.allclose(clean, ref(x), atol=1e-6)
    assert torch.allclose(model[1].running_mean, ref[1].running_mean)  # updated once, as by one forward
    model.eval()
    _, clean_eval = saliency_and_clean_logits(model, x, y)
    assert torch.allclose(clean_eval, model(x), atol=1e-6) and not model.training


def test_bad_options_are_refused():
    x, s = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4)
    with pytest.raises(SgtlabError, match="fill"):
        mask_lowest(x, s, 0.5, fill="zero")
    with pytest.raises(SgtlabError, match="shape"):
        mask_lowest(x, torch.rand(2, 5, 5), 0.5)
    with pytest.raises(SgtlabError, match="k must"):
        mask_lowest(x, s, 1.5)
    model = linear_model(torch.randn(2, 16))
    with pytest.raises(SgtlabError, match="saliency mode"):
        saliency(model, x, torch.tensor([0, 1]), mode="square")
    with pytest.raises(SgtlabError, match="target"):
        saliency(model, x, torch.tensor([0, 1]), target="random")


def test_n_masked_floors_k_h_w_up_to_float_error():
    """floor(k H W), not a rounding: 0.3 * 3 * 3 = 2.7 masks 2; a product within the documented
    9-digit rounding of an integer (float error) counts as that integer, a larger gap does not."""
    assert n_masked(0.3, 3, 3) == 2 and n_masked(0.7, 3, 3) == 6 and n_masked(0.29, 10, 10) == 29
    assert n_masked((3 - 4e-10) / 10, 2, 5) == 3
    assert n_masked((3 - 2e-9) / 10, 2, 5) == 2


def test_mask_counts_on_non_square_images_and_the_ends_of_k():
    torch.manual_seed(4)
    x, s = torch.rand(3, 2, 4, 7), torch.randn(3, 4, 7)
    fixed = dict(fill="fixed", low=2.0, high=3.0)
    masked = mask_lowest(x, s, 0.5, **fixed)[:, 0] > 1.5
    assert masked.flatten(1).sum(1).tolist() == [14] * 3  # floor(0.5 * 4 * 7)
    assert torch.equal(mask_lowest(x, s, 0.0, **fixed), x)  # k = 0: nothing masked
    assert (mask_lowest(x, s, 1.0, **fixed) > 1.5).all()   # k = 1: every position


def test_fixed_fill_defaults_to_the_unit_range():
    """fill="fixed" without a range: uniform values in [0, 1] (the spec's example range)."""
    torch.manual_seed(5)
    x = torch.full((64, 1, 4, 4), 7.0)  # outside [0, 1]: every masked value is visible
    out = mask_lowest(x, torch.randn(64, 4, 4), 0.5, fill="fixed")
    drawn = out[out != 7.0]
    assert drawn.numel() == 64 * 8
    assert drawn.min() >= 0 and drawn.max() <= 1 and drawn.min() < 0.05 and drawn.max() > 0.95


def test_lowest_mask_of_one_position_is_the_argmin():
    torch.manual_seed(6)
    s = torch.randn(4, 3, 5)
    for n in (1, torch.ones(4, dtype=torch.long)):
        sel = lowest_mask(s, n).flatten(1)
        assert sel.sum(1).tolist() == [1] * 4
        assert torch.equal(sel.float().argmax(1), s.flatten(1).argmin(1))


@pytest.mark.parametrize("target", ["true", "pred"])
def test_plain_path_keeps_the_mode_and_target(target):
    """A model with no mode-free first layer (dropout first) takes the plain two-pass path: its
    saliency still follows the mode and the target (the logit gradient row W[c], signed)."""
    torch.manual_seed(8)
    w = torch.randn(3, 16)
    lin = linear_model(w)
    model = nn.Sequential(nn.Dropout(0.5), *lin).train()
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    s, clean = saliency_and_clean_logits(model, x, y, mode="signed", target=target)
    c = lin(x).argmax(1) if target == "pred" else y
    assert clean is None and torch.allclose(s, w[c].view(6, 4, 4), atol=1e-6)
    assert not torch.equal(lin(x).argmax(1), y)
