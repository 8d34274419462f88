"""StudentTrainer iterations, batch preparation and the metric output transforms."""

import pytest
import torch
from ignite.engine import Events

pytest.importorskip("monai")
from monai.data import DataLoader, Dataset  # noqa: E402

from TSCDenoiseLib.training.engines import PrepareBatchPair, StudentTrainer, hu_output, windowed_output  # noqa: E402
from TSCDenoiseLib.core.intensity import HUWindow  # noqa: E402
from TSCDenoiseLib.training.losses import TSCStudentLoss  # noqa: E402
from TSCDenoiseLib.networks import REDCNN, TSCNet  # noqa: E402


def paired_loader(count: int = 4, size: int = 24) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    items = []
    for _ in range(count):
        ndct = torch.rand(1, size, size, generator=generator) * 0.2 + 0.2
        items.append({"ndct": ndct, "ldct": ndct + 0.02 * torch.randn(1, size, size, generator=generator)})
    return DataLoader(Dataset(items), batch_size=2)


def test_prepare_batch_pair_picks_the_keys():
    batch = {"ldct": torch.zeros(1), "ndct": torch.ones(1)}
    assert [t.item() for t in PrepareBatchPair("ndct", "ndct")(batch)] == [1.0, 1.0]
    assert [t.item() for t in PrepareBatchPair()(batch)] == [0.0, 1.0]


def test_student_trainer_updates_the_student_only_and_reports_each_term(tiny_config):
    torch.manual_seed(0)
    teacher = TSCNet(**{**tiny_config, "residual": False})
    student = TSCNet(**tiny_config)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    loss = TSCStudentLoss(teacher, lambda_kt=0.5, lambda_cr=0.1, kt_weights=[0, 0, 1, 1, 1, 0, 0])
    trainer = StudentTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=paired_loader(), network=student,
                             optimizer=torch.optim.Adam(student.parameters(), 1e-3), loss_function=loss, decollate=False)
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: outputs.append(dict(engine.state.output)))
    trainer.run()
    assert len(outputs) == 2
    first = {name: float(value) for name, value in outputs[0].items() if name in ("loss", "pixel", "kt", "cr")}
    assert first["loss"] == pytest.approx(first["pixel"] + 0.5 * first["kt"] + 0.1 * first["cr"], rel=1e-5)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert not all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_student_trainer_without_kt_and_crm_trains_any_network():
    torch.manual_seed(0)
    network = REDCNN(channels=4)
    trainer = StudentTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=paired_loader(size=28),
                             network=network, optimizer=torch.optim.Adam(network.parameters(), 1e-3),
                             loss_function=TSCStudentLoss(None, lambda_kt=0, lambda_cr=0), decollate=False)
    trainer.run()
    assert set(trainer.state.output) >= {"pixel", "loss", "pred"} and "kt" not in trainer.state.output


def test_student_loss_without_teacher_refuses_kt():
    with pytest.raises(ValueError, match="teacher"):
        TSCStudentLoss(None, lambda_kt=1.0, lambda_cr=0)


def test_windowed_output_clips_to_the_display_window_and_scales_to_unit_range():
    window = HUWindow(-1024, 3072)
    hu = torch.tensor([[-1000.0, -160.0, 40.0, 240.0, 1000.0]])
    output = [{"pred": window.normalize(hu.clone()), "label": window.normalize(hu.clone())}]  # decollated batch of 1
    preds, labels = windowed_output(window, (-160, 240))(output)
    torch.testing.assert_close(preds[0], torch.tensor([[0.0, 0.0, 0.5, 1.0, 1.0]]), atol=1e-5, rtol=0)
    back, _ = hu_output(window)(output)
    torch.testing.assert_close(back[0], hu, atol=1e-3, rtol=0)


def test_per_sample_noise_strengths_reach_the_network_as_noise_map_strength_does(tiny_config):
    from TSCDenoiseLib.networks.tscnet import noise_map_strength

    torch.manual_seed(0)
    network = TSCNet(**tiny_config, noise_map=True).eval()
    x = torch.rand(2, 1, 24, 24) * 0.1 + 0.25
    batch = {"ldct": x, "ndct": x, "noise_strength": torch.tensor([0.5, 1.5], dtype=torch.float64)}
    inputs, _, args, kwargs = PrepareBatchPair()(batch)
    assert args == () and kwargs["noise_strength"].dtype == torch.float32
    with torch.no_grad():
        per_sample = network(inputs, **kwargs)
        for i, strength in enumerate((0.5, 1.5)):
            with noise_map_strength(network, strength):
                assert torch.allclose(per_sample[i:i + 1], network(inputs[i:i + 1]), atol=1e-6)
    assert len(PrepareBatchPair()({"ldct": x, "ndct": x})) == 2  # without the key, the plain pair


def test_the_trainer_passes_the_per_sample_strengths_to_the_network(tiny_config):
    torch.manual_seed(0)
    network = TSCNet(**tiny_config, noise_map=True)
    seen = []
    network.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("noise_strength")),
                                      with_kwargs=True)
    items = [{**item, "noise_strength": 0.6} for item in paired_loader().dataset]
    trainer = StudentTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=DataLoader(Dataset(items), batch_size=2),
                             network=network, optimizer=torch.optim.Adam(network.parameters(), 1e-3),
                             loss_function=TSCStudentLoss(None, lambda_kt=0, lambda_cr=0), decollate=False)
    trainer.run()
    assert len(seen) == 2 and all(torch.allclose(s, torch.full((2,), 0.6)) for s in seen)
