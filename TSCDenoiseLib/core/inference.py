"""Volume inference: denoise a CT volume in HU slab by slab (axial slices per forward pass)."""

from __future__ import annotations

import copy
import logging
import weakref
from functools import partial
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from .device import autocast_dtype, resolve_device
from ..errors import DenoiseCancelled, DenoiseOutOfMemory, InvalidVolumeError
from .intensity import HUWindow
from .slab_runners import CpuSlabRunner, CudaSlabRunner, torch_dtype_of
from .volume_checks import AUTO_STRENGTH, validate_ct_volume, validate_model, validate_strength
from ..networks.tscnet import noise_map_strength
from ..noise.strength import choose_strength

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

CPU_SLAB_BUDGET_BYTES = 256 << 20  # on the CPU one 512x512 slice per pass was fastest (bench_inference.py)
GPU_FREE_MEMORY_FRACTION = 0.5
MAX_AUTO_SLAB = 64
CHANNELS_LAST_DEVICES = ("cpu", "cuda")
# Peak activation bytes per pixel and per base channel of one slice in an inference forward pass,
# measured with Testing/benchmarks/bench_inference.py (fp32, pure-PyTorch DCN: 25-31 B), rounded up.
ACTIVATION_BYTES_PER_PIXEL_CHANNEL = 32.0


def denoise_volume(
    volume_hu: np.ndarray,
    model: nn.Module,
    slab_size: Union[str, int] = "auto",
    device: Union[str, torch.device] = "auto",
    amp: bool = True,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
    check_hu: bool = True,
    out: Optional[np.ndarray] = None,
    strength: Union[str, float] = "auto",
) -> np.ndarray:
    """Denoise a CT volume (Z, Y, X) or slice (Y, X) in HU; the input is never modified.

    Args:
        volume_hu: the CT in HU, any real dtype; integer inputs come back rounded (and clipped to the dtype's
            range).
        model: a loaded network (`load_model`).
        slab_size: axial slices per forward pass, or "auto" (from free memory).
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        amp: True (default) takes the fastest path that keeps the result: channels-last, with bf16 (else fp16)
            autocast on CUDA and bf16 autocast on CPUs with AMX (`core.device.autocast_dtype`; on real CT bf16
            changes a slice's PSNR by < 0.05 dB and its values by < 0.5 HU on average, bench_inference.py
            --candidates). False forces the exact fp32 path (the model as given, NCHW, no autocast).
        progress: `progress(done, total)` after every slab.
        cancel: polled before each slab; True stops the run.
        check_hu: False skips the plausibility checks of the values (not the NaN/shape/type checks).
        out: a writable C-contiguous array of the input's shape and dtype, not sharing memory with it, that
            receives the result instead of a new array (e.g. a view of a Slicer volume's voxels).
        strength: how much to denoise. "auto" (default) chooses it from the scan's noise texture
            (`noise.choose_strength`: sharper noise than in training gets a lower strength; 1.0 for a model
            without a noise-map input). A number from 0.25 to 2.0 multiplies the noise index a noise-map model
            sees (below 1 keeps more texture and noise, above 1 smooths more); 1.0 gives exactly the model's
            own result, and other numbers need a noise-map model. The model is not changed.

    Returns:
        The denoised array, of the input's shape and dtype (`out` when given). Values outside the model's HU
        window pass through the network unchanged (see `_denoise_slab`).

    Raises:
        InvalidVolumeError: the array is not a CT in HU (shape, dtype, NaN, implausible values).
        InvalidInputError: `model` is not a network; `strength` is neither "auto" nor a number in range,
            or a number other than 1.0 for a model without a noise-map input.
        DeviceError: the device does not exist here.
        DenoiseCancelled: `cancel()` returned True.
        DenoiseOutOfMemory: CUDA ran out of memory even with one slice per pass.
    """
    validate_model(model)
    strength = validate_strength(strength, model)
    volume = validate_ct_volume(volume_hu, check_hu=check_hu)
    slices = volume[np.newaxis] if volume.ndim == 2 else volume
    if strength == AUTO_STRENGTH:
        strength = choose_strength(slices, model).strength
    device = resolve_device(device)
    reduced = autocast_dtype(device, amp)
    channels_last = _use_channels_last(device, amp)
    runner = _model_on(model, device, channels_last)
    window = HUWindow.from_any(getattr(model, "hu_window", None))
    slab = resolve_slab_size(slab_size, slices.shape, device, runner, amp)
    result = _output_array(out, volume)
    output = result[np.newaxis] if volume.ndim == 2 else result
    total = slices.shape[0]
    compute = partial(_denoise_slab, model=runner, window=window, autocast_dtype=reduced,
                      out_dtype=torch_dtype_of(output.dtype), channels_last=channels_last)
    on_done = (lambda done: progress(done, total)) if progress is not None else (lambda done: None)
    if device.type == "cuda":
        slabs = CudaSlabRunner(slices, output, compute, on_done, device, max_slab=slab)
    else:
        slabs = CpuSlabRunner(slices, output, compute, on_done)

    with noise_map_strength(runner, strength):  # on the copy that runs (or the model itself), restored after
        _run_slabs(slabs, slices, slab=slab, device=device, cancel=cancel)
    return result


