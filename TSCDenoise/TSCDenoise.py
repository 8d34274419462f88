"""TSCDenoise: low-dose CT denoising with TSC-Net, as a 3D Slicer scripted module (Slicer 5.6 and newer).

The module holds only GUI state; the engine is TSCDenoiseLib (installed beside this file by the
extension, or one folder up in a source checkout). Nothing here imports torch: the device list comes
from a probe process and denoising runs in a worker process, both started and followed by the logic.
While the module is shown, the logic keeps one standby worker (torch already imported) for the next run.
Every Slicer API used exists in Slicer 5.6 or is guarded (Testing/TSCDenoise/test_slicer_api_versions.py).
"""

import logging
import pathlib
import shutil
import sys
import time
from typing import Annotated, Callable, Optional

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
import TSCDenoiseLib.mrml.probe as deviceProbe  # noqa: E402  (no torch: the probe itself runs in a child)

TORCH_REQUIREMENT = "torch>=2.4"
POLL_INTERVAL_MS = 100
STANDBY_IDLE_SECONDS = 600  # an unused standby worker exits by itself after this long
SAMPLE_CATEGORY = "TSCDenoise"
SAMPLE_LOW_DOSE_NAME = "TSCDenoise low-dose head CT"
SAMPLE_NORMAL_DOSE_NAME = "TSCDenoise normal-dose head CT (reference)"
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
See the <a href="https://github.com/TSCDenoise/SlicerTSCDenoise#3d-slicer">documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Method: Fu et al., "Total-Body Low-Dose CT Image Denoising using Prior Knowledge Transfer Technique with
Contrastive Regularization Mechanism". The bundled sample is the Cranium CT of InVesalius (GPL-2).
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Register the bundled low-dose head CT (and its normal-dose reference) in the Sample Data module.

    Only registerCustomSampleDataSource is used: it exists in every supported Slicer (5.6+), whereas
    registerCustomSampleDataCategory only exists from 5.12 (the category is created by the first source).
    """
    import SampleData

    for name, nodeName, title in (
        (SAMPLE_LOW_DOSE_FILE, "TSCDenoiseLowDoseHead", SAMPLE_LOW_DOSE_NAME),
        (SAMPLE_NORMAL_DOSE_FILE, "TSCDenoiseNormalDoseHead", SAMPLE_NORMAL_DOSE_NAME),
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
            nodeNames=nodeName,
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
    modelPath - a TSCDenoise checkpoint file (.pt); "" until one is chosen.
    device - "auto" (a CUDA GPU when there is one), "cuda", "mps" or "cpu"; the panel offers only those that exist.
    autoSlabSize, slabSize - axial slices per forward pass: chosen from free memory, or slabSize.
    mixedPrecision - bf16/fp16 autocast on CUDA (ignored on the CPU).
    createDifferenceVolume - also make "<input> - denoised" to see what was removed.
    adaptToScan, adaptSeconds - first fine-tune a copy of the model on this scan (self-supervised), for at most
        adaptSeconds (the fine-tuning stops after 2 steps, so it usually takes seconds); a held-out check keeps
        the original model when the adapted one is not better.
    autoStrength, strength - how much to denoise: chosen from the scan's noise texture (autoStrength), or
        strength: 1.0 the model's own level; below 1 keeps more texture and noise, above 1 smooths more (it
        scales the noise level a noise-map model such as the default is given).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    useDefaultModel: bool = True
    modelPath: str = ""  # a str, not a pathlib.Path: Path() would show "." in the file field
    device: Annotated[str, Choice(["auto", "cuda", "mps", "cpu"])] = "auto"
    autoSlabSize: bool = True
    slabSize: Annotated[int, WithinRange(1, 512)] = 8
    mixedPrecision: bool = True
    createDifferenceVolume: bool = False
    adaptToScan: bool = False
    adaptSeconds: Annotated[int, WithinRange(10, 3600)] = 300
    autoStrength: bool = True
    strength: Annotated[float, WithinRange(0.25, 2.0)] = 1.0


#
# TSCDenoiseWidget
#


class TSCDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: it shows the parameter node and the logic's run; the logic does the work."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._updatingDeviceComboBox = False

    def setup(self) -> None:
        """Build the panel; works without torch (nothing here imports it)."""
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TSCDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TSCDenoiseLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.fadeSlider.connect("valueChanged(double)", self.onFadeChanged)
        self.ui.sideBySideButton.connect("clicked(bool)", self.onSideBySide)
        self.ui.progressBar.hide()
        self.initializeParameterNode()
        self.updateDeviceComboBox()
        self.logic.refreshDeviceInfo(self.onDeviceInfo)  # in the background; cached for the session

    def cleanup(self) -> None:
        """Called on application exit and module reload: stop the run and the standby worker."""
        if self.logic:
            self.logic.cancel()
            self.logic.stopStandby()
            self.logic.removeDeviceInfoCallback(self.onDeviceInfo)
        self.removeObservers()

    def onReload(self) -> None:
        """Developer mode Reload: also reload TSCDenoiseLib, not only this file."""
        if self.logic:
            self.logic.cancel()
            self.logic.stopStandby()  # it has the old TSCDenoiseLib loaded
        for name in [name for name in sys.modules if name == "TSCDenoiseLib" or name.startswith("TSCDenoiseLib.")]:
            del sys.modules[name]  # TSCDenoise.py imports it afresh when reloaded below
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        self.logic.prepareStandby()  # import torch in a worker now, while the user sets up the run

    def exit(self) -> None:
        self.logic.stopStandby()  # a running denoising goes on; only the idle standby ends
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.logic.stopStandby()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.logic.prepareStandby()

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
        """Enable what can be used now, say why Denoise is disabled, show the device and the estimate."""
        node = self._parameterNode
        running = self.logic.isRunning
        self.ui.modelPathLineEdit.enabled = bool(node) and not node.useDefaultModel and not running
        if node and self.ui.modelPathLineEdit.currentPath != node.modelPath:
            self.ui.modelPathLineEdit.currentPath = node.modelPath
        self.ui.slabSizeSpinBox.enabled = bool(node) and not node.autoSlabSize and not running
        self.ui.adaptSecondsSpinBox.enabled = bool(node) and node.adaptToScan and not running
        self.ui.strengthSlider.enabled = bool(node) and not node.autoStrength and not running
        self.ui.settingsCollapsibleButton.enabled = not running
        self.ui.loadSampleButton.enabled = not running
        self.ui.applyButton.text = _("Cancel") if running else _("Denoise")
        reason = self._cannotApplyReason()
        self.ui.applyButton.enabled = running or reason is None
        self.ui.applyButton.toolTip = _("Stop denoising; nothing is written") if running else (
            reason or _("Denoise the input volume into the output volume"))
        hasResult = bool(node and node.inputVolume and node.outputVolume)
        self.ui.fadeSlider.enabled = hasResult
        self.ui.sideBySideButton.enabled = hasResult
        self.updateDeviceComboBox()
        if not running:
            self.ui.estimateLabel.text = self.logic.estimateText(node.inputVolume if node else None,
                                                                 node.device if node else "auto")

    def _cannotApplyReason(self) -> Optional[str]:
        node = self._parameterNode
        if not node or not node.inputVolume:
            return _("Select the CT volume to denoise")
        if node.outputVolume and node.outputVolume == node.inputVolume:
            return _("The output must not be the input: choose 'Create new volume'")
        if not node.useDefaultModel and node.modelPath.strip() in ("", "."):  # "." from scenes saved by 0.1
            return _("Choose a model file, or use the bundled default model")
        return None

    def updateDeviceComboBox(self) -> None:
        """Offer only the devices that exist here (from the probe); keep the parameter's choice when it exists."""
        node = self._parameterNode
        choices = deviceProbe.device_choices(self.logic.deviceInfo)
        wanted = node.device if node and node.device in choices else "auto"
        combo = self.ui.deviceComboBox
        current = [combo.itemText(index) for index in range(combo.count)]
        self._updatingDeviceComboBox = True
        try:
            if current != choices:
                combo.clear()
                for choice in choices:
                    combo.addItem(choice)
            combo.currentIndex = choices.index(wanted)
        finally:
            self._updatingDeviceComboBox = False
        self.ui.deviceInfoLabel.text = deviceProbe.describe_devices(self.logic.deviceInfo, wanted)

    def onDeviceChanged(self, index: int) -> None:
        if self._updatingDeviceComboBox or not self._parameterNode or index < 0:
            return
        self._parameterNode.device = self.ui.deviceComboBox.itemText(index)

    def onModelPathChanged(self, path: str) -> None:
        if self._parameterNode and self._parameterNode.modelPath != path:
            self._parameterNode.modelPath = path

    def onDeviceInfo(self, info: dict) -> None:
        self.updateGui()
        self.logic.resumeStandby()  # deferred while the probe was timing a slice

    def onLoadSample(self) -> None:
        """Load the bundled low-dose sample and select it as the input."""
        with slicer.util.tryWithErrorDisplay(_("The sample could not be loaded."), waitCursor=True):
            volume = self.logic.loadSample()
            self._parameterNode.inputVolume = volume
            slicer.util.setSliceViewerLayers(background=volume, fit=True)

    def onApplyButton(self) -> None:
        if self.logic.isRunning:
            self.logic.cancel()  # returns at once; onFinished reports the cancellation
            return
        if not self.logic.ensureDependencies():  # asks first; no wait cursor over its dialogs
            return
        node = self._parameterNode
        self.ui.logTextEdit.clear()
        try:
            with slicer.util.tryWithErrorDisplay(_("Denoising could not start."), waitCursor=True):
                self.logic.startDenoising(
                    node.inputVolume, node.outputVolume,
                    modelPath=None if node.useDefaultModel else node.modelPath,
                    device=node.device, slabSize="auto" if node.autoSlabSize else node.slabSize,
                    mixedPrecision=node.mixedPrecision, createDifference=node.createDifferenceVolume,
                    adaptSeconds=node.adaptSeconds if node.adaptToScan else 0,
                    strength="auto" if node.autoStrength else node.strength,
                    onStatus=self.onStatus, onProgress=self.onProgress, onLog=self.onLog, onFinished=self.onFinished)
        except Exception:  # already shown to the user (message, with the traceback under Details)
            return
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.updateGui()

    def onStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text

    def onLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onProgress(self, done: int, total: int, secondsLeft: Optional[float]) -> None:
        self.ui.progressBar.maximum = total
        self.ui.progressBar.value = done
        run = self.logic.lastRun
        if secondsLeft is not None and run is not None and run.phase == "adapting":
            self.ui.estimateLabel.text = _("Adapting to this scan, about {left} left").format(
                left=deviceProbe.format_duration(secondsLeft))
        elif secondsLeft is not None:
            self.ui.estimateLabel.text = _("{done} of {total} slices, about {left} left").format(
                done=done, total=total, left=deviceProbe.format_duration(secondsLeft))

    def onFinished(self, outputVolume, error) -> None:
        self.ui.progressBar.hide()
        run = self.logic.lastRun
        if isinstance(error, TSCDenoiseLib.DenoiseCancelled):
            self.ui.statusLabel.text = _("Cancelled; the input is unchanged and no output was written.")
        elif error is not None:
            self.ui.statusLabel.text = _("Failed; the input is unchanged and no output was written.")
            slicer.util.errorDisplay(_("Denoising failed; the input is unchanged.") + f"\n\n{error}",
                                     windowTitle=_("TSCDenoise"))
        else:
            if self._parameterNode:
                self._parameterNode.outputVolume = outputVolume
            self.logic.showComparison(run.input_node, outputVolume, self.ui.fadeSlider.value)
            self.ui.statusLabel.text = _("Done in {seconds:.1f} s; the network ran at {rate:.2f} slices/s.").format(
                seconds=run.seconds or 0.0, rate=run.slices_per_second or 0.0)
            if run.adaptation:
                self.ui.statusLabel.text += "\n" + run.adaptation.get("summary", "")
        self.updateGui()

    def onFadeChanged(self, value: float) -> None:
        self.logic.setFade(value)

    def onSideBySide(self) -> None:
        node = self._parameterNode
        self.logic.showSideBySide(node.inputVolume, node.outputVolume, self.ui.fadeSlider.value)


