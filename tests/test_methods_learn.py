"""Every method learns: its loss falls and top-1 ends far above chance on a tiny set it trains on.

A sign error or a wrong target in any loss term fails here (the other tests only check shapes and finiteness).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from saolctl.data import DigitsConfig, collate_samples, open_dataset
from saolctl.engine.recipes import DIGITS
from saolctl.methods import list_methods
from saolctl.methods.registry import builtin_methods
from saolctl.models import create_model, create_objective

STEPS = 30


@pytest.fixture(scope="module")
def tiny_set() -> tuple[torch.Tensor, torch.Tensor]:
    """64 embedded digits at 48 px (10 classes: chance is 10%)."""
    ds = open_dataset("digits", "train", train=False, img_size=48, seed=0,
                      digits=DigitsConfig(train_size=64, val_size=16, test_size=16))
    batch = collate_samples([ds[i] for i in range(len(ds))])
    return batch.images, batch.labels


# SAOL with CutMix on half its batches, so that every term takes part; the others with their own digits options
EXTRA = {"saol": {"cutmix_prob": 0.5}}


@pytest.mark.parametrize("method", [m.name for m in builtin_methods()])
def test_the_method_learns_a_tiny_set(method: str, tiny_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert method in list_methods()
    images, labels = tiny_set
    torch.manual_seed(0)
    model = create_model("cifar_resnet20", method, num_classes=10, **{**DIGITS.options_for(method), **EXTRA.get(method, {})})
    objective = create_objective(model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    losses, cls = [], []
    start = time.perf_counter()
    model.train()
    for step in range(STEPS):
        part = slice((step % 2) * 32, (step % 2) * 32 + 32)
        terms = objective(model, images[part], labels[part], rng)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        losses.append(float(terms.total.detach()))
        if "cls" in terms.terms:
            cls.append(float(terms.terms["cls"].detach()))
    model.eval()
    with torch.no_grad():
        top1 = 100.0 * float((model(images).logits.argmax(dim=1) == labels).float().mean())
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    print(f"{method}: loss {first:.3f} -> {last:.3f}, top-1 {top1:.1f}%, {time.perf_counter() - start:.1f} s")
    assert last < 0.6 * first, f"{method}: the loss did not fall ({first:.3f} -> {last:.3f})"
    if cls:  # with auxiliary terms beside it (SPG's masks, SAOL's), the classification term itself falls too
        assert np.mean(cls[-4:]) < 0.6 * np.mean(cls[:4]), f"{method}: the cls term did not fall"
    assert top1 >= 50.0, f"{method}: top-1 {top1:.1f}% on the set it trained on (chance: 10%)"