def _run_slabs(slabs: Union[CpuSlabRunner, CudaSlabRunner], slices: np.ndarray, slab: int, device: torch.device,
               cancel: Optional[CancelFn]) -> None:
    """Submit every slab (halving the slab on CUDA out-of-memory) and wait for the last."""
    total = slices.shape[0]
    start = 0
    while start < total:
        if cancel is not None and cancel():
            raise DenoiseCancelled(f"Denoising cancelled after {start} of {total} slices; nothing was returned.")
        stop = min(start + slab, total)
        try:
            slabs.submit(start, stop)
        except torch.cuda.OutOfMemoryError:
            slabs.collect()
            if slab == 1:
                raise DenoiseOutOfMemory(
                    f"One {slices.shape[1]}x{slices.shape[2]} slice does not fit in the free memory of {device}. "
                    "Close other GPU programs, or run on the CPU (device='cpu')."
                ) from None
            torch.cuda.empty_cache()
            slab = max(slab // 2, 1)
            logger.warning("CUDA out of memory: retrying with %d slices per slab.", slab)
            continue
        start = stop
    slabs.collect()


def _output_array(out: Optional[np.ndarray], volume: np.ndarray) -> np.ndarray:
    """`out` checked for use as the result, or a new array like `volume`."""
    if out is None:
        return np.empty_like(volume)
    if not isinstance(out, np.ndarray) or out.shape != volume.shape or out.dtype != volume.dtype:
        got = f"{out.shape} {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise InvalidVolumeError(
            f"out must be an array of the input's shape and dtype ({volume.shape} {volume.dtype}), got {got}."
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidVolumeError("out must be a writable, C-contiguous array (e.g. np.empty_like(volume)).")
    if np.shares_memory(out, volume):
        raise InvalidVolumeError("out shares memory with the input; the input is never overwritten. Pass a new array.")
    return out


def resolve_slab_size(
    slab_size: Union[str, int], shape: tuple, device: torch.device, model: nn.Module, amp: bool
) -> int:
    """Slices per forward pass: `slab_size` itself, or for "auto" what fits the device's memory budget."""
    if isinstance(slab_size, str):
        if slab_size != "auto":
            raise InvalidVolumeError(f"slab_size must be 'auto' or a positive integer, got {slab_size!r}.")
        # half only on CUDA: the CPU budget is the working set that ran fastest, and the pure-PyTorch
        # deformable convolution samples in fp32 even under bf16 autocast.
        per_slice = estimate_slice_bytes(model, shape[-2], shape[-1], half=amp and device.type == "cuda")
        budget = _memory_budget(device)
        return int(max(1, min(budget // per_slice, MAX_AUTO_SLAB, shape[0])))
    if isinstance(slab_size, bool) or not isinstance(slab_size, (int, np.integer)) or slab_size < 1:
        raise InvalidVolumeError(f"slab_size must be 'auto' or a positive integer, got {slab_size!r}.")
    return int(slab_size)


def estimate_slice_bytes(model: nn.Module, height: int, width: int, half: bool = False) -> int:
    """Estimated peak activation memory of one slice in an inference forward pass."""
    channels = getattr(model, "config", {}).get("base_channels", 32)
    padded = (height + 3) // 4 * 4 * ((width + 3) // 4 * 4)
    per_pixel = ACTIVATION_BYTES_PER_PIXEL_CHANNEL * channels * (0.5 if half else 1.0)
    return int(padded * per_pixel)


def _memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_FREE_MEMORY_FRACTION)
    return CPU_SLAB_BUDGET_BYTES


def _use_channels_last(device: torch.device, amp: bool) -> bool:
    """Channels-last when `amp` asks for the fastest path: oneDNN/cuDNN convolutions then skip their NCHW
    reorders. On the CPU, fp32 channels-last gives the same values (summation order aside), ran
    0.97-1.48x as fast as NCHW over four runs on a loaded 2-core machine, and needs about half the
    working set (104 vs 192 MiB for a 512^2 slice; bench_inference.py)."""
    return amp and device.type in CHANNELS_LAST_DEVICES


def _model_on(model: nn.Module, device: torch.device, channels_last: bool = False) -> nn.Module:
    """The model in eval mode on `device` (in channels-last layout if asked); the caller's model is
    copied rather than moved, switched or re-laid out. A channels-last copy is kept for the next call
    while the model's tensors are unchanged (a copy per call cost up to 1 s on a loaded 2-core machine)."""
    params = list(model.parameters())
    on_device = all(p.device == device or (p.device.type == device.type and device.index is None) for p in params)
    if on_device and not model.training and not channels_last:
        return model
    if not channels_last:
        return copy.deepcopy(model).to(device).eval()
    stamp = (str(device), tuple((id(t), t._version) for t in list(params) + list(model.buffers())))
    cached = _CHANNELS_LAST_COPIES.get(model)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    runner = copy.deepcopy(model).to(device).eval().to(memory_format=torch.channels_last)
    for tensor in runner.parameters():
        tensor.requires_grad_(False)  # inference only: nothing may train the cached copy by accident
    _CHANNELS_LAST_COPIES[model] = (stamp, runner)
    return runner


# caller's model -> (device and tensor versions it was copied at, its channels-last eval copy)
_CHANNELS_LAST_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _denoise_slab(
    raw: torch.Tensor,
    model: nn.Module,
    window: HUWindow,
    autocast_dtype: Optional[torch.dtype],
    out_dtype: torch.dtype,
    channels_last: bool = False,
) -> torch.Tensor:
    """Denoise (n, Y, X) slices in HU (any numeric dtype, on the model's device), returned in `out_dtype`.

    The network sees the window-clipped image; what the clip removed (metal above the window, padding
    below it) is added back afterwards, so values outside the window keep their HU.
    """
    with torch.inference_mode():
        hu = raw.float()
        clipped = hu.clamp(window.low, window.high)
        x = window.normalize(clipped, clip=False).unsqueeze(1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(hu.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            y = model(x)
        denoised = window.denormalize(y.float().squeeze(1)) + (hu - clipped)
        if not out_dtype.is_floating_point:
            info = torch.iinfo(out_dtype)
            denoised = denoised.round_().clamp_(info.min, info.max)
        return denoised.to(out_dtype)


def denoise_with_cpu_fallback(
    volume_hu: np.ndarray,
    model: nn.Module,
    device: Union[str, torch.device] = "auto",
    notify: Optional[Callable[[str], None]] = None,
    **options,
) -> np.ndarray:
    """`denoise_volume`, retried on the CPU when even one slice does not fit in the GPU's memory.

    `notify(message)` hears about the fallback (and about slab halving, which `denoise_volume` does
    itself); `options` are `denoise_volume`'s other keyword arguments (e.g. `strength`), given to both tries.
    """
    target = resolve_device(device)
    handler = _NotifyHandler(notify) if notify is not None else None
    if handler is not None:
        logger.addHandler(handler)
    try:
        return denoise_volume(volume_hu, model, device=target, **options)
    except DenoiseOutOfMemory as exc:
        if target.type == "cpu":
            raise
        if notify is not None:
            notify(f"{exc} Continuing on the CPU, which is slower.")
        return denoise_volume(volume_hu, model, device="cpu", **options)
    finally:
        if handler is not None:
            logger.removeHandler(handler)


class _NotifyHandler(logging.Handler):
    """Forwards this module's warnings (e.g. slab halving on out-of-memory) to a notify callback."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.notify = notify

    def emit(self, record: logging.LogRecord) -> None:
        self.notify(record.getMessage())