#
# TSCDenoiseLogic
#


class TSCDenoiseLogic(ScriptedLoadableModuleLogic):
    """Owns the run: starts the worker process and follows it with its own timer (no GUI needed).

    The panel, the Python console and the self-test all use startDenoising (process() waits on it).
    """

    _deviceInfo = None  # the probe's answer, shared by every logic of this session
    _deviceProbe = None
    _deviceInfoCallbacks = []

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastRun = None
        self.standby = None  # a StandbyWorker waiting for the next run (prepareStandby), or None
        self._standbyWanted = False
        self._comparisonCompositeNodeIDs = []
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._onTimer)

    def getParameterNode(self):
        return TSCDenoiseParameterNode(super().getParameterNode())

    # --- running --------------------------------------------------------------------------------------

    @property
    def isRunning(self) -> bool:
        return self.lastRun is not None and self.lastRun.running

    def startDenoising(self, inputVolume, outputVolume=None, modelPath=None, device="auto", slabSize="auto",
                       mixedPrecision=True, createDifference=False, onStatus=None, onProgress=None, onLog=None,
                       onFinished=None, adaptSeconds=0, strength="auto"):
        """Start denoising `inputVolume` in a PythonSlicer process and return at once.

        The callbacks are called from the logic's timer: onStatus(text), onProgress(done, total,
        secondsLeft), onLog(line) and, once, onFinished(outputVolume or None, error or None). The output
        node (new when None) is filled only when the whole result is there. With adaptSeconds > 0 the worker
        first adapts a copy of the model to this scan for up to that long (progress then counts thousandths of
        the budget; the log gets the held-out gain and which model was used). `strength` sets how much to
        denoise: "auto" (default) chooses it from the scan's noise texture and logs it; 0.25-2.0 sets it: 1.0
        the model's own level, below 1 keeps more texture, above 1 smooths more.

        Returns:
            The TSCDenoiseLib.mrml.run.NodeDenoiseRun being followed (also `self.lastRun`).

        Raises:
            TSCDenoiseLib.InvalidInputError: bad input or output node; nothing was started or written.
            RuntimeError: a run is already going on.
        """
        from TSCDenoiseLib.mrml.run import NodeDenoiseRun

        if self.isRunning:
            raise RuntimeError(_("A denoising run is already going on; cancel it first."))
        standby, self.standby = self.standby, None  # the run uses it up: it takes the job or is stopped
        run = NodeDenoiseRun(
            inputVolume, outputVolume, model_path=modelPath, device=device, slab_size=slabSize, amp=mixedPrecision,
            create_difference=createDifference, adapt_seconds=adaptSeconds, strength=strength,
            python_executable=_pythonExecutable(),
            work_dir=slicer.app.temporaryPath, launch=_launchHidden, standby=standby, on_status=onStatus,
            on_progress=onProgress, on_log=_logTo(onLog), on_finished=onFinished)
        try:
            run.start()  # raises with nothing left behind (its temporary folder is removed)
        except Exception:
            self.standby = run.standby  # refused before the standby was used (bad input): keep it for the next run
            raise
        self.lastRun = run
        self._timer.start()
        return run

    def cancel(self) -> None:
        """Stop the current run, if any, without waiting; its onFinished gets DenoiseCancelled."""
        if self.isRunning:
            self.lastRun.cancel()

    def _onTimer(self) -> None:
        if self.lastRun is None or not self.lastRun.poll():
            self._timer.stop()
            self.resumeStandby()  # the next run starts without importing torch

    def prepareStandby(self) -> None:
        """Keep a standby worker: a PythonSlicer process that imports torch now and runs the next job.

        It removes torch's import (~1.5 s) from the next run's wait; a run that finds none (or one that
        ended) starts a fresh worker as before. The standby exits by itself after STANDBY_IDLE_SECONDS
        unused, or when Slicer is gone; a new one follows each run until stopStandby(). Nothing starts
        while torch is not installed or a run is going on.
        """
        from TSCDenoiseLib.mrml.background import StandbyWorker

        self._standbyWanted = True
        probe = TSCDenoiseLogic._deviceProbe
        if probe is not None and probe.running:
            return  # it times a slice for the estimate: do not compete for the CPU (resumeStandby follows it)
        if self.isRunning or (self.standby is not None and self.standby.accepts(_pythonExecutable(),
                                                                                slicer.app.temporaryPath)):
            return
        self._discardStandby()
        if missingRequirements([TORCH_REQUIREMENT]):
            return
        try:
            self.standby = StandbyWorker(python_executable=_pythonExecutable(), work_dir=slicer.app.temporaryPath,
                                         idle_seconds=STANDBY_IDLE_SECONDS).start(_launchHidden)
        except OSError as error:
            logging.warning(f"TSCDenoise: the standby worker could not start (runs start a fresh one): {error}")

    def resumeStandby(self) -> None:
        """prepareStandby() again if it was asked for and not stopped since (after a run, after the probe)."""
        if self._standbyWanted:
            self.prepareStandby()

    def stopStandby(self) -> None:
        """End the standby worker, if any, and remove its temporary folder; none is started after runs."""
        self._standbyWanted = False
        self._discardStandby()

    def _discardStandby(self) -> None:
        standby, self.standby = self.standby, None
        if standby is not None:
            standby.stop()

    def process(self, inputVolume, outputVolume=None, modelPath=None, device="auto", slabSize="auto",
                mixedPrecision=True, createDifference=False, waitForCompletion=True, adaptSeconds=0, strength="auto"):
        """Denoise from a script: the same worker process as the button.

        With waitForCompletion (default) it returns the output node once done (raising the run's error,
        e.g. DenoiseCancelled); otherwise it returns the running NodeDenoiseRun.
        """
        run = self.startDenoising(inputVolume, outputVolume, modelPath=modelPath, device=device, slabSize=slabSize,
                                  mixedPrecision=mixedPrecision, createDifference=createDifference,
                                  adaptSeconds=adaptSeconds, strength=strength)
        if not waitForCompletion:
            return run
        while self.isRunning:
            slicer.app.processEvents()
            time.sleep(POLL_INTERVAL_MS / 1000)
            self._onTimer()
        if run.error is not None:
            raise run.error
        return run.output_node

    # --- devices and estimate ------------------------------------------------------------------------

    @property
    def deviceInfo(self):
        return TSCDenoiseLogic._deviceInfo

    def refreshDeviceInfo(self, callback: Optional[Callable] = None, force: bool = False) -> None:
        """Ask a probe process which devices exist (and how fast a slice is); cached for the session."""
        if callback is not None and callback not in TSCDenoiseLogic._deviceInfoCallbacks:
            TSCDenoiseLogic._deviceInfoCallbacks.append(callback)
        if TSCDenoiseLogic._deviceInfo is not None and not force:
            if callback is not None:
                callback(TSCDenoiseLogic._deviceInfo)
            return
        if TSCDenoiseLogic._deviceProbe is not None and TSCDenoiseLogic._deviceProbe.running:
            return
        from TSCDenoiseLib.mrml.background import ChildProcess

        command = deviceProbe.probe_command(_pythonExecutable(), measure=True)
        try:
            TSCDenoiseLogic._deviceProbe = ChildProcess(command, slicer.app.temporaryPath).start(_launchHidden)
        except OSError as error:
            logging.warning(f"TSCDenoise: the device probe could not start: {error}")
            return
        self._probeTimer = qt.QTimer()
        self._probeTimer.setInterval(200)
        self._probeTimer.connect("timeout()", self._onProbeTimer)
        self._probeTimer.start()

    def removeDeviceInfoCallback(self, callback) -> None:
        if callback in TSCDenoiseLogic._deviceInfoCallbacks:
            TSCDenoiseLogic._deviceInfoCallbacks.remove(callback)

    def _onProbeTimer(self) -> None:
        probe = TSCDenoiseLogic._deviceProbe
        events = probe.poll() if probe else []
        info = deviceProbe.info_from_events(events)
        if info is None and probe is not None and probe.running:
            return
        self._probeTimer.stop()
        if info is None:
            info = {"torch": None, "devices": [{"id": "cpu", "name": "CPU"}],
                    "torch_error": " | ".join(probe.stderr_tail) if probe else "no probe"}
        TSCDenoiseLogic._deviceInfo = info
        for line in probe.log_lines() if probe else []:
            logging.debug(f"TSCDenoise probe: {line}")
        for callback in list(TSCDenoiseLogic._deviceInfoCallbacks):
            callback(info)

    def estimateText(self, inputVolume, device: str) -> str:
        """The expected duration of denoising `inputVolume` on `device`, and a warning when only the CPU is there."""
        if inputVolume is None or inputVolume.GetImageData() is None:
            return ""
        return deviceProbe.estimate_text(self.deviceInfo, device, inputVolume.GetImageData().GetDimensions()[::-1])

    # --- dependencies --------------------------------------------------------------------------------

    def ensureDependencies(self) -> bool:
        """Install PyTorch (through the PyTorch extension) and requirements.txt after asking; True when ready.

        The installed torch version is compared with TORCH_REQUIREMENT (from its metadata: torch is not
        imported here). A failed install shows one clear message with the details.
        """
        if missingRequirements([TORCH_REQUIREMENT]):
            if not self._installTorch():
                return False
            self.refreshDeviceInfo(force=True)
        return self._installRequirements()

    def _installTorch(self) -> bool:
        installed = installedVersion("torch")
        question = (_("TSCDenoise needs PyTorch ({requirement}), which is not installed.") if installed is None else
                    _("TSCDenoise needs PyTorch {requirement}; version {installed} is installed.")).format(
            requirement=TORCH_REQUIREMENT, installed=installed)
        if not slicer.util.confirmOkCancelDisplay(
                question + " " + _("Install it now through the PyTorch extension (about 1-3 GB download)?"),
                windowTitle=_("TSCDenoise: install PyTorch")):
            return False
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(_("Install the 'PyTorch' extension from the Extensions Manager, "
                                       "restart Slicer, and click Denoise again."), windowTitle=_("TSCDenoise"))
            return False
        requirement = TORCH_REQUIREMENT[len("torch"):]
        try:
            slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
            try:
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                      torchVersionRequirement=requirement)
            finally:
                slicer.app.restoreOverrideCursor()
        except Exception as error:  # CalledProcessError from pip / light-the-torch, or a torch that does not import
            slicer.util.errorDisplay(
                _("Installing PyTorch failed: {error}. Check the network connection and the Python console, or "
                  "install it in the 'PyTorch Utils' module with the version requirement '{requirement}'.").format(
                    error=type(error).__name__, requirement=requirement),
                windowTitle=_("TSCDenoise: install PyTorch"), detailedText=str(error))
            return False
        if torch is None:  # the PyTorch extension's own confirmation was declined
            return False
        if missingRequirements([TORCH_REQUIREMENT]):
            slicer.util.errorDisplay(
                _("PyTorch {installed} is installed, but TSCDenoise needs {requirement}. Restart Slicer, then install "
                  "it in the 'PyTorch Utils' module with the version requirement '{spec}'.").format(
                    installed=installedVersion("torch"), requirement=TORCH_REQUIREMENT, spec=requirement),
                windowTitle=_("TSCDenoise: install PyTorch"))
            return False
        return True

    def _installRequirements(self) -> bool:
        """requirements.txt (psutil, to stop the worker's whole process tree) after asking."""
        requirements = _MODULE_DIR / "Resources" / "requirements.txt"
        try:
            import slicer.packaging as packaging  # Slicer >= 5.11 (not imported by `import slicer`)
        except ImportError:
            packaging = None
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            try:  # asks first, and skips in testing mode
                packaging.pip_ensure(packaging.load_requirements(str(requirements)), requester="TSCDenoise")
                return True
            except RuntimeError as error:  # the user declined
                logging.info(f"TSCDenoise: {error}")
                return False
            except Exception as error:  # CalledProcessError: pip failed
                slicer.util.errorDisplay(_("Installing the required Python packages failed."),
                                         windowTitle=_("TSCDenoise"), detailedText=str(error))
                return False
        try:
            missing = missingRequirements(requirementLines(requirements))
            if not missing:
                return True
            if not slicer.util.confirmOkCancelDisplay(
                    _("TSCDenoise needs these Python packages: {packages}. Install them now?").format(
                        packages=", ".join(missing)), windowTitle=_("TSCDenoise: install packages")):
                return False
            with slicer.util.tryWithErrorDisplay(_("Installing the required Python packages failed."), waitCursor=True):
                slicer.util.pip_install(" ".join(missing))  # Slicer 5.6 takes one string
            return True
        except Exception:  # failed: already shown to the user by tryWithErrorDisplay
            return False

    # --- results -------------------------------------------------------------------------------------

    def loadSample(self):
        """Load the bundled low-dose sample (registered in Sample Data) and return its node."""
        import SampleData

        if not SampleData.SampleDataLogic.sampleDataSourcesByCategory(SAMPLE_CATEGORY):
            registerSampleData()
        nodes = SampleData.SampleDataLogic().downloadSamples(SAMPLE_LOW_DOSE_NAME)
        if not nodes:
            raise TSCDenoiseLib.InvalidInputError(_("The bundled sample is missing from this installation."))
        return nodes[0]

    def showComparison(self, inputVolume, outputVolume, opacity: float = 0.5) -> None:
        """Input as background, output as foreground at `opacity` (the fade slider), in all slice views."""
        slicer.util.setSliceViewerLayers(background=inputVolume, foreground=outputVolume,
                                         foregroundOpacity=opacity, fit=True)
        layoutManager = slicer.app.layoutManager()
        self._comparisonCompositeNodeIDs = [
            layoutManager.sliceWidget(name).sliceLogic().GetSliceCompositeNode().GetID()
            for name in layoutManager.sliceViewNames()]

    def showSideBySide(self, inputVolume, outputVolume, opacity: float = 0.0) -> None:
        """Two linked axial views: left the input (with the output faded in by `opacity`), right the output."""
        layoutManager = slicer.app.layoutManager()
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        self._comparisonCompositeNodeIDs = []
        for viewName, background, foreground in (("Red", inputVolume, outputVolume), ("Yellow", outputVolume, None)):
            sliceLogic = layoutManager.sliceWidget(viewName).sliceLogic()
            composite = sliceLogic.GetSliceCompositeNode()
            composite.SetBackgroundVolumeID(background.GetID())
            composite.SetForegroundVolumeID(foreground.GetID() if foreground else None)
            composite.SetLinkedControl(True)
            if foreground is not None:
                composite.SetForegroundOpacity(opacity)
                self._comparisonCompositeNodeIDs.append(composite.GetID())
            sliceLogic.GetSliceNode().SetOrientation("Axial")
            sliceLogic.FitSliceToAll()

    def setFade(self, opacity: float) -> None:
        """Output opacity over the input in the views showComparison / showSideBySide set up (not elsewhere)."""
        for nodeID in self._comparisonCompositeNodeIDs:
            composite = slicer.mrmlScene.GetNodeByID(nodeID)
            if composite is not None:
                composite.SetForegroundOpacity(opacity)


