"""MRML glue on a real vtkMRMLScene (Slicer's MRML libraries, headless, from the slicer-core package)."""

import math
import time

import numpy as np
import pytest
import slicer
import torch
import vtk
from slicer.util import arrayFromVolume, updateVolumeFromArray

from TSCDenoiseLib.core.checkpoint import save_model
from TSCDenoiseLib.errors import DenoiseCancelled, InvalidInputError
from TSCDenoiseLib.core.inference import denoise_volume
from TSCDenoiseLib.mrml.nodes import MODEL_ATTRIBUTE, SOURCE_ATTRIBUTE, denoise_volume_node


@pytest.fixture
def scene():
    """A fresh scene, also installed as slicer.mrmlScene (as inside Slicer) for slicer.util helpers."""
    had_scene = hasattr(slicer, "mrmlScene")
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(1)
    if had_scene:
        slicer.mrmlScene = previous
    else:
        del slicer.mrmlScene


def _ct(shape=(5, 24, 28), seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    head = (yy - y / 2) ** 2 + (xx - x / 2) ** 2 < (min(y, x) / 2.4) ** 2
    volume = np.where(head, 40.0, -1000.0)[None].repeat(z, 0) + rng.normal(0, 30, shape)
    return volume.round().astype(np.int16)


def _oblique_ijk_to_ras():
    """IJK->RAS with a rotation about two axes, anisotropic spacing and an offset origin."""
    a, b = math.radians(30), math.radians(12)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ rx @ np.diag([0.7, 0.8, 2.5])
    matrix[:3, 3] = [-120.5, 33.0, 410.25]
    return matrix


def _matrix_of(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _volume_node(scene, name="chest CT", voxels=None, matrix=None):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    updateVolumeFromArray(node, _ct() if voxels is None else voxels)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(_oblique_ijk_to_ras() if matrix is None else matrix))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(400, 40)
    return node


def test_output_is_a_new_node_with_the_input_geometry_and_the_engine_result(scene, tiny_net):
    source = _volume_node(scene)
    before = arrayFromVolume(source).copy()
    image_before = source.GetImageData()
    output = denoise_volume_node(source, model=tiny_net, device="cpu")

    assert output is not source and output.GetScene() is scene
    assert output.GetName() == "chest CT denoised"
    assert output.IsA("vtkMRMLScalarVolumeNode") and not output.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_allclose(_matrix_of(output), _oblique_ijk_to_ras(), atol=1e-9)
    np.testing.assert_allclose(output.GetSpacing(), source.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(output.GetOrigin(), source.GetOrigin(), atol=1e-12)
    result = arrayFromVolume(output)
    assert result.dtype == np.int16 and result.shape == before.shape
    np.testing.assert_array_equal(result, denoise_volume(before, tiny_net, device="cpu"))
    assert not np.array_equal(result, before)
    # the input node keeps its own, unchanged voxels
    assert source.GetImageData() is image_before
    np.testing.assert_array_equal(arrayFromVolume(source), before)
    assert not np.shares_memory(arrayFromVolume(source), result)
    # display and provenance
    display = output.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (400, 40) and not display.GetAutoWindowLevel()
    assert output.GetAttribute(SOURCE_ATTRIBUTE) == source.GetID()
    assert output.GetAttribute(MODEL_ATTRIBUTE) == "TSCNet"


def test_a_second_run_gets_a_unique_name_and_the_parent_transform(scene, tiny_net):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    source = _volume_node(scene, name="ct")
    source.SetAndObserveTransformNodeID(transform.GetID())
    first = denoise_volume_node(source, model=tiny_net, device="cpu")
    second = denoise_volume_node(source, model=tiny_net, device="cpu")
    assert {first.GetName(), second.GetName()} == {"ct denoised", "ct denoised_1"}
    assert first.GetTransformNodeID() == transform.GetID() == second.GetTransformNodeID()


def test_a_given_output_node_is_filled_and_returned(scene, tiny_net):
    source = _volume_node(scene)
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my result")
    updateVolumeFromArray(target, np.zeros((2, 3, 4), np.float32))
    count = scene.GetNumberOfNodes()
    output = denoise_volume_node(source, output_node=target, model=tiny_net, device="cpu")
    assert output is target and output.GetName() == "my result"
    added = [scene.GetNthNode(i) for i in range(count, scene.GetNumberOfNodes())]
    assert [node.GetClassName() for node in added] == ["vtkMRMLScalarVolumeDisplayNode"]  # no new volume node
    assert arrayFromVolume(target).shape == arrayFromVolume(source).shape
    np.testing.assert_allclose(_matrix_of(target), _matrix_of(source), atol=1e-9)


def test_model_from_a_checkpoint_path(scene, tiny_net, tmp_path):
    path = save_model(tiny_net, tmp_path / "student.pt")
    source = _volume_node(scene)
    output = denoise_volume_node(source, model=str(path), device="cpu")
    np.testing.assert_array_equal(arrayFromVolume(output), denoise_volume(arrayFromVolume(source), tiny_net, device="cpu"))
    assert output.GetAttribute(MODEL_ATTRIBUTE) == str(path)


def test_the_input_node_is_refused_as_output(scene, tiny_net):
    source = _volume_node(scene)
    before, count = arrayFromVolume(source).copy(), scene.GetNumberOfNodes()
    with pytest.raises(InvalidInputError, match="input is never overwritten"):
        denoise_volume_node(source, output_node=source, model=tiny_net, device="cpu")
    np.testing.assert_array_equal(arrayFromVolume(source), before)
    assert scene.GetNumberOfNodes() == count


@pytest.mark.parametrize("node_class, match", [
    ("vtkMRMLLabelMapVolumeNode", "label map"),
    ("vtkMRMLVectorVolumeNode", "one value per voxel"),
    ("vtkMRMLModelNode", "not a volume node"),
])
def test_nodes_that_are_not_a_scalar_ct_get_a_clear_error(scene, tiny_net, node_class, match):
    node = scene.AddNewNodeByClass(node_class, "not a ct")
    if node.IsA("vtkMRMLVolumeNode"):
        voxels = np.zeros((2, 8, 8, 3), np.uint8) if node_class == "vtkMRMLVectorVolumeNode" else np.zeros((2, 8, 8), np.int16)
        updateVolumeFromArray(node, voxels)
    count = scene.GetNumberOfNodes()
    with pytest.raises(InvalidInputError, match=match):
        denoise_volume_node(node, model=tiny_net, device="cpu")
    assert scene.GetNumberOfNodes() == count


def test_label_map_output_and_empty_input_are_refused(scene, tiny_net):
    source = _volume_node(scene)
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "segmentation")
    with pytest.raises(InvalidInputError, match="scalar volume"):
        denoise_volume_node(source, output_node=labels, model=tiny_net, device="cpu")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InvalidInputError, match="holds no voxels"):
        denoise_volume_node(empty, model=tiny_net, device="cpu")
    with pytest.raises(InvalidInputError, match="No input volume"):
        denoise_volume_node(None, model=tiny_net, device="cpu")


