"""Weight averaging for training: an exponential moving average, or the plain mean, of a network's weights.

Late in a run the weights wander around a plateau; which point a small validation set happens to prefer
then decides the shipped model (stage 6 of the default's lineage: checkpoints 0.03 dB apart on validation
were up to 1.4 dB apart on unseen CT). Averaging the weights over the plateau (Polyak averaging; stochastic
weight averaging, Izmailov et al. 2018) gives one point that does not depend on that choice. The bundle
validates and saves the averaged copy; the optimizer keeps stepping the network itself.
"""

from __future__ import annotations

from typing import Optional

from ignite.engine import Engine, Events
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..core.checkpoint import unwrap
from ..errors import InvalidInputError

AVERAGING_KINDS = ("ema", "mean")


def averaged_copy(network: nn.Module, kind: Optional[str], ema_decay: float = 0.999) -> Optional[AveragedModel]:
    """A copy of `network` that :class:`WeightAveraging` keeps averaging, or None when `kind` is None.

    Args:
        network: the network being trained (a ``DistributedDataParallel`` wrapper is looked through).
        kind: "ema" (each step moves the copy by ``1 - ema_decay`` toward the weights), "mean" (the equal
            mean of the weights after every step so far), or None (no averaging).
        ema_decay: the moving average's decay per training iteration, in (0, 1); its time constant is
            ``1 / (1 - ema_decay)`` iterations.

    Returns:
        The averaging copy (an ``AveragedModel``; the averaged network is its ``.module``), or None.

    Raises:
        InvalidInputError: an unknown `kind`, or a decay outside (0, 1).
    """
    if kind is None:
        return None
    if kind not in AVERAGING_KINDS:
        raise InvalidInputError(
            f"Unknown weight averaging {kind!r} (bundle key 'weight_averaging'). Use one of "
            f"{', '.join(AVERAGING_KINDS)}, or null for none."
        )
    if kind == "ema" and not 0.0 < float(ema_decay) < 1.0:
        raise InvalidInputError(
            f"EMA decay {ema_decay} is outside (0, 1) (bundle key 'ema_decay'). Use e.g. 0.999: a time constant "
            "of 1,000 iterations."
        )
    multi_avg_fn = get_ema_multi_avg_fn(float(ema_decay)) if kind == "ema" else None
    return AveragedModel(unwrap(network), multi_avg_fn=multi_avg_fn)


def validated_network(network: nn.Module, averaged: Optional[AveragedModel]) -> nn.Module:
    """The network that validation scores and the best-model file holds: the average when there is one."""
    return network if averaged is None else averaged.module


class WeightAveraging:
    """Attach to a trainer: after every iteration, fold the network's new weights into `averaged`.

    Up to iteration `start_iteration` the average is restarted at every step, so it is simply the current
    weights (what validation then scores); averaging proper begins after it, leaving the early weights out.
    Under DDP every rank holds the same weights after a step, so every rank's average is the same too.
    """

    def __init__(self, averaged: AveragedModel, network: nn.Module, start_iteration: int = 0) -> None:
        self.averaged = averaged
        self.network = network
        self.start_iteration = int(start_iteration)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration <= self.start_iteration:
            self.averaged.n_averaged.zero_()  # the next update copies the weights instead of averaging them
        self.averaged.update_parameters(unwrap(self.network))


def averaging_metadata(kind: Optional[str], ema_decay: float, start_epoch: int, min_learning_rate: float) -> dict:
    """What a checkpoint of an averaged run records about the averaging (nothing for a run without it)."""
    if kind is None:
        return {}
    return {"weight_averaging": kind, **({"ema_decay": float(ema_decay)} if kind == "ema" else {}),
            "averaging_start_epoch": int(start_epoch), "min_learning_rate": float(min_learning_rate)}
