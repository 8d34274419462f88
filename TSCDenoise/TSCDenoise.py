"""TSCDenoise: low-dose CT denoising with TSC-Net, as a 3D Slicer scripted module.

The module holds only GUI and MRML glue; the engine is TSCDenoiseLib (installed beside this file by
the extension, or one folder up in a source checkout).
"""

import logging
import pathlib
import shutil
import sys
import time
from importlib.util import find_spec
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

_MODULE_DIR = pathlib.Path(__file__).resolve().parent
if not (_MODULE_DIR / "TSCDenoiseLib").is_dir() and (_MODULE_DIR.parent / "TSCDenoiseLib").is_dir():
    sys.path.insert(0, str(_MODULE_DIR.parent))  # source checkout: the engine lives at the repository root

import TSCDenoiseLib  # noqa: E402  (cheap: submodules, and torch, load on first use)
from TSCDenoiseLib.core.resources import SAMPLE_LOW_DOSE_FILE, SAMPLE_NORMAL_DOSE_FILE, sample_path  # noqa: E402

TORCH_REQUIREMENT = ">=2.4"
POLL_INTERVAL_MS = 100
DIFFERENCE_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
SAMPLE_CATEGORY = "TSCDenoise"
# SHA256 of the bundled sample files (checked by SampleData; Testing/TSCDenoise checks them against the files)
SAMPLE_CHECKSUMS = {
    SAMPLE_LOW_DOSE_FILE: "SHA256:dddd5de5279aea8d50fa19f55ce592f7ddd78519b7d8b0942c94938a3253195d",
    SAMPLE_NORMAL_DOSE_FILE: "SHA256:efd02ef96bc9f7525060c6cdc36714278efe4e3d997037dfa6c2c62f4809f790",
}


#
# TSCDenoise
#