def _pythonExecutable() -> str:
    return shutil.which("PythonSlicer") or sys.executable


def _launchHidden(command, environmentUpdates, cwd):
    """Start a child as Slicer does: console hidden on Windows (STARTUPINFO), stderr merged into stdout."""
    return slicer.util.launchConsoleProcess(command, useStartupEnvironment=False,
                                            updateEnvironment=dict(environmentUpdates), cwd=cwd)


def _logTo(onLog):
    """Worker messages go to Slicer's log as well as to the panel's log box."""
    def log(line: str) -> None:
        logging.info(f"TSCDenoise worker: {line}")
        if onLog is not None:
            onLog(line)
    return log


def installedVersion(distribution: str) -> Optional[str]:
    """The installed version of `distribution` from its metadata (nothing is imported), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def requirementLines(requirementsFile) -> list:
    """The requirement lines of a requirements file (comments and blank lines removed)."""
    lines = (line.split("#", 1)[0].strip() for line in pathlib.Path(requirementsFile).read_text().splitlines())
    return [line for line in lines if line]


def missingRequirements(requirements: list) -> list:
    """The requirements (e.g. "torch>=2.4") whose distribution is missing or whose installed version is outside."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # without `packaging` only presence can be checked
        Requirement = None

    missing = []
    for line in requirements:
        name = Requirement(line).name if Requirement else line.split(">=")[0].split("==")[0].strip()
        installed = installedVersion(name)
        if installed is None or (Requirement and not Requirement(line).specifier.contains(installed, prereleases=True)):
            missing.append(line)
    return missing


