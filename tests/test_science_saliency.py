"""Saliency maps against closed forms on a non-linear model.

SmoothGrad averages the *signed* gradient over Gaussian noise (SPEC; Smilkov et al.). For the logit
sum_i sin(a x_i) the expectation is known: E[a cos(a (x + n))] = a cos(a x) exp(-(a sigma)^2 / 2),
n ~ N(0, sigma^2), while averaging |grad| would give a positive map of about twice the size.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sgtlab.explain import saliency_maps

A, SIGMA = 10.0, 0.15  # sigma: the default noise 0.15 times the input range [0, 1]


class Sines(nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = torch.sin(A * x).flatten(1).sum(1) + 0 * self.anchor
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_smoothgrad_averages_the_signed_gradient():
    x = torch.tensor([0.1, 0.2, 0.31, 0.4, 0.5, 0.63, 0.7, 0.8]).reshape(1, 1, 2, 4)
    y = torch.zeros(1, dtype=torch.long)
    expect = A * torch.cos(A * x) * math.exp(-(A * SIGMA) ** 2 / 2)
    torch.manual_seed(0)
    signed = saliency_maps(Sines(), x, y, "smoothgrad", reduce=False, samples=400)
    # per pixel the Monte-Carlo sd is at most A * sqrt(1/2) / sqrt(400) = 0.35
    assert (signed - expect).abs().max() < 1.6, (signed, expect)
    assert (expect < -1).any() and (signed < -1).any()  # the sign survives the averaging
    torch.manual_seed(0)
    reduced = saliency_maps(Sines(), x, y, "smoothgrad", samples=400)  # |s| summed over channels
    assert (reduced - expect.abs().sum(1)).abs().max() < 1.6
