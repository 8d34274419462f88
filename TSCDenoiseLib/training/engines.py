"""MONAI engine parts for training TSC-Net: batch preparation, the stage trainer, metric transforms.

The bundle in ``training/configs`` wires these with MONAI's own ``SupervisedEvaluator``; both stages
train with :class:`TSCTrainer`: the teacher (NDCT -> NDCT) with the pixel term alone, the student with
the frozen teacher run under no-grad for the knowledge-transfer and contrastive terms.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, PrepareBatch
from monai.handlers import from_engine
from monai.utils import CommonKeys as Keys

from ..core.intensity import HUWindow
from .losses import TSCStudentLoss
from .transforms import NOISE_STRENGTH_KEY
from ..core.metrics import SOFT_TISSUE_WINDOW


class PrepareBatchPair(PrepareBatch):
    """(input, target) from a paired batch: ("ldct", "ndct") for denoisers, ("ndct", "ndct") for the teacher.

    A batch with per-sample noise-map strengths (`transforms.CalibrateNoiseMapd`) gives (input, target, (),
    {"noise_strength": ...}): MONAI's evaluator and `TSCTrainer` pass that to the network's forward.
    """

    def __init__(self, input_key: str = "ldct", target_key: str = "ndct") -> None:
        self.input_key, self.target_key = input_key, target_key

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs: Any):
        pair = tuple(
            batchdata[key].to(device=device, non_blocking=non_blocking, **kwargs)
            for key in (self.input_key, self.target_key)
        )
        if NOISE_STRENGTH_KEY not in batchdata:
            return pair
        strength = torch.as_tensor(batchdata[NOISE_STRENGTH_KEY], dtype=torch.float32)
        return pair + ((), {"noise_strength": strength.to(device=device, non_blocking=non_blocking)})


class TSCTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose loss is a :class:`TSCStudentLoss` (pixel + KT + CRM).

    Each iteration: network forward (with its intermediate features when knowledge transfer is on),
    the loss terms (the teacher runs inside the loss under no-grad), backward, optimizer step.
    ``engine.state.output`` holds the usual image/label/pred/loss plus each term under its name.
    With both lambdas 0 it is plain pixel-L1 training: the teacher stage (with ``PrepareBatchPair("ndct",
    "ndct")``), the paper's ablation, and any baseline network.
    """

    def __init__(self, *args: Any, loss_function: TSCStudentLoss, **kwargs: Any) -> None:
        kwargs.setdefault("prepare_batch", PrepareBatchPair("ldct", "ndct"))
        super().__init__(*args, loss_function=loss_function, **kwargs)

    def _iteration(self, engine: "TSCTrainer", batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        ldct, ndct = batch[:2]
        forward_options = batch[3] if len(batch) == 4 else {}
        engine.state.output = {Keys.IMAGE: ldct, Keys.LABEL: ndct}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(ldct.device.type, enabled=bool(engine.amp), **engine.amp_kwargs):
            if engine.loss_function.needs_features:
                restored, features = engine.network(ldct, return_features=True, **forward_options)
            else:
                restored, features = engine.network(ldct, **forward_options), []
            engine.state.output[Keys.PRED] = restored
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = engine.loss_function(restored, features, ldct, ndct)
        loss = terms.pop("loss")
        engine.state.output[Keys.LOSS] = loss
        engine.state.output.update({name: value.detach() for name, value in terms.items()})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


StudentTrainer = TSCTrainer  # the name before the teacher stage used it too


def windowed_output(
    hu_window: HUWindow | Sequence[float] | None = None, display_window: Sequence[float] = SOFT_TISSUE_WINDOW
) -> Callable:
    """Metric-handler ``output_transform``: (pred, label) clipped to ``display_window`` HU, scaled to [0, 1].

    PSNR/SSIM with ``max_val``/``data_range`` 1 on this output are the figures "at [low, high] HU with
    data range high - low" (e.g. the Mayo protocol's [-160, 240] HU, range 400).
    """
    window = HUWindow.from_any(hu_window)
    low, high = (float(v) for v in display_window)

    def transform(output) -> tuple:
        preds, labels = from_engine([Keys.PRED, Keys.LABEL])(output)
        scale = lambda x: (window.denormalize(x.float()).clamp(low, high) - low) / (high - low)  # noqa: E731
        return [scale(p) for p in preds], [scale(t) for t in labels]

    return transform


def hu_output(hu_window: HUWindow | Sequence[float] | None = None) -> Callable:
    """Metric-handler ``output_transform``: (pred, label) in HU (for RMSE in HU, no clipping)."""
    window = HUWindow.from_any(hu_window)

    def transform(output) -> tuple:
        preds, labels = from_engine([Keys.PRED, Keys.LABEL])(output)
        return [window.denormalize(p.float()) for p in preds], [window.denormalize(t.float()) for t in labels]

    return transform


def loss_terms_output(output) -> dict:
    """``StatsHandler``/TensorBoard ``output_transform``: every scalar loss term of an iteration."""
    items = output[0] if isinstance(output, list) else output
    return {
        name: float(value.detach())
        for name, value in items.items()
        if isinstance(value, torch.Tensor) and value.dim() == 0
    }


def run_stage(trainer: SupervisedTrainer, state_handlers: Sequence = (), enabled: bool = True) -> None:
    """Attach the handlers that need the trainer itself (resume loader, state saver), then train.

    They cannot be in the trainer's own ``train_handlers`` in a bundle config: they would refer to the
    trainer while it is being built.
    """
    if not enabled:
        return
    for handler in state_handlers:
        handler.attach(trainer)
    trainer.run()
