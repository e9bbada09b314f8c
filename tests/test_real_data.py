"""Smoke tests on the real datasets; they run where CNNBENCH_DATA_DIR points at them (CI sets it)."""

import json

import torch
from click.testing import CliRunner

from cnnbench import data
from cnnbench.cli import main


def test_real_mnist_and_cifar10_load_with_their_official_counts(real_data_dir):
    mnist = data.load("mnist", real_data_dir, val_fraction=0.0)
    assert mnist.train.x.shape == (60000, 1, 28, 28) and len(mnist.test) == 10000
    assert mnist.train.y.bincount().tolist()[:3] == [5923, 6742, 5958]
    cifar = data.load("cifar10", real_data_dir, val_fraction=0.0)
    assert cifar.train.x.shape == (50000, 3, 32, 32)
    assert cifar.test.y.bincount().tolist() == [1000] * 10
    assert cifar.train.x.dtype == torch.uint8


def test_one_epoch_on_real_mnist_learns(real_data_dir):
    res = CliRunner().invoke(main, ["train", "--preset", "mnist_fast", "--epochs", "1", "--data-dir",
                                    str(real_data_dir), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["test_acc"] > 0.95
