"""unlearn.optim: AdamW against torch.optim.AdamW (bitwise), decoupled weight decay, per-parameter learning
rates, the schedules, and gradient clipping (torch's clip_grad_norm_ against the hand-written rule, bitwise;
per member)."""

import pytest
import torch

from unlearn.optim import AdamW, clip_gradients, lr_factor, make_optimizer
from unlearn.train import TrainConfig, train


@pytest.mark.parametrize("chunk_bytes, betas, eps", [
    (AdamW.CHUNK_BYTES, (0.9, 0.999), 1e-8),  # one group, the defaults
    (1, (0.9, 0.999), 1e-8),  # one parameter per group
    (AdamW.CHUNK_BYTES, (0.8, 0.95), 1e-3),  # betas and eps as configured (TrainConfig.adam_betas, adam_eps)
])
def test_adamw_equals_torch_adamw_bitwise(chunk_bytes, betas, eps, monkeypatch, tiny_problem):
    """Our AdamW (no weight decay, no scales) follows torch.optim.AdamW exactly on the CPU, however the
    parameters are grouped into chunks, and with the betas and eps it is given."""
    TinyLM, make_data, nll = tiny_problem
    monkeypatch.setattr(AdamW, "CHUNK_BYTES", chunk_bytes)
    inputs, labels = make_data()
    ours, theirs = TinyLM(), TinyLM()
    cfg = TrainConfig(steps=6, lr=0.05, optimizer="adamw", adam_betas=betas, adam_eps=eps, progress=False)
    train(ours, nll, lambda s: [(inputs, labels)], cfg)
    reference = torch.optim.AdamW(theirs.parameters(), lr=0.05, betas=betas, eps=eps, weight_decay=0.0)
    for _ in range(6):
        reference.zero_grad()
        nll(theirs, (inputs, labels))["nll"].mean().backward()
        reference.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sign_descent_is_its_definition_step_for_step_under_a_mask(tiny_problem):
    """signsgd: p -= lr * sign(grad) every step, by hand beside the loop; a masked weight never moves."""
    TinyLM, make_data, nll = tiny_problem
    inputs, labels = make_data()
    ours, theirs = TinyLM(), TinyLM()
    keep = {"emb": (torch.arange(ours.emb.numel()) % 2).reshape(ours.emb.shape).float()}
    start = ours.emb.detach().clone()
    train(ours, nll, lambda s: [(inputs, labels)], TrainConfig(steps=5, lr=0.01, optimizer="signsgd", progress=False),
          masks=keep)
    for _ in range(5):
        theirs.zero_grad()
        nll(theirs, (inputs, labels))["nll"].mean().backward()
        with torch.no_grad():
            theirs.emb -= 0.01 * torch.sign(theirs.emb.grad * keep["emb"])
            theirs.out -= 0.01 * torch.sign(theirs.out.grad)
    assert torch.equal(ours.emb, theirs.emb) and torch.equal(ours.out, theirs.out)
    assert torch.equal(ours.emb[keep["emb"] == 0], start[keep["emb"] == 0])
    assert not torch.equal(ours.emb, start)


