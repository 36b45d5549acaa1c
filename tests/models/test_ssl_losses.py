"""BYOL's loss and DINO's loss against brute-force references (DINO's own loop), the skipped
same-view pairs, the stop-gradients, and the centre's EMA, all-reduced across 2 processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F
from torch.testing import assert_close

from glimpse.models.ssl_losses import DINOLoss, byol_loss, byol_symmetric_loss

B, K = 3, 16


def test_byol_loss_is_the_mse_of_normalised_vectors_and_2_minus_2_cos():
    torch.manual_seed(0)
    p, z = torch.randn(5, 8), torch.randn(5, 8)
    mse = (F.normalize(p, dim=-1) - F.normalize(z, dim=-1)).square().sum(-1).mean()
    assert_close(byol_loss(p, z), mse)
    cosine = (p * z).sum(-1) / (p.norm(dim=-1) * z.norm(dim=-1))
    assert_close(byol_loss(p, z), (2 - 2 * cosine).mean())


def test_byol_loss_extremes_and_scale_invariance():
    v = torch.randn(4, 8)
    assert byol_loss(v, 3.0 * v).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(v, -v).item() == pytest.approx(4.0, abs=1e-6)
    z = torch.randn(4, 8)
    assert_close(byol_loss(2.5 * v, 0.1 * z), byol_loss(v, z))


def test_byol_loss_stops_the_gradient_into_the_target():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


def test_byol_symmetric_loss_pairs_each_prediction_with_the_other_views_target():
    torch.manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(4, 8) for _ in range(4))
    assert_close(byol_symmetric_loss(p1, p2, z1, z2), byol_loss(p1, z2) + byol_loss(p2, z1))
    assert byol_symmetric_loss(z2, z1, z1, z2).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        byol_loss(torch.randn(4, 8), torch.randn(4, 7))


def dino_reference(student_output, teacher_output, center, teacher_temp, ncrops, student_temp):
    """DINO's DINOLoss.forward (facebookresearch/dino, main_dino.py), without the centre
    update: the loop over (teacher view iq, student view v != iq)."""
    student_out = (student_output / student_temp).chunk(ncrops)
    teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1).detach().chunk(2)
    total_loss, n_loss_terms = 0, 0
    for iq, q in enumerate(teacher_out):
        for v in range(len(student_out)):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
            total_loss += loss.mean()
            n_loss_terms += 1
    return total_loss / n_loss_terms


@pytest.mark.parametrize("views", [2, 3, 8])
def test_dino_loss_equals_dinos_loop(views):
    torch.manual_seed(views)
    loss = DINOLoss(K)
    loss.center.copy_(torch.randn(1, K))
    student = torch.randn(views * B, K, requires_grad=True)
    teacher = torch.randn(2 * B, K)
    ours = loss(student, teacher, 0.04)
    reference = dino_reference(student, teacher, loss.center, 0.04, views, 0.1)
    assert_close(ours, reference)
    (grad,) = torch.autograd.grad(ours, student)
    (reference_grad,) = torch.autograd.grad(
        dino_reference(student, teacher, loss.center, 0.04, views, 0.1), student
    )
    assert_close(grad, reference_grad)


def test_dino_loss_with_two_views_is_the_two_cross_pairs_only():
    torch.manual_seed(0)
    loss = DINOLoss(K, student_temp=0.2)
    student = torch.randn(2 * B, K)
    teacher = torch.randn(2 * B, K)
    s0, s1 = (F.log_softmax(s / 0.2, dim=-1) for s in student.chunk(2))
    t0, t1 = (F.softmax(t / 0.07, dim=-1) for t in teacher.chunk(2))
    cross = (-(t0 * s1).sum(-1).mean() - (t1 * s0).sum(-1).mean()) / 2
    assert_close(loss(student, teacher, 0.07), cross)


def test_dino_loss_skips_same_view_pairs():
    """Student view 0 is only compared with teacher view 1: changing teacher view 0 leaves its
    gradient unchanged, while changing teacher view 1 does not."""
    torch.manual_seed(0)
    loss = DINOLoss(K)
    student = torch.randn(4 * B, K, requires_grad=True)
    teacher = torch.randn(2 * B, K)

    def view0_grad(teacher_out):
        (grad,) = torch.autograd.grad(loss(student, teacher_out, 0.05), student)
        return grad[:B]

    other0, other1 = teacher.clone(), teacher.clone()
    other0[:B] = torch.randn(B, K)
    other1[B:] = torch.randn(B, K)
    assert_close(view0_grad(other0), view0_grad(teacher))
    assert not torch.allclose(view0_grad(other1), view0_grad(teacher))


def test_dino_loss_uses_the_centre_but_does_not_update_it():
    torch.manual_seed(0)
    loss = DINOLoss(K)
    student, teacher = torch.randn(4 * B, K), torch.randn(2 * B, K)
    uncentred = loss(student, teacher, 0.04)
    loss.center.copy_(torch.randn(1, K))
    centre = loss.center.clone()
    assert not torch.allclose(loss(student, teacher, 0.04), uncentred)
    assert torch.equal(loss.center, centre)
    centred = loss(student, teacher, 0.04)
    loss.center.add_(2.0)  # the same shift of every logit: softmax does not see it
    assert_close(loss(student, teacher, 0.04), centred)


def test_dino_loss_sends_no_gradient_to_the_teacher():
    student = torch.randn(3 * B, K, requires_grad=True)
    teacher = torch.randn(2 * B, K, requires_grad=True)
    DINOLoss(K)(student, teacher, 0.04).backward()
    assert student.grad is not None and teacher.grad is None


def test_dino_loss_is_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    loss = DINOLoss(K)
    student, teacher = torch.randn(4 * B, K), torch.randn(2 * B, K)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = loss(student, teacher, 0.04)
    assert autocast.dtype == torch.float32
    assert_close(autocast, loss(student, teacher, 0.04))


def test_dino_loss_rejects_shapes_that_are_not_views_of_one_batch():
    loss = DINOLoss(K)
    with pytest.raises(ValueError, match="teacher logits"):
        loss(torch.randn(6, K), torch.randn(5, K), 0.04)
    with pytest.raises(ValueError, match="view-major"):
        loss(torch.randn(7, K), torch.randn(6, K), 0.04)
    with pytest.raises(ValueError, match="view-major"):
        loss(torch.randn(3, K), torch.randn(6, K), 0.04)
    with pytest.raises(ValueError, match="center_momentum"):
        DINOLoss(K, center_momentum=1.0)


def test_update_center_is_the_ema_of_the_batch_mean():
    torch.manual_seed(0)
    loss = DINOLoss(K, center_momentum=0.9)
    first, second = torch.randn(2 * B, K), torch.randn(2 * B, K)
    loss.update_center(first)
    assert_close(loss.center, 0.1 * first.mean(0, keepdim=True))
    loss.update_center(second)
    expected = 0.9 * 0.1 * first.mean(0, keepdim=True) + 0.1 * second.mean(0, keepdim=True)
    assert_close(loss.center, expected)
    assert "center" in loss.state_dict()


def _update_center_worker(rank: int, rendezvous: str, rows: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        loss = DINOLoss(K, center_momentum=0.8)
        loss.center.fill_(1.0)
        loss.update_center(rows[rank])
        torch.save(loss.center, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_update_center_all_reduces_the_mean_over_two_processes(tmp_path: Path):
    torch.manual_seed(0)
    rows = torch.randn(2, 2 * B, K)
    out = str(tmp_path / "center")
    mp.start_processes(  # forked, not spawned: the children need not import torch again
        _update_center_worker,
        args=(str(tmp_path / "rendezvous"), rows, out),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    expected = 0.8 * torch.ones(1, K) + 0.2 * rows.reshape(-1, K).mean(0, keepdim=True)
    for rank in range(2):
        assert_close(torch.load(f"{out}.{rank}", weights_only=True), expected)