def test_non_ct_values_are_refused_through_the_engine_check(scene, tiny_net):
    source = _volume_node(scene, voxels=np.random.default_rng(0).uniform(0, 1, (2, 8, 8)).astype(np.float32))
    with pytest.raises(InvalidInputError, match="normalized intensities"):
        denoise_volume_node(source, model=tiny_net, device="cpu")


def test_cancel_and_progress_leave_no_half_result_in_the_scene(scene, tiny_net):
    source = _volume_node(scene)
    seen = []
    count = scene.GetNumberOfNodes()
    with pytest.raises(DenoiseCancelled):
        denoise_volume_node(source, model=tiny_net, device="cpu", slab_size=1,
                            progress=lambda done, total: seen.append((done, total)), cancel=lambda: len(seen) >= 2)
    assert seen == [(1, 5), (2, 5)]
    assert scene.GetNumberOfNodes() == count


def test_output_round_trips_through_the_nrrd_storage_node(scene, tiny_net, tmp_path):
    source = _volume_node(scene)
    output = denoise_volume_node(source, model=tiny_net, device="cpu")
    writer = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    writer.SetFileName(str(tmp_path / "denoised.nrrd"))
    assert writer.WriteData(output) == 1
    reader = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")  # as a fresh load does
    reader.SetFileName(str(tmp_path / "denoised.nrrd"))
    reloaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reloaded")
    assert reader.ReadData(reloaded) == 1
    np.testing.assert_array_equal(arrayFromVolume(reloaded), arrayFromVolume(output))
    assert arrayFromVolume(reloaded).dtype == np.int16
    np.testing.assert_allclose(_matrix_of(reloaded), _oblique_ijk_to_ras(), atol=1e-6)
    # and the reloaded file is still the input's anatomy: same geometry as the source node
    np.testing.assert_allclose(_matrix_of(reloaded), _matrix_of(source), atol=1e-6)


