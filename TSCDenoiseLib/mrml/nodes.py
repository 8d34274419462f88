"""MRML glue without Qt: denoise a Slicer scalar volume node into a new (or given) volume node.

Runs wherever Slicer's MRML Python libraries exist: inside 3D Slicer, in ``PythonSlicer``, or headless
with the ``slicer-core`` package. The input node and its voxels are never changed; the result is
computed into a new image first and handed to the output node only when it is complete, so a failed
or cancelled run leaves the scene as it was.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from ..errors import InvalidInputError

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
ModelLike = Union[None, str, "os.PathLike[str]", Any]  # None (bundled default), a checkpoint path, or a module

OUTPUT_NAME_SUFFIX = " denoised"
DIFFERENCE_NAME_SUFFIX = " removed noise"
DIFFERENCE_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
SOURCE_ATTRIBUTE = "TSCDenoise.SourceVolumeID"
MODEL_ATTRIBUTE = "TSCDenoise.Model"


def denoise_volume_node(
    input_node: Any,
    output_node: Any = None,
    model: ModelLike = None,
    device: str = "auto",
    slab_size: Union[str, int] = "auto",
    amp: bool = True,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
    check_hu: bool = True,
    notify: Optional[Callable[[str], None]] = None,
    strength: Union[str, float] = "auto",
) -> Any:
    """Denoise the CT in `input_node` and return the output node; the input node and its voxels stay unchanged.

    Args:
        input_node: a ``vtkMRMLScalarVolumeNode`` holding CT in HU (label maps and vector volumes are refused).
        output_node: None creates "<input name> denoised" in the input's scene, with the input's IJK->RAS
            matrix, parent transform and window/level; an existing scalar volume node is filled instead. The
            input node itself is refused.
        model: None (the bundled default weights), a checkpoint path, or a loaded network.
        device, slab_size, amp, progress, cancel, check_hu: as for ``TSCDenoiseLib.denoise_volume``.
        notify: told the strength chosen for "auto", and (one message) when CUDA runs out of memory and the
            run falls back to the CPU.
        strength: how much to denoise: "auto" (from the scan's noise texture) or 0.25 to 2.0
            (``denoise_volume``'s `strength`; 1.0 the model's own level).

    Returns:
        The output volume node, added to the scene only once its voxels are complete.

    Raises:
        InvalidInputError: the input or output node cannot be used (the message says what to select), or the
            strength cannot be used (neither "auto" nor in range, or a number other than 1.0 for a model without
            a noise-map input).
        DenoiseCancelled: `cancel()` returned True; no node is added.
    """
    from ..core.inference import denoise_with_cpu_fallback
    from ..noise.strength import resolve_strength

    voxels = volume_voxels(input_node)
    check_output_node(input_node, output_node)
    network = _load(model, device)
    strength = resolve_strength(strength, voxels, network, check_hu=check_hu, notify=notify)
    image, result = new_image_like(input_node)
    denoise_with_cpu_fallback(voxels, network, slab_size=slab_size, device=device, amp=amp, progress=progress,
                              cancel=cancel, check_hu=check_hu, out=result, notify=notify, strength=strength)
    return publish_output(input_node, image, output_node, model_description=describe_model(model))


def volume_voxels(node: Any) -> np.ndarray:
    """A read-only (Z, Y, X) view of a scalar volume node's voxels; clear errors for other nodes."""
    if node is None:
        raise InvalidInputError("No input volume was given. Select a CT volume (a scalar volume node).")
    if not hasattr(node, "IsA") or not node.IsA("vtkMRMLVolumeNode"):
        raise InvalidInputError(
            f"The input is a {type(node).__name__}, not a volume node. Select a CT volume (vtkMRMLScalarVolumeNode)."
        )
    name = node.GetName()
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InvalidInputError(
            f"'{name}' is a label map (a segmentation), not a CT image. Select the CT volume it was made from."
        )
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLTensorVolumeNode"):
        raise InvalidInputError(
            f"'{name}' is a {node.GetClassName()}: a CT needs one value per voxel. Select a scalar CT volume, "
            "or extract one component first (Vector to Scalar Volume module)."
        )
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InvalidInputError(f"'{name}' holds no voxels yet. Load the CT into it first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InvalidInputError(
            f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel (color or vector data); "
            "a CT has one. Convert it to a scalar volume first."
        )
    voxels = _voxel_view(image)
    voxels.flags.writeable = False
    return voxels


def check_output_node(input_node: Any, output_node: Any) -> None:
    """Refuse an output that is the input, or that cannot hold a CT image."""
    if output_node is None:
        return
    if output_node is input_node or (
        output_node.GetScene() is not None and output_node.GetID() is not None and output_node.GetID() == input_node.GetID()
    ):
        raise InvalidInputError(
            f"The output volume is the input '{input_node.GetName()}'; the input is never overwritten. "
            "Choose 'Create new volume' as the output."
        )
    if not output_node.IsA("vtkMRMLScalarVolumeNode") or output_node.IsA("vtkMRMLLabelMapVolumeNode") \
            or output_node.IsA("vtkMRMLTensorVolumeNode"):
        raise InvalidInputError(
            f"The output '{output_node.GetName()}' is a {output_node.GetClassName()}; a denoised CT needs a scalar "
            "volume. Choose 'Create new volume' as the output."
        )


def new_image_like(node: Any) -> Tuple[vtk.vtkImageData, np.ndarray]:
    """A new, unshared vtkImageData with the node's dimensions and voxel type, and a writable view of it."""
    source = node.GetImageData()
    image = vtk.vtkImageData()
    image.SetDimensions(source.GetDimensions())
    image.AllocateScalars(source.GetScalarType(), 1)
    return image, _voxel_view(image)


def publish_output(input_node: Any, image: vtk.vtkImageData, output_node: Any = None, model_description: str = "") -> Any:
    """Give `image` to `output_node` (created when None) with the input's geometry, transform and display."""
    scene = input_node.GetScene()
    if output_node is None:
        if scene is None:
            raise InvalidInputError(f"'{input_node.GetName()}' is not in a scene; add it to one or pass an output node.")
        name = scene.GenerateUniqueName(input_node.GetName() + OUTPUT_NAME_SUFFIX)
        output_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    output_node.SetAndObserveImageData(image)
    copy_geometry(input_node, output_node)
    if input_node.GetVoxelValueQuantity() is not None:
        output_node.SetVoxelValueQuantity(input_node.GetVoxelValueQuantity())
    if input_node.GetVoxelValueUnits() is not None:
        output_node.SetVoxelValueUnits(input_node.GetVoxelValueUnits())
    output_node.SetAttribute(SOURCE_ATTRIBUTE, input_node.GetID() or "")
    output_node.SetAttribute(MODEL_ATTRIBUTE, model_description)
    _copy_display(input_node, output_node)
    return output_node


def copy_geometry(input_node: Any, output_node: Any) -> None:
    """Give `output_node` the input's IJK->RAS matrix (any direction) and parent transform."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    input_node.GetIJKToRASMatrix(ijk_to_ras)
    output_node.SetIJKToRASMatrix(ijk_to_ras)
    output_node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())


def create_difference_volume(input_node: Any, output_node: Any, color_node_id: str = DIFFERENCE_COLOR_NODE_ID) -> Any:
    """A new float32 volume "<input> removed noise" = input - output, with the input's geometry.

    The display uses a diverging colormap (`color_node_id`, Slicer's blue-red table) centred on 0, its
    window spanning the 99th percentile of |difference|, so that structure removed along with the noise
    stands out.

    Args:
        input_node: the denoised volume's source (``vtkMRMLScalarVolumeNode``).
        output_node: the denoised volume (same dimensions).

    Returns:
        The new ``vtkMRMLScalarVolumeNode``, in the input's scene.

    Raises:
        InvalidInputError: when the two volumes differ in size or the input is not in a scene.
    """
    before, after = volume_voxels(input_node), volume_voxels(output_node)
    if before.shape != after.shape:
        raise InvalidInputError(
            f"'{input_node.GetName()}' {before.shape} and '{output_node.GetName()}' {after.shape} differ in size; "
            "the difference needs the denoised volume made from this input."
        )
    scene = input_node.GetScene()
    if scene is None:
        raise InvalidInputError(f"'{input_node.GetName()}' is not in a scene; add it to one first.")
    image = vtk.vtkImageData()
    image.SetDimensions(input_node.GetImageData().GetDimensions())
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    difference = _voxel_view(image)
    np.subtract(before, after, out=difference, dtype=np.float32)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                   scene.GenerateUniqueName(input_node.GetName() + DIFFERENCE_NAME_SUFFIX))
    node.SetAndObserveImageData(image)
    copy_geometry(input_node, node)
    node.SetAttribute(SOURCE_ATTRIBUTE, input_node.GetID() or "")
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAndObserveColorNodeID(color_node_id)
        spread = float(np.percentile(np.abs(difference), 99)) if difference.size else 0.0
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(2 * (spread or 1.0), 0.0)
    return node


def _copy_display(input_node: Any, output_node: Any) -> None:
    if output_node.GetScene() is None:
        return
    if output_node.GetDisplayNode() is None:
        output_node.CreateDefaultDisplayNodes()
    source, target = input_node.GetDisplayNode(), output_node.GetDisplayNode()
    if source is None or target is None:
        return
    target.SetAndObserveColorNodeID(source.GetColorNodeID())
    target.SetAutoWindowLevel(source.GetAutoWindowLevel())
    if not source.GetAutoWindowLevel():
        target.SetWindowLevel(source.GetWindow(), source.GetLevel())


def _voxel_view(image: vtk.vtkImageData) -> np.ndarray:
    """(Z, Y, X) numpy view sharing the image's memory (VTK stores x fastest)."""
    dims = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])


def _load(model: ModelLike, device: str) -> Any:
    if model is None or isinstance(model, (str, os.PathLike)):
        from ..core.checkpoint import load_model

        return load_model(model, device=device)
    return model


def describe_model(model: ModelLike) -> str:
    """How the output node records its model: the default's file name, a checkpoint path, or the network class."""
    if model is None:
        from ..core.resources import default_model_path

        return f"default ({default_model_path().name})"
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return type(model).__name__