def test_adamw_updates_an_fsdp2_shard_through_its_local_tensor(monkeypatch, tmp_path):
    """A sharded (DTensor) parameter, as FSDP2 holds it, takes the same step as a plain one, without handing a
    DTensor to a foreach op: torch 2.11 has no DTensor rule for _foreach_clamp_min (simulated here)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    clamp_min = torch._foreach_clamp_min

    def without_dtensor_rule(tensors, scalar):
        assert not any(isinstance(t, DTensor) for t in tensors), "a DTensor reached _foreach_clamp_min"
        return clamp_min(tensors, scalar)

    monkeypatch.setattr(torch, "_foreach_clamp_min", without_dtensor_rule)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        weight, grad = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.ones(4, 3)
        plain = torch.nn.Parameter(weight.clone())
        sharded = torch.nn.Parameter(distribute_tensor(weight.clone(), mesh, [Shard(0)]))
        plain.grad, sharded.grad = grad.clone(), distribute_tensor(grad.clone(), mesh, [Shard(0)])
        for p in (plain, sharded):
            AdamW([p], 0.1, (0.9, 0.999), 1e-8, {}).step()
        assert not torch.equal(plain.detach(), weight)
        assert torch.equal(sharded.detach().full_tensor(), plain.detach())
    finally:
        dist.destroy_process_group()


def test_weight_decay_skips_weights_without_a_gradient_as_torch_adamw_does(tiny_problem):
    TinyLM, make_data, nll = tiny_problem
    ours, theirs = TinyLM(), TinyLM()
    unused = {m: torch.nn.Parameter(torch.ones(3)) for m in ("ours", "theirs")}
    ours.register_parameter("unused", unused["ours"])
    theirs.register_parameter("unused", unused["theirs"])
    inputs, labels = make_data()
    train(ours, nll, lambda s: [(inputs, labels)],
          TrainConfig(steps=3, lr=0.1, optimizer="adamw", weight_decay=0.5, progress=False))
    reference = torch.optim.AdamW(theirs.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(3):
        reference.zero_grad(set_to_none=True)
        sum(nll(theirs, (inputs, labels))["nll"].mean(-1).reshape(-1)).backward()
        reference.step()
    assert torch.equal(ours.unused, torch.ones(3)) and torch.equal(theirs.unused, torch.ones(3))
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_warmup_then_linear_decay():
    cfg = TrainConfig(steps=10, lr=1.0, schedule="warmup_linear", warmup_steps=4)
    factors = [lr_factor(s, cfg.steps, cfg.schedule, cfg.warmup_steps) for s in range(10)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_warmup_then_constant():
    cfg = TrainConfig(steps=6, lr=1.0, schedule="constant", warmup_steps=2)
    assert [lr_factor(s, cfg.steps, cfg.schedule, cfg.warmup_steps) for s in range(6)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_lr_scale_equals_that_learning_rate(tiny_problem):
    """SGD with lr 1 and lr_scale s moves a parameter exactly like lr s."""
    TinyLM, make_data, nll = tiny_problem
    inputs, labels = make_data()
    a, b = TinyLM(), TinyLM()
    train(a, nll, lambda s: [(inputs, labels)], TrainConfig(steps=5, lr=0.03, progress=False))
    train(b, nll, lambda s: [(inputs, labels)], TrainConfig(steps=5, lr=1.0, progress=False),
          lr_scale={"emb": torch.tensor(0.03), "out": torch.tensor(0.03)})
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_an_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; valid: sgd, adamw"):
        make_optimizer("lion", [], 0.1)


@torch.no_grad()
def hand_written_global_clip(params, max_norm):
    """The loop's clipping before it called torch.nn.utils.clip_grad_norm_ (members = 0), verbatim."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(1, -1), dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef[0])
    return total[0]


def gradients(dtype, scale, seed=0):
    """Parameters of several shapes and sizes (one large enough for the vectorised, multi-threaded norm), one
    without a gradient, their gradients ~ N(0, scale^2)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(3,), (7, 5), (4, 3, 2), (300, 517), (1,)]
    params = [torch.nn.Parameter(torch.zeros(shape, dtype=dtype)) for shape in shapes]
    for p in params[:-1]:
        p.grad = torch.randn(p.shape, generator=g, dtype=dtype) * scale
    return params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale, max_norm", [(1.0, 0.5), (1e-3, 1.0), (3.0, 1e4), (1e-20, 1e-3)])
def test_clipping_one_model_is_the_hand_written_rule_bitwise(dtype, scale, max_norm):
    """clip_gradients(members=0), i.e. torch.nn.utils.clip_grad_norm_(foreach=False), leaves the same gradients,
    bit for bit, as the hand-written global rule it replaced, clipping or not, and returns the same norm."""
    ours, theirs = gradients(dtype, scale), gradients(dtype, scale)
    norm = clip_gradients(ours, max_norm)
    reference = hand_written_global_clip(theirs, max_norm)
    assert torch.equal(norm, reference) and norm.dtype == dtype
    assert (norm > max_norm) == (scale == 1.0)  # the first case clips, the others leave the gradients alone
    for p, q in zip(ours, theirs, strict=True):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)


def test_clipping_per_member_equals_clipping_each_member_alone():
    """members = M: member m's gradients (the slices [m] of every stacked gradient) are clipped by their own norm,
    as clip_gradients clips that member's gradients alone; one member over the threshold moves no other."""
    g = torch.Generator().manual_seed(0)
    M, shapes = 3, [(4,), (2, 5), (3, 2, 2)]
    grads = [[torch.randn(shape, generator=g, dtype=torch.float64) * s for shape in shapes] for s in (0.01, 5.0, 1.0)]
    stacked = [torch.nn.Parameter(torch.zeros(M, *shape, dtype=torch.float64)) for shape in shapes]
    for k, p in enumerate(stacked):
        p.grad = torch.stack([grads[m][k] for m in range(M)])
    norms = clip_gradients(stacked, 1.0, members=M)
    assert norms.shape == (M,) and norms[0] < 1.0 < norms[1] and norms[2] > 1.0
    for m in range(M):
        alone = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for shape in shapes]
        for p, grad in zip(alone, grads[m], strict=True):
            p.grad = grad.clone()
        torch.testing.assert_close(norms[m], clip_gradients(alone, 1.0), rtol=1e-14, atol=0)
        for p, q in zip(stacked, alone, strict=True):
            torch.testing.assert_close(p.grad[m], q.grad, rtol=1e-14, atol=0)
    assert all(torch.equal(p.grad[0], grads[0][k]) for k, p in enumerate(stacked))  # under the threshold: untouched