def test_float_volumes_stay_float(scene, tiny_net):
    voxels = _ct().astype(np.float32) + 0.25
    source = _volume_node(scene, voxels=voxels)
    output = denoise_volume_node(source, model=tiny_net, device="cpu")
    assert arrayFromVolume(output).dtype == np.float32
    np.testing.assert_allclose(arrayFromVolume(output), denoise_volume(voxels, tiny_net, device="cpu"), atol=1e-4)


def test_cpu_fallback_notifies_about_slab_halving(scene, tiny_config):
    """A network that runs out of memory on slabs of more than one slice: the engine halves, notify hears it."""
    from TSCDenoiseLib.networks import TSCNet

    class OneSliceAtATime(TSCNet):
        def forward(self, x, **kwargs):
            if x.shape[0] > 1:
                raise torch.cuda.OutOfMemoryError("simulated: slab too large")
            return super().forward(x, **kwargs)

    torch.manual_seed(0)
    network = OneSliceAtATime(**tiny_config).eval()
    source = _volume_node(scene)
    notices = []
    output = denoise_volume_node(source, model=network, device="cpu", slab_size=4, notify=notices.append)
    assert any("retrying with 2 slices" in n for n in notices) and any("retrying with 1 slices" in n for n in notices)
    assert arrayFromVolume(output).shape == arrayFromVolume(source).shape


# --- the difference volume -----------------------------------------------------------------------------

from TSCDenoiseLib.mrml.nodes import DIFFERENCE_COLOR_NODE_ID, create_difference_volume  # noqa: E402


def test_difference_volume_is_input_minus_output_with_the_same_geometry(scene, tiny_net):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "table shift")
    source = _volume_node(scene)
    source.SetAndObserveTransformNodeID(transform.GetID())
    output = denoise_volume_node(source, model=tiny_net, device="cpu")
    difference = create_difference_volume(source, output)

    expected = arrayFromVolume(source).astype(np.float32) - arrayFromVolume(output).astype(np.float32)
    assert difference.GetName() == "chest CT removed noise" and difference.GetScene() is scene
    assert arrayFromVolume(difference).dtype == np.float32
    np.testing.assert_array_equal(arrayFromVolume(difference), expected)
    np.testing.assert_allclose(_matrix_of(difference), _oblique_ijk_to_ras(), atol=1e-9)
    assert difference.GetTransformNodeID() == transform.GetID()
    display = difference.GetDisplayNode()
    assert display.GetColorNodeID() == DIFFERENCE_COLOR_NODE_ID and display.GetLevel() == 0.0
    assert display.GetWindow() == pytest.approx(2 * np.percentile(np.abs(expected), 99))


def test_difference_of_volumes_of_different_size_is_refused(scene):
    source = _volume_node(scene)
    other = _volume_node(scene, name="other", voxels=_ct((2, 8, 8)))
    with pytest.raises(InvalidInputError, match="differ in size"):
        create_difference_volume(source, other)


def test_strength_reaches_the_node_result_and_a_bad_one_adds_no_node(scene, tiny_noise_map_net, tiny_net):
    source = _volume_node(scene)
    before = arrayFromVolume(source).copy()
    output = denoise_volume_node(source, model=tiny_noise_map_net, device="cpu", strength=0.5)
    np.testing.assert_array_equal(arrayFromVolume(output),
                                  denoise_volume(before, tiny_noise_map_net, device="cpu", strength=0.5))
    assert not np.array_equal(arrayFromVolume(output), denoise_volume(before, tiny_noise_map_net, device="cpu"))
    nodes = scene.GetNumberOfNodes()
    with pytest.raises(InvalidInputError, match="no noise-map input"):
        denoise_volume_node(source, model=tiny_net, device="cpu", strength=0.5)
    with pytest.raises(InvalidInputError, match="from 0.25 to 2"):
        denoise_volume_node(source, model=tiny_noise_map_net, device="cpu", strength=0.1)
    assert scene.GetNumberOfNodes() == nodes