class TSCDenoise(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and Help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("TSCDenoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["TSCDenoise developers"]
        self.parent.helpText = _("""
Removes noise from low-dose CT with TSC-Net, a network trained as a student of a normal-dose teacher
with a contrastive regularization. Pick the CT, click <b>Denoise</b>, then compare before and after.
The input volume is never changed: the result goes to a new volume.
See the <a href="https://github.com/TSCDenoise/TSCDenoise#3d-slicer">documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Method: Fu et al., "Total-Body Low-Dose CT Image Denoising using Prior Knowledge Transfer Technique with
Contrastive Regularization Mechanism". The bundled sample is the Cranium CT of InVesalius (GPL-2).
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Register the bundled low-dose head CT (and its normal-dose reference) in the Sample Data module."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, title=_("TSCDenoise"))
    for name, node_name, title in (
        (SAMPLE_LOW_DOSE_FILE, "TSCDenoiseLowDoseHead", _("Low-dose head CT")),
        (SAMPLE_NORMAL_DOSE_FILE, "TSCDenoiseNormalDoseHead", _("Normal-dose head CT (reference)")),
    ):
        try:
            path = sample_path(name)
        except TSCDenoiseLib.InvalidInputError as error:
            logging.warning(str(error))
            continue
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=SAMPLE_CATEGORY,
            sampleName=title,
            thumbnailFileName=str(_MODULE_DIR / "Resources" / "Icons" / "TSCDenoise.png"),
            uris=path.as_uri(),  # a local file: SampleData copies it into its cache, nothing is downloaded
            fileNames=f"TSCDenoise-{name}",
            checksums=SAMPLE_CHECKSUMS[name],
            nodeNames=node_name,
        )


#
# TSCDenoiseParameterNode
#


@parameterNodeWrapper
class TSCDenoiseParameterNode:
    """
    inputVolume - the CT to denoise (never modified).
    outputVolume - where the result goes; None creates a new volume.
    useDefaultModel - use the bundled default weights; else modelPath.
    modelPath - a TSCDenoise checkpoint file (.pt).
    device - "auto" (a CUDA GPU when there is one), "cuda" or "cpu".
    autoSlabSize, slabSize - axial slices per forward pass: chosen from free memory, or slabSize.
    mixedPrecision - bf16/fp16 autocast on CUDA (ignored on the CPU).
    createDifferenceVolume - also make "<input> - denoised" to see what was removed.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    useDefaultModel: bool = True
    modelPath: pathlib.Path
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    autoSlabSize: bool = True
    slabSize: Annotated[int, WithinRange(1, 512)] = 8
    mixedPrecision: bool = True
    createDifferenceVolume: bool = False


#
# TSCDenoiseWidget
#


class TSCDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: input, output, model, device, slab size, Denoise/Cancel, progress and comparison."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None
        self._runInput = None
        self._startTime = 0.0
        self._denoiseRate = None
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollProcess)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TSCDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TSCDenoiseLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.fadeSlider.connect("valueChanged(double)", self.onFadeChanged)
        self.ui.sideBySideButton.connect("clicked(bool)", self.onSideBySide)
        self.ui.progressBar.hide()
        self.initializeParameterNode()
        self.updateDeviceInfo()

    def cleanup(self) -> None:
        self._cancelProcess()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelProcess()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, parameterNode: Optional[TSCDenoiseParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self.updateGui()

    def updateGui(self, caller=None, event=None) -> None:
        """Enable what can be used now and say why the Denoise button is disabled."""
        node = self._parameterNode
        running = self._process is not None
        self.ui.modelPathLineEdit.enabled = bool(node) and not node.useDefaultModel and not running
        self.ui.slabSizeSpinBox.enabled = bool(node) and not node.autoSlabSize and not running
        self.ui.settingsCollapsibleButton.enabled = not running
        self.ui.applyButton.text = _("Cancel") if running else _("Denoise")
        reason = self._cannotApplyReason()
        self.ui.applyButton.enabled = running or reason is None
        self.ui.applyButton.toolTip = _("Stop denoising; nothing is written") if running else (
            reason or _("Denoise the input volume into the output volume"))
        hasResult = bool(node and node.inputVolume and node.outputVolume)
        self.ui.fadeSlider.enabled = hasResult
        self.ui.sideBySideButton.enabled = hasResult

    def _cannotApplyReason(self) -> Optional[str]:
        node = self._parameterNode
        if not node or not node.inputVolume:
            return _("Select the CT volume to denoise")
        if node.outputVolume and node.outputVolume == node.inputVolume:
            return _("The output must not be the input: choose 'Create new volume'")
        if not node.useDefaultModel and str(node.modelPath) in ("", "."):
            return _("Choose a model file, or use the bundled default model")
        return None

    def updateDeviceInfo(self, index=None) -> None:
        """Show which device 'auto'/'cuda'/'cpu' means here (GPU name and free memory)."""
        self.ui.deviceInfoLabel.text = self.logic.describeDevice(self.ui.deviceComboBox.currentText)

    def onApplyButton(self) -> None:
        if self._process is not None:
            self._cancelProcess()
            self.ui.statusLabel.text = _("Cancelled; the input is unchanged and no output was written.")
            return
        if not self.logic.ensureDependencies():
            return
        node = self._parameterNode
        try:
            with slicer.util.tryWithErrorDisplay(_("Denoising could not start."), waitCursor=True):
                self._process = self.logic.startDenoising(
                    node.inputVolume, modelPath=None if node.useDefaultModel else str(node.modelPath),
                    device=node.device, slabSize="auto" if node.autoSlabSize else node.slabSize,
                    mixedPrecision=node.mixedPrecision)
        except Exception:  # already shown to the user (message, with the traceback under Details)
            return
        self._runInput = node.inputVolume
        self._startTime = time.perf_counter()
        self._denoiseRate = None
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.ui.statusLabel.text = _("Starting...")
        self._pollTimer.start()
        self.updateGui()

    def onPollProcess(self) -> None:
        """Timer tick: show the worker's events; publish the result when it has finished."""
        if self._process is None:
            self._pollTimer.stop()
            return
        for event in self._process.poll():
            kind = event["event"]
            if kind == "start":
                self.ui.statusLabel.text = _("Denoising {slices} slices on {device}, {slab} per pass").format(
                    slices=event["slices"], device=event["device"], slab=event["slab_size"])
            elif kind == "progress":
                self.ui.progressBar.maximum = event["total"]
                self.ui.progressBar.value = event["done"]
            elif kind == "notice":
                self.ui.statusLabel.text = event["message"]
                slicer.util.showStatusMessage(event["message"], 5000)
            elif kind == "done":
                self._denoiseRate = event["slices_per_second"]
        if not self._process.running:
            self._finish()

    def _finish(self) -> None:
        self._pollTimer.stop()
        process, self._process = self._process, None
        node = self._parameterNode
        try:
            with slicer.util.tryWithErrorDisplay(_("Denoising failed; the input is unchanged."), waitCursor=True):
                output = self.logic.finishDenoising(process, self._runInput, node.outputVolume)
                seconds = time.perf_counter() - self._startTime
                node.outputVolume = output
                if node.createDifferenceVolume:
                    self.logic.createDifferenceVolume(self._runInput, output)
                self.logic.showComparison(self._runInput, output, self.ui.fadeSlider.value)
                self.ui.statusLabel.text = _("Done in {seconds:.1f} s; the network ran at {rate:.2f} slices/s.").format(
                    seconds=seconds, rate=self._denoiseRate or 0.0)
        except Exception:  # already shown to the user by tryWithErrorDisplay
            self.ui.statusLabel.text = _("Failed; the input is unchanged and no output was written.")
        finally:
            process.cleanup()
            self.ui.progressBar.hide()
            self.updateGui()

    def _cancelProcess(self) -> None:
        if self._process is not None:
            self._pollTimer.stop()
            process, self._process = self._process, None
            process.cancel()
            process.cleanup()
            self.ui.progressBar.hide()
            self.updateGui()

    def onFadeChanged(self, value: float) -> None:
        slicer.util.setSliceViewerLayers(foregroundOpacity=value)

    def onSideBySide(self) -> None:
        node = self._parameterNode
        self.logic.showSideBySide(node.inputVolume, node.outputVolume)


#
# TSCDenoiseLogic
#


class TSCDenoiseLogic(ScriptedLoadableModuleLogic):
    """Thin layer over TSCDenoiseLib: usable from the Python console without the panel."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return TSCDenoiseParameterNode(super().getParameterNode())

    def process(self, inputVolume, outputVolume=None, modelPath=None, device="auto", slabSize="auto",
                mixedPrecision=True, progress=None, cancel=None):
        """Denoise in this process (blocking) and return the output node; see TSCDenoiseLib.mrml.nodes."""
        from TSCDenoiseLib.mrml.nodes import denoise_volume_node

        return denoise_volume_node(inputVolume, outputVolume, model=modelPath, device=device, slab_size=slabSize,
                                   amp=mixedPrecision, progress=progress, cancel=cancel,
                                   notify=lambda message: logging.warning(message))

    def startDenoising(self, inputVolume, modelPath=None, device="auto", slabSize="auto", mixedPrecision=True):
        """Start denoising in a separate PythonSlicer process; returns the running DenoiseProcess."""
        from TSCDenoiseLib.mrml.background import DenoiseProcess
        from TSCDenoiseLib.mrml.nodes import volume_voxels

        voxels = volume_voxels(inputVolume)
        python = shutil.which("PythonSlicer") or sys.executable
        return DenoiseProcess(voxels, modelPath, device=device, slab_size=slabSize, amp=mixedPrecision,
                              python_executable=python, work_dir=slicer.app.temporaryPath).start()

    def finishDenoising(self, process, inputVolume, outputVolume=None):
        """The finished process's result in `outputVolume` (new when None); raises its error otherwise."""
        from TSCDenoiseLib.mrml.nodes import check_output_node, describe_model, new_image_like, publish_output

        check_output_node(inputVolume, outputVolume)
        result = process.result()
        image, voxels = new_image_like(inputVolume)
        voxels[...] = result
        return publish_output(inputVolume, image, outputVolume, model_description=describe_model(process.model_path))

    def createDifferenceVolume(self, inputVolume, outputVolume):
        """A float volume input - output (the removed noise) with a diverging colormap centred on 0."""
        import numpy as np

        difference = (slicer.util.arrayFromVolume(inputVolume).astype(np.float32)
                      - slicer.util.arrayFromVolume(outputVolume).astype(np.float32))
        name = slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()} removed noise")
        node = slicer.util.addVolumeFromArray(difference, name=name)
        matrix = vtk.vtkMatrix4x4()
        inputVolume.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
        node.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        display = node.GetDisplayNode()
        display.SetAndObserveColorNodeID(DIFFERENCE_COLOR_NODE_ID)
        spread = float(np.percentile(np.abs(difference), 99)) or 1.0
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(2 * spread, 0.0)
        return node

    def showComparison(self, inputVolume, outputVolume, opacity: float = 0.5) -> None:
        """Input as background, output as foreground at `opacity` (the fade slider), in all slice views."""
        slicer.util.setSliceViewerLayers(background=inputVolume, foreground=outputVolume,
                                         foregroundOpacity=opacity, fit=True)

    def showSideBySide(self, inputVolume, outputVolume) -> None:
        """Two linked axial views: input on the left, output on the right."""
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for viewName, volume in (("Red", inputVolume), ("Yellow", outputVolume)):
            sliceLogic = layoutManager.sliceWidget(viewName).sliceLogic()
            composite = sliceLogic.GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLinkedControl(True)
            sliceLogic.GetSliceNode().SetOrientation("Axial")
            sliceLogic.FitSliceToAll()

    def describeDevice(self, device: str) -> str:
        """What `device` resolves to here, with the GPU's name and free memory; no torch import if missing."""
        if find_spec("torch") is None:
            return _("PyTorch is not installed yet; Denoise offers to install it.")
        from TSCDenoiseLib.core.device import describe_device, resolve_device

        try:
            return describe_device(resolve_device(device))
        except TSCDenoiseLib.DeviceError as error:
            return str(error)

    def ensureDependencies(self) -> bool:
        """Install PyTorch and the Python requirements if missing, after asking the user; True when ready."""
        if find_spec("torch") is None:
            if not slicer.util.confirmOkCancelDisplay(
                    _("TSCDenoise needs PyTorch, which is not installed. Install it now (about 1-3 GB download)?"),
                    windowTitle=_("TSCDenoise: install PyTorch")):
                return False
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay(_("Install the 'PyTorch' extension from the Extensions Manager, "
                                           "restart Slicer, and click Denoise again."))
                return False
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                             torchVersionRequirement=TORCH_REQUIREMENT) is None:
                return False
        requirements = str(_MODULE_DIR / "Resources" / "requirements.txt")
        try:
            with slicer.util.tryWithErrorDisplay(_("Installing the required Python packages failed."), waitCursor=True):
                if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):  # Slicer >= 5.11
                    slicer.packaging.pip_ensure(slicer.packaging.load_requirements(requirements), requester="TSCDenoise")
                    return True
                missing = _missing_requirements(requirements)
                if missing and not slicer.util.confirmOkCancelDisplay(
                        _("TSCDenoise needs these Python packages: {packages}. Install them now?").format(
                            packages=", ".join(missing)), windowTitle=_("TSCDenoise: install packages")):
                    return False
                if missing:
                    slicer.util.pip_install(" ".join(missing))  # older Slicers take one string
                return True
        except Exception:  # declined or failed: already shown to the user
            return False


