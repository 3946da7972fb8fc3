"""Shared fixtures: an isolated AUTOMC_HOME, small pre-trained models and compression contexts."""

from __future__ import annotations

import copy
from functools import lru_cache

import pytest
import torch

from automc_env.metrics import count_params
from automc_env.tasks import get_task
from automc_env.training import train
from compressors.base import CompressionContext, frozen_copy


# The test models are tiny: one thread per test process is faster than two fighting over two cores
# (the suite runs as two pytest-xdist workers).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Never touch the user's cache from tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOMC_HOME", str(tmp_path_factory.mktemp("automc_home")))
    yield
    mp.undo()


@lru_cache(maxsize=None)
def _pretrained(task_name: str):
    task = get_task(task_name)
    data = task.load_data("cpu", seed=0)
    torch.manual_seed(0)
    model = task.build_model()
    train(model, data.train, epochs=task.pretrain_epochs, lr=task.lr, batch_size=task.batch_size,
          generator=torch.Generator().manual_seed(0), augment=task.augment)
    return task, data, model


def pretrained(task_name: str = "synthetic"):
    """(task, data, a fresh copy of the task's model pre-trained for E_pre epochs); cached per session."""
    task, data, model = _pretrained(task_name)
    return task, data, copy.deepcopy(model)


def make_context(task, data, model, removal: float, *, original_params: int | None = None, seed: int = 0,
                 options: dict | None = None) -> CompressionContext:
    """The context a compression step of ``removal`` (fraction of the original params) receives."""
    return CompressionContext(task=task, train=data.train, val=data.val,
                              original_params=original_params or count_params(model), gamma=task.gamma,
                              removal=removal, device=torch.device("cpu"),
                              generator=torch.Generator().manual_seed(seed), teacher=frozen_copy(model),
                              original_arch=task.arch(), options=options or {})