# --- the logic's run: worker process, callbacks, real nodes ---------------------------------------------

from TSCDenoiseLib.mrml.run import NodeDenoiseRun  # noqa: E402


def _drive(run, timeout=120.0):
    """What the Slicer logic's QTimer does: poll until the run has finished."""
    deadline = time.monotonic() + timeout
    while run.poll():
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.02)


def test_run_in_a_worker_fills_a_new_node_through_its_callbacks(scene, tiny_net, tmp_path):
    checkpoint = save_model(tiny_net, tmp_path / "student.pt")
    source = _volume_node(scene)
    before = arrayFromVolume(source).copy()
    nodes_before = scene.GetNumberOfNodes()
    statuses, progress, logs, finished = [], [], [], []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", slab_size=2, create_difference=True,
                         work_dir=tmp_path, on_status=statuses.append,
                         on_progress=lambda done, total, left: progress.append((done, total, left)),
                         on_log=logs.append, on_finished=lambda node, error: finished.append((node, error)))
    run.start()
    assert scene.GetNumberOfNodes() == nodes_before  # nothing in the scene until the result is complete
    _drive(run)

    assert len(finished) == 1
    output, error = finished[0]
    assert error is None and output is run.output_node and output.GetScene() is scene
    np.testing.assert_array_equal(arrayFromVolume(output), denoise_volume(before, tiny_net, device="cpu", slab_size=2))
    np.testing.assert_array_equal(arrayFromVolume(source), before)
    np.testing.assert_allclose(_matrix_of(output), _oblique_ijk_to_ras(), atol=1e-9)
    assert output.GetAttribute(MODEL_ATTRIBUTE) == str(checkpoint)
    assert [(d, t) for d, t, _ in progress] == [(2, 5), (4, 5), (5, 5)]
    assert progress[-1][2] == 0.0 and all(left is not None and left >= 0 for _, _, left in progress)
    assert any("5 slices on cpu" in s for s in statuses) and any("slab 2" in line for line in logs)
    np.testing.assert_array_equal(arrayFromVolume(run.difference_node),
                                  before.astype(np.float32) - arrayFromVolume(output).astype(np.float32))
    assert run.slices_per_second > 0 and run.seconds > 0
    assert not run.process.folder.exists()  # the temporary input and output are gone
    assert not run.poll()


def test_cancelled_run_finishes_with_denoise_cancelled_and_leaves_the_scene_alone(scene, tiny_net, tmp_path):
    checkpoint = save_model(tiny_net, tmp_path / "student.pt")
    source = _volume_node(scene, voxels=_ct((300, 96, 96)))
    nodes_before = scene.GetNumberOfNodes()
    finished = []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", slab_size=1, work_dir=tmp_path,
                         on_finished=lambda node, error: finished.append((node, error))).start()
    deadline = time.monotonic() + 120
    progressed = []
    run.on_progress = lambda done, total, left: progressed.append(done)
    while not progressed:
        assert run.poll() and time.monotonic() < deadline
        time.sleep(0.02)
    started = time.perf_counter()
    run.cancel()
    assert time.perf_counter() - started < 0.2  # never blocks the GUI thread
    _drive(run, timeout=30)
    assert len(finished) == 1 and finished[0][0] is None and isinstance(finished[0][1], DenoiseCancelled)
    assert scene.GetNumberOfNodes() == nodes_before
    assert not run.process.folder.exists()


def test_bad_input_fails_at_start_with_nothing_left_behind(scene, tmp_path):
    source = _volume_node(scene)
    with pytest.raises(InvalidInputError, match="never overwritten"):
        NodeDenoiseRun(source, source, work_dir=tmp_path).start()
    assert list(tmp_path.iterdir()) == []


