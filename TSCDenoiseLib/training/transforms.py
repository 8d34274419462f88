"""MONAI dictionary transforms for paired CT (keys ``ldct`` / ``ndct``).

Arrays are channel-first MONAI images: (1, X, Y, Z) after ``LoadImaged`` of a volume,
(1, X, Y) for an axial slice. Random transforms applied with one key list use the
same random draw for every key, which keeps the pair aligned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandFlipd,
    RandomizableTransform,
    RandRotate90d,
    RandSpatialCropd,
    RandSpatialCropSamplesd,
    ScaleIntensityRanged,
    SqueezeDimd,
)

from ..errors import InvalidInputError, InvalidVolumeError
from ..core.intensity import HUWindow
from ..core.volume_checks import validate_ct_volume
from ..io.file_checks import check_image_file

PAIR_KEYS = ("ldct", "ndct")
NOISE_STRENGTH_KEY = "noise_strength"  # a pair's calibrated noise-map strength (`CalibrateNoiseMapd`)
# NIfTI through nibabel. For NRRD/MHA datalists pass reader="ITKReader" (needs `pip install itk`), or
# convert with TSCDenoiseLib.io.write_ct. Naming the reader also keeps MONAI from probing every reader.
DEFAULT_READER = "NibabelReader"


def _source_name(image) -> str:
    meta = getattr(image, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "<array>"))


class CheckImageFilesd(MapTransform):
    """Refuse truncated NIfTI/MetaImage files and NIfTI holding NaN/Inf before a reader sees them.

    nibabel stops a cut .nii.gz with a bare EOFError that MONAI wraps in a long traceback; this names
    the file, the key and the fix instead.
    """

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)):
                try:
                    check_image_file(d[key])
                except InvalidInputError as error:
                    raise InvalidInputError(f"{key} image: {error}") from error
        return d


class EnsureCTd(MapTransform):
    """Refuse images that are not CT in HU, and pairs whose shapes differ, naming the file."""

    def __init__(self, keys: KeysCollection = PAIR_KEYS, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        shapes = {}
        for key in self.key_iterator(d):
            image = d[key]
            array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            try:
                validate_ct_volume(array[0] if array.ndim == 4 else array)
            except InvalidVolumeError as error:
                raise InvalidVolumeError(f"{key} image {_source_name(image)}: {error}") from error
            shapes[key] = tuple(array.shape)
        if len(set(shapes.values())) > 1:
            names = ", ".join(f"{key} {_source_name(d[key])} {shape}" for key, shape in shapes.items())
            raise InvalidInputError(f"Unpaired images with different shapes: {names}. A pair must share one grid.")
        return d


class NormalizeHUd(MapTransform):
    """HU -> [0, 1] with a checkpoint's :class:`HUWindow` (clipped); ``inverse`` maps back to HU."""

    def __init__(self, keys: KeysCollection = PAIR_KEYS, window=None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = HUWindow.from_any(window)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window.normalize(d[key] * 1.0)  # *1.0: a float copy, the input stays untouched
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window.denormalize(d[key])
        return d


class SimulateLowDosed(RandomizableTransform, MapTransform):
    """Make ``ldct`` from ``ndct`` on the fly: projection-domain simulation, random dose per call.

    Works on one axial slice (1, X, Y) or a volume (1, X, Y, Z), in HU (place it before
    :class:`NormalizeHUd`). Simulate whole axial slices, then crop: the noise depends on the
    path lengths through the whole body, which a patch alone does not have.
    """

    def __init__(
        self,
        source_key: str = "ndct",
        output_key: str = "ldct",
        dose_range: Sequence[float] = (0.25, 0.25),
        pixel_spacing: float | None = None,
        prob: float = 1.0,
        **simulation_parameters,
    ) -> None:
        MapTransform.__init__(self, [source_key])
        RandomizableTransform.__init__(self, prob)
        low, high = (float(v) for v in dose_range)
        if not 0.0 < low <= high <= 1.0:
            raise InvalidInputError(f"dose_range must satisfy 0 < low <= high <= 1, got {dose_range}.")
        self.source_key, self.output_key = source_key, output_key
        self.dose_range = (low, high)
        self.pixel_spacing = pixel_spacing
        self.simulation_parameters = simulation_parameters
        self._dose = low
        self._seed = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._dose = float(self.R.uniform(*self.dose_range))
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _spacing(self, image) -> float:
        if self.pixel_spacing is not None:
            return float(self.pixel_spacing)
        pixdim = getattr(image, "pixdim", None)
        if pixdim is None:
            raise InvalidInputError(
                "SimulateLowDosed needs the pixel spacing: load with LoadImaged (which keeps it) or pass pixel_spacing=."
            )
        spacing = np.asarray(pixdim, dtype=float)
        return float(spacing[0])

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from .simulation import simulate_low_dose

        d = dict(data)
        self.randomize()
        source = d[self.source_key]
        if not self._do_transform:
            d[self.output_key] = source.clone() if isinstance(source, torch.Tensor) else np.copy(source)
            return d
        spacing = self._spacing(source)
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
        image = array[0].astype(np.float32)
        # MONAI's (X, Y[, Z]) -> the engine's (Y, X) / (Z, Y, X), and back.
        engine_order = image.T
        low_dose = simulate_low_dose(engine_order, self._dose, seed=self._seed, pixel_spacing=spacing,
                                     **self.simulation_parameters).T[None]
        if isinstance(source, torch.Tensor):
            output = source.clone()
            output[...] = torch.from_numpy(np.ascontiguousarray(low_dose)).to(source.dtype)
            d[self.output_key] = output
        else:
            d[self.output_key] = low_dose.astype(array.dtype)
        return d


class CalibrateNoiseMapd(MapTransform):
    """Adds NOISE_STRENGTH_KEY: the strength "auto" would choose for the pair's LDCT volume, with the k of
    the training pairs (`noise.strength.strength_for_texture`). A noise-map student given it per sample
    (`TSCNet.forward(..., noise_strength=...)`) trains on the noise map it will see at inference, where
    "auto" scales the index the same way, instead of on the raw index, which reads sharp noise as more
    noise. Pairs without an LDCT file (low dose simulated later) get no entry (strength 1)."""

    def __init__(self, index_per_std: float, key: str = "ldct") -> None:
        super().__init__([key], allow_missing_keys=True)
        self.index_per_std = float(index_per_std)
        self.key = key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        from ..noise.strength import strength_for_texture

        d = dict(data)
        if self.key in d:
            volume = np.asarray(d[self.key])[0]  # (X, Y, Z) or (X, Y): the texture is the same transposed
            volume = np.moveaxis(volume, -1, 0) if volume.ndim == 3 else volume
            d[NOISE_STRENGTH_KEY] = strength_for_texture(volume, self.index_per_std).strength
        return d


class RandIdentityPaird(RandomizableTransform, MapTransform):
    """With probability `prob`, replace ``ldct`` by a copy of ``ndct``: a pair with nothing to remove.

    A denoiser that only ever sees noisier inputs learns to change every image; identity pairs teach a
    noise-conditioned network to leave a slice as quiet as a normal-dose one alone.
    """

    def __init__(self, prob: float = 0.1, source_key: str = "ndct", output_key: str = "ldct") -> None:
        if not 0.0 <= prob <= 1.0:
            raise InvalidInputError(f"identity pair probability must be in [0, 1], got {prob}.")
        MapTransform.__init__(self, [source_key])
        RandomizableTransform.__init__(self, prob)
        self.source_key, self.output_key = source_key, output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            source = d[self.source_key]
            d[self.output_key] = source.clone() if isinstance(source, torch.Tensor) else np.copy(source)
        return d


def scale_hu(keys: Sequence[str], window=None) -> ScaleIntensityRanged:
    """HU -> [0, 1] on a checkpoint's window, clipped: MONAI's ``ScaleIntensityRanged`` (as the bundle config)."""
    low, high = HUWindow.from_any(window).as_tuple()
    return ScaleIntensityRanged(keys=list(keys), a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)


def training_transforms(
    window=None,
    patch_size: int = 64,
    samples_per_volume: int = 8,
    simulate: bool = False,
    dose_range: Sequence[float] = (0.25, 0.25),
    reader: str = DEFAULT_READER,
    identity_pair_prob: float = 0.0,
) -> Compose:
    """Load a pair of volumes, check them, draw ``samples_per_volume`` paired 2D axial patches.

    With ``simulate=True`` only ``ndct`` is loaded and ``ldct`` is simulated per slice; with
    ``identity_pair_prob`` that fraction of patches gets ``ldct = ndct`` (:class:`RandIdentityPaird`). The bundle's
    ``train#preprocessing`` is the same list written in the config (a test keeps the two equal).
    """
    keys = ["ndct"] if simulate else list(PAIR_KEYS)
    steps = [
        CheckImageFilesd(keys=keys),
        LoadImaged(keys=keys, reader=reader, image_only=True, ensure_channel_first=True),
        EnsureCTd(keys=keys),
        RandSpatialCropSamplesd(keys=keys, roi_size=(-1, -1, 1), num_samples=samples_per_volume, random_size=False),
        SqueezeDimd(keys=keys, dim=-1),
    ]
    if simulate:
        steps.append(SimulateLowDosed(dose_range=dose_range))
    if identity_pair_prob:
        steps.append(RandIdentityPaird(identity_pair_prob))
    steps += [
        RandSpatialCropd(keys=list(PAIR_KEYS), roi_size=(patch_size, patch_size), random_size=False),
        RandFlipd(keys=list(PAIR_KEYS), prob=0.5, spatial_axis=0),
        RandFlipd(keys=list(PAIR_KEYS), prob=0.5, spatial_axis=1),
        RandRotate90d(keys=list(PAIR_KEYS), prob=0.5, max_k=3),
        scale_hu(PAIR_KEYS, window),
        EnsureTyped(keys=list(PAIR_KEYS), dtype=torch.float32, track_meta=False),
    ]
    return Compose(steps)


def volume_transforms(window=None, keys: Sequence[str] = PAIR_KEYS, reader: str = DEFAULT_READER) -> Compose:
    """Load and check a pair of volumes, normalized (for validation and evaluation)."""
    return Compose([
        CheckImageFilesd(keys=list(keys)),
        LoadImaged(keys=list(keys), reader=reader, image_only=True, ensure_channel_first=True),
        EnsureCTd(keys=list(keys)),
        scale_hu(keys, window),
        EnsureTyped(keys=list(keys), dtype=torch.float32),
    ])
