"""BestModelSaver: the deployable best checkpoint, its recorded epoch and iterations, and resuming."""

import torch
from ignite.engine import Engine

from TSCDenoiseLib.core.checkpoint import read_checkpoint
from TSCDenoiseLib.networks import TSCNet
from TSCDenoiseLib.training.handlers import BestModelSaver


def validated(epoch: int, psnr: float) -> Engine:
    """An evaluator that has just validated `epoch` with key metric val_psnr = `psnr`."""
    engine = Engine(lambda engine, batch: None)
    engine.state.epoch = epoch
    engine.state.iteration = 3  # the evaluator's own batches: never the trainer's iterations
    engine.state.key_metric_name = "val_psnr"
    engine.state.metrics = {"val_psnr": psnr}
    return engine


def saver(path, tiny_config, **kwargs) -> BestModelSaver:
    torch.manual_seed(0)
    return BestModelSaver(TSCNet(**tiny_config), path, role="student", iterations_per_epoch=100, **kwargs)


def recorded(path) -> tuple:
    metadata = read_checkpoint(path)["metadata"]
    return metadata["epoch"], metadata["iterations"], metadata["best_metric_value"]


def test_only_an_improvement_is_written_and_it_records_the_trainers_iterations(tmp_path, tiny_config):
    path = tmp_path / "model.pt"
    best = saver(path, tiny_config)
    for epoch, psnr in ((1, 30.0), (2, 31.5), (3, 31.0)):
        best(validated(epoch, psnr))
    assert recorded(path) == (2, 200, 31.5)


def test_a_resumed_run_keeps_the_earlier_best_until_it_is_beaten(tmp_path, tiny_config):
    path = tmp_path / "model.pt"
    first = saver(path, tiny_config)
    for epoch, psnr in ((1, 30.0), (2, 32.0), (3, 31.0)):
        first(validated(epoch, psnr))
    resumed = saver(path, tiny_config, resumed=True)  # interrupted after epoch 3, resumed at epoch 4
    resumed(validated(4, 31.8))
    assert recorded(path) == (2, 200, 32.0)
    resumed(validated(5, 32.5))
    assert recorded(path) == (5, 500, 32.5)
    # A fresh run into the same folder starts afresh: its first epoch replaces the file.
    saver(path, tiny_config)(validated(1, 20.0))
    assert recorded(path) == (1, 100, 20.0)


def test_a_best_from_an_abandoned_later_try_does_not_block_a_resumed_run(tmp_path, tiny_config):
    path = tmp_path / "model.pt"
    saver(path, tiny_config)(validated(7, 35.0))  # written by a try that ran past the state resumed from
    resumed = saver(path, tiny_config, resumed=True)
    resumed(validated(4, 31.0))
    assert recorded(path) == (4, 400, 31.0)


def test_a_resumed_run_replaces_an_unreadable_best_file(tmp_path, tiny_config):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    saver(path, tiny_config, resumed=True)(validated(4, 31.0))
    assert recorded(path) == (4, 400, 31.0)