def test_worker_errors_reach_on_finished_as_the_engines_message(scene, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    source = _volume_node(scene)
    finished = []
    run = NodeDenoiseRun(source, model_path=broken, device="cpu", work_dir=tmp_path,
                         on_finished=lambda node, error: finished.append(error)).start()
    _drive(run)
    assert len(finished) == 1 and "not a readable checkpoint" in str(finished[0])
    assert run.output_node is None


# --- "Adapt to this scan first": the panel's option, through the same worker ------------------------


def test_adapt_option_adapts_in_the_worker_logs_the_result_then_denoises(scene, tiny_net, tmp_path):
    checkpoint = save_model(tiny_net, tmp_path / "student.pt")
    source = _volume_node(scene, voxels=_ct((3, 128, 128)))
    before = arrayFromVolume(source).copy()
    progress, logs, finished = [], [], []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", slab_size=2, adapt_seconds=4, work_dir=tmp_path,
                         on_progress=lambda done, total, left: progress.append((run.phase, done, total)),
                         on_log=logs.append, on_finished=lambda node, error: finished.append((node, error)))
    run.start()
    _drive(run)
    assert len(finished) == 1 and finished[0][1] is None
    adapting = [p for p in progress if p[0] == "adapting"]
    assert adapting and all(total == 1000 for _, _, total in adapting)
    assert progress[-1] == ("denoising", 3, 3)  # the slices come after the adaptation
    summary = [line for line in logs if line.startswith("Adaptation (r2r")]
    assert len(summary) == 1 and run.adaptation["summary"] == summary[0]
    # What the held-out criterion gained, or (a starved host: a worker given one busy core was seen to spend
    # the whole budget on the held-out scoring) that no step fitted; the door is under test, not the speed.
    assert "held-out error" in summary[0] or "left no time to train" in summary[0]
    assert run.adaptation["used"] in ("adapted", "original")
    output = arrayFromVolume(run.output_node)
    assert output.shape == before.shape
    if run.adaptation["used"] == "original":
        np.testing.assert_array_equal(output, denoise_volume(before, tiny_net, device="cpu", slab_size=2))
    np.testing.assert_array_equal(arrayFromVolume(source), before)
    assert not run.process.folder.exists()


def test_cancel_during_adaptation_finishes_cancelled_and_leaves_the_scene_alone(scene, tiny_net, tmp_path):
    checkpoint = save_model(tiny_net, tmp_path / "student.pt")
    source = _volume_node(scene, voxels=_ct((3, 128, 128)))
    nodes_before = scene.GetNumberOfNodes()
    finished = []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", adapt_seconds=600, work_dir=tmp_path,
                         on_finished=lambda node, error: finished.append((node, error))).start()
    deadline = time.monotonic() + 120
    while run.phase != "adapting":
        assert run.poll() and time.monotonic() < deadline
        time.sleep(0.02)
    run.cancel()
    _drive(run, timeout=30)
    assert len(finished) == 1 and finished[0][0] is None and isinstance(finished[0][1], DenoiseCancelled)
    assert scene.GetNumberOfNodes() == nodes_before
    assert not run.process.folder.exists()


# --- a standby worker (started ahead, torch already imported) takes the run --------------------------------

from TSCDenoiseLib.mrml.background import StandbyWorker  # noqa: E402


def _wait_ready(standby, timeout=120.0):
    deadline = time.monotonic() + timeout
    while standby.ready is None:
        assert standby.running and time.monotonic() < deadline, list(standby.stderr_tail)
        time.sleep(0.02)
    return standby


def test_a_run_handed_a_ready_standby_runs_on_it_with_the_same_result(scene, tiny_net, tmp_path):
    checkpoint = save_model(tiny_net, tmp_path / "student.pt")
    source = _volume_node(scene)
    before = arrayFromVolume(source).copy()
    standby = _wait_ready(StandbyWorker(work_dir=tmp_path).start())
    progress, finished = [], []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", slab_size=2, work_dir=tmp_path, standby=standby,
                         on_progress=lambda done, total, left: progress.append((done, total)),
                         on_finished=lambda node, error: finished.append((node, error))).start()
    assert run.used_standby and run.process is standby and run.standby is None
    _drive(run)
    assert len(finished) == 1 and finished[0][1] is None
    np.testing.assert_array_equal(arrayFromVolume(run.output_node),
                                  denoise_volume(before, tiny_net, device="cpu", slab_size=2))
    assert progress == [(2, 5), (4, 5), (5, 5)] and run.slices_per_second > 0
    assert standby.accepted["torch_preloaded"]
    assert list(tmp_path.iterdir()) == [checkpoint]  # the standby's folder went with the run