def _missing_requirements(requirementsFile: str) -> list:
    """Lines of a requirements file whose distribution is missing or too old (Slicer < 5.11 path)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        from packaging.requirements import Requirement
    except ImportError:  # without `packaging` only presence can be checked
        Requirement = None

    missing = []
    for line in pathlib.Path(requirementsFile).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = Requirement(line).name if Requirement else line.split(">=")[0]
        try:
            installed = version(name)
        except PackageNotFoundError:
            missing.append(line)
            continue
        if Requirement and not Requirement(line).specifier.contains(installed, prereleases=True):
            missing.append(line)
    return missing


#
# TSCDenoiseTest
#


class TSCDenoiseTest(ScriptedLoadableModuleTest):
    """Self-test, run inside Slicer (Developer mode: Reload and Test, or ctest of the built extension)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SampleIsDenoisedOnCpu()
        self.setUp()
        self.test_BackgroundProcessMatchesInProcess()
        self.setUp()
        self.test_InputIsRefusedAsOutput()

    def _sampleSlab(self, slices: int = 3):
        """The first `slices` slices of the bundled low-dose sample, with its geometry, and the reference."""
        import numpy as np

        low = slicer.util.loadVolume(str(sample_path(SAMPLE_LOW_DOSE_FILE)))
        reference = slicer.util.loadVolume(str(sample_path(SAMPLE_NORMAL_DOSE_FILE)))
        slab = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "sample slab")
        slicer.util.updateVolumeFromArray(slab, np.ascontiguousarray(slicer.util.arrayFromVolume(low)[:slices]))
        matrix = vtk.vtkMatrix4x4()
        low.GetIJKToRASMatrix(matrix)
        slab.SetIJKToRASMatrix(matrix)
        return slab, slicer.util.arrayFromVolume(reference)[:slices]

    def test_SampleIsDenoisedOnCpu(self):
        import numpy as np

        from TSCDenoiseLib.core.metrics import flat_soft_tissue_mask, noise_std

        self.delayDisplay("Denoising 3 slices of the sample on the CPU")
        slab, reference = self._sampleSlab()
        before = slicer.util.arrayFromVolume(slab).copy()
        output = TSCDenoiseLogic().process(slab, device="cpu")
        result = slicer.util.arrayFromVolume(output)
        self.assertEqual(result.shape, before.shape)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(slab), before)
        inputMatrix, outputMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        slab.GetIJKToRASMatrix(inputMatrix)
        output.GetIJKToRASMatrix(outputMatrix)
        for row in range(4):
            for column in range(4):
                self.assertAlmostEqual(inputMatrix.GetElement(row, column), outputMatrix.GetElement(row, column))
        flat = flat_soft_tissue_mask(reference)
        self.assertGreater(flat.sum(), 1000)
        self.assertLess(noise_std(result, reference, flat), 0.8 * noise_std(before, reference, flat))
        self.delayDisplay("Noise in flat tissue fell")

    def test_BackgroundProcessMatchesInProcess(self):
        import numpy as np

        self.delayDisplay("Denoising in a PythonSlicer process")
        slab, _reference = self._sampleSlab(2)
        logic = TSCDenoiseLogic()
        process = logic.startDenoising(slab, device="cpu", slabSize=1)
        while process.running:
            slicer.app.processEvents()
            time.sleep(0.05)
        try:
            background = logic.finishDenoising(process, slab)
        finally:
            process.cleanup()
        inProcess = logic.process(slab, device="cpu", slabSize=1)
        difference = np.abs(slicer.util.arrayFromVolume(background).astype(np.int32)
                            - slicer.util.arrayFromVolume(inProcess).astype(np.int32))
        self.assertLessEqual(int(difference.max()), 1)
        self.delayDisplay("Background and in-process results agree")

    def test_InputIsRefusedAsOutput(self):
        slab, _reference = self._sampleSlab(1)
        with self.assertRaises(TSCDenoiseLib.InvalidInputError):
            TSCDenoiseLogic().process(slab, outputVolume=slab, device="cpu")