#
# TSCDenoiseTest
#


class TSCDenoiseTest(ScriptedLoadableModuleTest):
    """Self-test, run inside Slicer (Developer mode: Reload and Test, or ctest of the built extension).

    Without PyTorch (e.g. on the Extensions Index build machines) it skips with a message instead of
    failing; with PyTorch it denoises real slices of the sample through the button's path.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        missing = missingRequirements([TORCH_REQUIREMENT])
        if missing:
            message = f"TSCDenoiseTest skipped: {missing[0]} is not installed here (install it with the PyTorch extension)."
            logging.warning(message)
            self.delayDisplay(message)
            return
        self.setUp()
        self.test_SampleIsDenoisedOnCpu()
        self.setUp()
        self.test_BackgroundProcessMatchesInProcess()
        self.setUp()
        self.test_CancelStopsWithoutOutput()
        self.setUp()
        self.test_InputIsRefusedAsOutput()
        self.setUp()
        self.test_AdaptToScanRunsInTheWorker()
        self.setUp()
        self.test_StandbyWorkerRunsTheNextJob()

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

        self.delayDisplay("Denoising 3 slices of the sample on the CPU (worker process, as the button does)")
        slab, reference = self._sampleSlab()
        before = slicer.util.arrayFromVolume(slab).copy()
        progress, finished = [], []
        logic = TSCDenoiseLogic()
        logic.startDenoising(slab, device="cpu", createDifference=True,
                             onProgress=lambda done, total, left: progress.append((done, total)),
                             onFinished=lambda output, error: finished.append((output, error)))
        while logic.isRunning:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertEqual(len(finished), 1)
        output, error = finished[0]
        self.assertIsNone(error)
        self.assertEqual(progress[-1], (3, 3))
        result = slicer.util.arrayFromVolume(output)
        self.assertEqual(result.shape, before.shape)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(slab), before)
        inputMatrix, outputMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        slab.GetIJKToRASMatrix(inputMatrix)
        output.GetIJKToRASMatrix(outputMatrix)
        for row in range(4):
            for column in range(4):
                self.assertAlmostEqual(inputMatrix.GetElement(row, column), outputMatrix.GetElement(row, column))
        difference = logic.lastRun.difference_node
        np.testing.assert_allclose(slicer.util.arrayFromVolume(difference),
                                   before.astype(np.float32) - result.astype(np.float32))
        flat = flat_soft_tissue_mask(reference)
        self.assertGreater(flat.sum(), 1000)
        self.assertLess(noise_std(result, reference, flat), 0.8 * noise_std(before, reference, flat))
        self.delayDisplay("Noise in flat tissue fell")

    def test_BackgroundProcessMatchesInProcess(self):
        import numpy as np

        from TSCDenoiseLib.mrml.nodes import denoise_volume_node

        self.delayDisplay("The worker process and the in-process engine agree")
        slab, _reference = self._sampleSlab(2)
        background = TSCDenoiseLogic().process(slab, device="cpu", slabSize=1)
        inProcess = denoise_volume_node(slab, device="cpu", slab_size=1)
        difference = np.abs(slicer.util.arrayFromVolume(background).astype(np.int32)
                            - slicer.util.arrayFromVolume(inProcess).astype(np.int32))
        self.assertLessEqual(int(difference.max()), 1)

    def test_CancelStopsWithoutOutput(self):
        self.delayDisplay("Cancel returns at once and writes nothing")
        slab, _reference = self._sampleSlab(3)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        finished = []
        logic = TSCDenoiseLogic()
        logic.startDenoising(slab, device="cpu", slabSize=1, onFinished=lambda output, error: finished.append(error))
        started = time.perf_counter()
        logic.cancel()
        self.assertLess(time.perf_counter() - started, 0.5)
        while logic.isRunning:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertEqual(len(finished), 1)
        self.assertIsInstance(finished[0], TSCDenoiseLib.DenoiseCancelled)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)

    def test_AdaptToScanRunsInTheWorker(self):
        self.delayDisplay("Adapt to this scan first: the worker adapts, logs the held-out result, then denoises")
        slab, _reference = self._sampleSlab(3)
        logs = []
        logic = TSCDenoiseLogic()
        logic.startDenoising(slab, device="cpu", slabSize=1, adaptSeconds=10, onLog=logs.append)
        while logic.isRunning:
            slicer.app.processEvents()
            time.sleep(0.05)
        run = logic.lastRun
        self.assertIsNone(run.error)
        self.assertIn(run.adaptation["used"], ("adapted", "original"))
        self.assertTrue(any(line.startswith("Adaptation (") for line in logs))
        self.assertEqual(slicer.util.arrayFromVolume(run.output_node).shape, slicer.util.arrayFromVolume(slab).shape)

    def test_StandbyWorkerRunsTheNextJob(self):
        self.delayDisplay("A standby worker imports torch ahead of the run, runs it, and is stopped without traces")
        slab, _reference = self._sampleSlab(2)
        while TSCDenoiseLogic._deviceProbe is not None and TSCDenoiseLogic._deviceProbe.running:
            slicer.app.processEvents()  # prepareStandby waits for the probe's timing
            time.sleep(0.05)
        logic = TSCDenoiseLogic()
        logic.prepareStandby()
        standby = logic.standby
        self.assertIsNotNone(standby)
        while standby.ready is None and standby.running:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertIn("torch", standby.ready["imported"])
        output = logic.process(slab, device="cpu", slabSize=1)
        self.assertTrue(logic.lastRun.used_standby)
        self.assertEqual(slicer.util.arrayFromVolume(output).shape, slicer.util.arrayFromVolume(slab).shape)
        self.assertFalse(standby.folder.exists())
        self.assertIsNotNone(logic.standby)  # the next one is already on its way
        self.assertIsNot(logic.standby, standby)
        nextStandby = logic.standby
        logic.stopStandby()
        self.assertIsNone(logic.standby)
        self.assertFalse(nextStandby.folder.exists())

    def test_InputIsRefusedAsOutput(self):
        slab, _reference = self._sampleSlab(1)
        with self.assertRaises(TSCDenoiseLib.InvalidInputError):
            TSCDenoiseLogic().process(slab, outputVolume=slab, device="cpu")