def test_a_standby_that_dies_before_taking_the_job_is_replaced_by_a_fresh_worker(scene, tiny_net, tmp_path):
    checkpoint = save_model(tiny_net, tmp_path / "student.pt")
    source = _volume_node(scene)
    before = arrayFromVolume(source).copy()
    standby = StandbyWorker(work_dir=tmp_path).start()  # still importing torch: no job read yet
    logs, finished = [], []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", slab_size=2, work_dir=tmp_path, standby=standby,
                         on_log=logs.append, on_finished=lambda node, error: finished.append((node, error))).start()
    assert run.process is standby and standby.submitted
    standby.process.kill()  # crashed after the job was handed over, before reading it
    _drive(run)
    assert standby.accepted is None and not run.used_standby and run.process is not standby
    assert any("starting a fresh one" in line for line in logs)
    assert len(finished) == 1 and finished[0][1] is None
    np.testing.assert_array_equal(arrayFromVolume(run.output_node),
                                  denoise_volume(before, tiny_net, device="cpu", slab_size=2))
    assert list(tmp_path.iterdir()) == [checkpoint]


def test_a_run_refused_at_start_leaves_its_standby_unused_for_the_next_run(scene, tmp_path):
    source = _volume_node(scene)
    standby = StandbyWorker(work_dir=tmp_path).start()
    run = NodeDenoiseRun(source, source, work_dir=tmp_path, standby=standby)
    with pytest.raises(InvalidInputError, match="never overwritten"):
        run.start()
    assert run.standby is standby and not standby.submitted and standby.running  # the caller keeps it
    standby.stop()
    standby.wait(timeout=30)
    assert list(tmp_path.iterdir()) == []


def test_a_run_with_a_strength_gives_the_engines_result_at_that_strength(scene, tiny_noise_map_net, tmp_path):
    checkpoint = save_model(tiny_noise_map_net, tmp_path / "noise_map.pt")
    source = _volume_node(scene)
    before = arrayFromVolume(source).copy()
    finished = []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", slab_size=2, strength=1.5, work_dir=tmp_path,
                         on_finished=lambda node, error: finished.append((node, error))).start()
    _drive(run)
    assert len(finished) == 1 and finished[0][1] is None
    np.testing.assert_array_equal(arrayFromVolume(run.output_node),
                                  denoise_volume(before, tiny_noise_map_net, device="cpu", slab_size=2, strength=1.5))


def test_the_automatic_strength_is_chosen_on_the_scan_said_in_the_log_and_used(scene, tiny_noise_map_net, tmp_path):
    from TSCDenoiseLib.noise import choose_strength
    from TSCDenoiseLib.training.phantom import make_phantom

    checkpoint = save_model(tiny_noise_map_net, tmp_path / "noise_map.pt")
    clean = make_phantom((2, 96, 96), kind="torso", spacing=(1.0, 1.0, 2.0), seed=1)
    noisy = (clean + np.random.default_rng(0).normal(0.0, 30.0, clean.shape)).astype(np.float32)
    choice = choose_strength(noisy, tiny_noise_map_net)
    assert choice.index_to_std is not None and choice.strength != 1.0  # measured on the phantom's soft tissue
    source = _volume_node(scene, voxels=noisy)
    logs, heard = [], []
    run = NodeDenoiseRun(source, model_path=checkpoint, device="cpu", slab_size=2, work_dir=tmp_path,
                         on_log=logs.append).start()  # the worker process, strength left at its default
    _drive(run)
    assert choice.describe() in " ".join(logs)
    expected = denoise_volume(noisy, tiny_noise_map_net, device="cpu", slab_size=2, strength=choice.strength)
    np.testing.assert_array_equal(arrayFromVolume(run.output_node), expected)
    in_process = denoise_volume_node(source, model=tiny_noise_map_net, device="cpu", notify=heard.append)
    np.testing.assert_array_equal(arrayFromVolume(in_process), expected)
    assert heard == [choice.describe()]
