import pytest
import torch

from TSCDenoiseLib.training.losses import ContrastiveRegularization, KnowledgeTransferLoss, TSCStudentLoss, VGG19Features
from TSCDenoiseLib.networks import TSCNet


def _features(seed, shapes=((2, 4, 8, 8), (2, 8, 4, 4))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) for s in shapes]


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_kt_is_zero_for_identical_features_and_grows_with_difference(distance):
    loss = KnowledgeTransferLoss(distance)
    teacher = _features(0)
    assert loss(teacher, teacher).item() == 0.0
    noise = _features(1)
    values = [loss([t + s * n for t, n in zip(teacher, noise)], teacher).item() for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_kt_layer_weights_select_layers():
    teacher, student = _features(0), _features(1)
    only_first = KnowledgeTransferLoss("l1", weights=[1.0, 0.0])(student, teacher)
    torch.testing.assert_close(only_first, torch.nn.functional.l1_loss(student[0], teacher[0]))
    with pytest.raises(ValueError, match="same network config"):
        KnowledgeTransferLoss()(student[:1], teacher)


def test_kt_gradient_reaches_student_features_only():
    teacher = [t.requires_grad_() for t in _features(0)]
    student = [s.requires_grad_() for s in _features(1)]
    KnowledgeTransferLoss("l2")(student, teacher).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)


def _crm_setting(tiny_config):
    torch.manual_seed(0)
    teacher = TSCNet(**tiny_config).eval()
    g = torch.Generator().manual_seed(3)
    ndct = torch.rand(2, 1, 16, 16, generator=g) * 0.5 + 0.25
    ldct = ndct + 0.1 * torch.randn(2, 1, 16, 16, generator=g)
    return teacher, ndct, ldct


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_crm_falls_toward_ndct_and_rises_toward_ldct(tiny_config, distance):
    teacher, ndct, ldct = _crm_setting(tiny_config)
    crm = ContrastiveRegularization(teacher.encode, distance=distance)
    with torch.no_grad():
        along = [crm(ldct + t * (ndct - ldct), ndct, ldct).item() for t in (0.2, 0.4, 0.6, 0.8)]
    assert all(a > b for a, b in zip(along, along[1:])), along  # moving toward NDCT lowers it
    with torch.no_grad():
        near_ldct = crm(ldct + 0.05 * (ndct - ldct), ndct, ldct).item()
    assert near_ldct > along[0]


def test_crm_default_weights_follow_the_paper():
    assert ContrastiveRegularization(lambda x: [x]).weights == (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def test_student_loss_gradients_reach_the_student_only(tiny_config):
    teacher, ndct, ldct = _crm_setting(tiny_config)
    student = TSCNet(**teacher.config)
    criterion = TSCStudentLoss(teacher, lambda_kt=1.0, lambda_cr=0.5)
    restored, features = student.forward_features(ldct)
    terms = criterion(restored, features, ldct, ndct)
    assert set(terms) == {"pixel", "kt", "cr", "loss"}
    expected = terms["pixel"] + 1.0 * terms["kt"] + 0.5 * terms["cr"]
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(not p.requires_grad for p in teacher.parameters())
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    # the loss does not own the teacher: saving or moving the loss leaves the teacher's weights out
    assert not any(k.startswith("_teacher") for k in criterion.state_dict())


def test_student_loss_terms_can_be_switched_off(tiny_config):
    teacher, ndct, ldct = _crm_setting(tiny_config)
    student = TSCNet(**teacher.config)
    restored, features = student.forward_features(ldct)
    terms = TSCStudentLoss(teacher, lambda_kt=0.0, lambda_cr=0.0)(restored, features, ldct, ndct)
    assert set(terms) == {"pixel", "loss"}
    torch.testing.assert_close(terms["loss"], torch.nn.functional.l1_loss(restored, ndct))


def test_kt_pulls_student_features_toward_the_teacher(tiny_config):
    teacher, ndct, ldct = _crm_setting(tiny_config)
    torch.manual_seed(5)
    student = TSCNet(**teacher.config)
    kt = KnowledgeTransferLoss("l1")
    with torch.no_grad():
        _, target = teacher.forward_features(ndct)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = kt(student.forward_features(ldct)[1], target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_vgg_encoder_needs_a_local_file(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(Exception, match="not found"):
        VGG19Features(tmp_path / "missing.pth")


def test_vgg_encoder_loads_local_weights_and_gives_five_taps(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    path = tmp_path / "vgg19_features.pth"
    torch.save(torchvision.models.vgg19(weights=None).features.state_dict(), path)
    taps = VGG19Features(path)(torch.rand(1, 1, 32, 32))
    assert [t.shape[1] for t in taps] == [64, 128, 256, 512, 512]


def test_student_loss_reuses_the_teachers_clean_features_as_the_crm_positive(tiny_config):
    torch.manual_seed(0)
    teacher, student = TSCNet(**{**tiny_config, "residual": False}), TSCNet(**tiny_config)
    ndct = torch.rand(2, 1, 16, 16)
    ldct = ndct + 0.05 * torch.randn_like(ndct)
    restored, features = student.forward_features(ldct)
    terms = TSCStudentLoss(teacher, lambda_kt=1.0, lambda_cr=1.0)(restored, features, ldct, ndct)
    direct = ContrastiveRegularization(teacher.encode)(restored, ndct, ldct)  # encodes the positive itself
    torch.testing.assert_close(terms["cr"], direct)
