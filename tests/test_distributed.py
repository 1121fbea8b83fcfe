"""Distributed training and evaluation: a real 2-process `torchrun` (gloo, CPU) against a single process.

The end-to-end test launches ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m saolctl``
for `train` and then `eval`, and checks that the distributed evaluation's metrics, curves and per-class
table equal a single-process evaluation of the same checkpoint exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from saolctl.engine.distributed import (
    DistContext, ShardSampler, all_gather_objects, all_reduce_sum, env_ranks, eval_sampler, init_distributed,
    is_main_process, sum_counters, train_sampler, wrap_ddp,
)
from saolctl.engine.eval_run import EvalSettings, run_eval
from saolctl.engine.evaluate import EvalCounters, summarize
from saolctl.models import build_model, create_objective, make_config

REPO = Path(__file__).resolve().parents[1]

TINY_TOML = """\
epochs = 1
batch_size = 16
img_size = 32
seed = 3
[digits]
image_size = 32
train_size = 96
val_size = 40
test_size = 37
"""


# ------------------------------------------------------------------------------------------------
# helpers, in one process


@pytest.mark.parametrize("n,world,block", [(0, 2, 4), (1, 2, 1), (37, 2, 8), (37, 3, 5), (64, 8, 8), (5, 8, 2)])
def test_shards_cover_every_index_exactly_once_in_whole_batches(n: int, world: int, block: int) -> None:
    shards = [list(ShardSampler(n, r, world, block)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert [len(ShardSampler(n, r, world, block)) for r in range(world)] == [len(s) for s in shards]
    single = [list(range(s, min(s + block, n))) for s in range(0, n, block)]  # one process's batches
    for r, shard in enumerate(shards):
        assert [shard[i:i + block] for i in range(0, len(shard), block)] == single[r::world]
    with pytest.raises(ValueError):
        ShardSampler(4, 2, 2)


def test_env_ranks_reads_torchrun_variables() -> None:
    assert env_ranks({}) == (0, 1, 0)
    assert env_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    assert not is_main_process({"RANK": "1", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="inconsistent torchrun environment"):
        env_ranks({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        env_ranks({"RANK": "x", "WORLD_SIZE": "2"})


def test_single_process_helpers_change_nothing() -> None:
    ctx = init_distributed(torch.device("cpu"), env={})
    assert ctx == DistContext() and not ctx.enabled and ctx.is_main
    assert train_sampler(10, ctx, seed=0) is None and eval_sampler(10, ctx, 4) is None
    arr = np.arange(5, dtype=np.int64)
    assert np.array_equal(all_reduce_sum(arr, ctx), arr)
    assert all_gather_objects({"a": 1}, ctx) == [{"a": 1}]
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, ctx) is model


def _filled_counters(seed: int, with_masks: bool) -> EvalCounters:
    """Counters of random maps, boxes and masks: what one rank might have counted."""
    rng = np.random.default_rng(seed)
    c = EvalCounters(3, np.arange(0, 1, 0.05), with_boxes=True, with_masks=with_masks)
    maps = rng.random((6, 16, 16))
    labels = rng.integers(0, 3, 6)
    correct = rng.random(6) < 0.5
    boxes = [np.array([[2, 3, 9 + i, 12]]) for i in range(6)]
    c.num_images, c.top1, c.top5 = 6, int(correct.sum()), 6
    np.add.at(c.class_images, labels, 1)
    np.add.at(c.class_top1, labels, correct.astype(np.int64))
    c.box_v2.accumulate(maps, boxes, class_correct=correct)
    for k in range(3):
        sel = np.nonzero(labels == k)[0]
        c.box_v1[k].accumulate(maps[sel], [boxes[i] for i in sel], class_correct=correct[sel])
    if c.mask is not None:
        c.mask.accumulate(maps, rng.random((6, 16, 16)) < 0.3)
    return c


@pytest.mark.parametrize("with_masks", [False, True])
def test_counter_vectors_sum_to_the_merged_counters(with_masks: bool) -> None:
    a, b = _filled_counters(0, with_masks), _filled_counters(1, with_masks)
    summed = EvalCounters(3, np.arange(0, 1, 0.05), with_boxes=True, with_masks=with_masks)
    summed.load_array(a.as_array() + b.as_array())  # what an all-reduce of two ranks gives
    a.merge(b)
    assert np.array_equal(summed.as_array(), a.as_array())
    ra, rs = summarize(a, ["0", "1", "2"]), summarize(summed, ["0", "1", "2"])
    assert ra.metrics == rs.metrics
    pd.testing.assert_frame_equal(ra.curves, rs.curves)
    sum_counters([summed], DistContext())  # a single process: unchanged
    assert np.array_equal(summed.as_array(), a.as_array())
    with pytest.raises(ValueError, match="expected"):
        summed.load_array(np.zeros(3, np.int64))


@pytest.mark.parametrize("method", ["cam", "abn", "saol"])
def test_every_parameter_gets_a_gradient(method: str) -> None:
    """Why DDP runs with find_unused_parameters=False: every trainable parameter takes part in each step."""
    cfg = make_config("cifar_resnet20", method, 10)
    torch.manual_seed(0)
    net = build_model(cfg, pretrained=False, init=None).train()
    objective = create_objective(cfg)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for seed in (0, 1):  # CutMix on one step, not on the other
        net.zero_grad(set_to_none=True)
        objective(net, images, labels, np.random.default_rng(seed)).total.backward()
        missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
        assert missing == [], f"{method}: no gradient for {missing[:5]}"


# ------------------------------------------------------------------------------------------------
# a real torchrun of 2 CPU processes


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `torchrun --standalone --nproc_per_node 2 -m saolctl ARGS` on CPU (gloo) and return it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "saolctl", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_torchrun_train_then_eval_equals_a_single_process(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_TOML)
    run = tmp_path / "run"
    proc = _torchrun(["train", "--config", str(cfg), "--method", "saol", "--device", "cpu", "--out", str(run)],
                     tmp_path)
    assert proc.stdout.count("run folder:") == 1  # only rank 0 prints
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "best_top1.pt", "config.json", "last.pt", "metrics.csv"]
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_by_rank"]) == 2
    assert ckpt["rng_by_rank"][0]["numpy"] != ckpt["rng_by_rank"][1]["numpy"]  # CutMix streams differ per rank

    # distributed eval of the test split (37 images: shards of 19 and 18, no padding) vs one process
    ddp_out, single_out = tmp_path / "eval-ddp", tmp_path / "eval-single"
    _torchrun(["eval", "--ckpt", str(run / "last.pt"), "--device", "cpu", "--split", "test", "--batch-size", "8",
               "--out", str(ddp_out)], tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1): the same float kernels
    try:
        run_eval(EvalSettings(ckpt=run / "last.pt", split="test", batch_size=8, device="cpu"), single_out)
        # what the distributed run logged for validation (batches of 16, as its recipe) vs one process
        val, _, _ = run_eval(EvalSettings(ckpt=run / "last.pt", split="val", batch_size=16, device="cpu",
                                          threshold_step=0.01), tmp_path / "eval-val")
    finally:
        torch.set_num_threads(threads)
    ddp = json.loads((ddp_out / "eval.json").read_text())
    single = json.loads((single_out / "eval.json").read_text())
    assert ddp["num_images"] == 37
    assert ddp == single  # every metric exactly, meta included
    for name in ("curves.csv", "per_class.csv"):
        assert (ddp_out / name).read_text() == (single_out / name).read_text()
    logged = pd.read_csv(run / "metrics.csv").iloc[-1]
    for key in ("top1", "top5", "max_box_acc", "max_box_acc_v2", "gt_known_loc", "num_images"):
        assert logged[f"val_{key}"] == val.metrics[key], key
