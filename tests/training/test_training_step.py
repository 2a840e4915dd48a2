"""The training step: no host synchronisation, the regularisers at work, every model option trains."""
import math

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from models import build_generator, load_model
from models.checkpoint_format import read_config
from training.engine import GeneratorLoss, train_step
from training.optimization import StepOptions, build_optimizer

aten = torch.ops.aten
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy}
FROM_HOST_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


class HostSyncDetector:
    """Records, while active, what would make a GPU wait for the host or copy from it: reading a
    device tensor on the host (.item(), .tolist(), .cpu(), .numpy()), a device tensor made from host
    data, a copy between host and device, a host tensor fed to a device operation. Run on the meta
    device, where each of these happens as it would on a GPU (a 0-dim host tensor is allowed: a
    scalar operand read on the host)."""

    def __init__(self):
        self.found = []
        detector = self

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in HOST_READS and args[0].device.type != "cpu":
                    detector.found.append(f"{func.__name__}() of a {args[0].device.type} tensor")
                if func in FROM_HOST_DATA:
                    device = kwargs.get("device") or (args[0].device if func is torch.Tensor.new_tensor else None)
                    if device is not None and torch.device(device).type != "cpu":
                        detector.found.append(f"{func.__name__}(...) made on {device} from host data")
                return func(*args, **kwargs)

        class Operations(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
                if func is aten._local_scalar_dense.default and tensors[0].device.type != "cpu":
                    detector.found.append(f"{func} of a {tensors[0].device.type} tensor")
                out = func(*args, **kwargs)
                outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
                devices = {t.device.type for t in tensors + outs if t.dim() > 0}
                if "cpu" in devices and len(devices) > 1:
                    detector.found.append(f"{func} between {sorted(devices)}")
                return out

        self.modes = (Functions(), Operations())

    def __enter__(self):
        for mode in self.modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self.modes):
            mode.__exit__(*exc)


def test_detector_sees_each_kind_of_host_sync():
    x = torch.ones(4, device="meta")
    cases = {
        "item": lambda: x.sum().item(), "tolist": lambda: x.tolist(), "cpu": lambda: x.cpu(),
        "tensor": lambda: x + torch.tensor([1.0, 2.0, 3.0, 4.0], device=x.device),
        "new_tensor": lambda: x + x.new_tensor([1.0, 2.0, 3.0, 4.0]),
        "to": lambda: x + torch.ones(4).to(x.device), "host index": lambda: x[torch.tensor([0, 1])],
    }
    for name, case in cases.items():
        with HostSyncDetector() as detector:
            try:
                case()
            except (RuntimeError, NotImplementedError):  # the meta device cannot hand data to the host
                pass
        assert detector.found, name
    with HostSyncDetector() as detector:
        torch.where(x > 0, x * torch.tensor(2.0), torch.zeros_like(x)).sum()
    assert not detector.found


def meta_training_run(folder, **options):
    model = load_model(folder).train()
    for key, value in options.items():
        setattr(model.config, key, value)
    model.to("meta")
    module = GeneratorLoss(model)
    optimizer = build_optimizer(model, 1e-4, 0.05, (0.9, 0.95), "meta")
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    indices = [torch.randint(0, model.codebook_size, (2, s, s), device="meta") for s in model.scale_sizes]
    labels = torch.randint(0, model.config.num_classes, (2,), device="meta")
    return lambda: train_step(module, (indices, labels), optimizer, scaler, StepOptions(grad_clip=1.0))


@pytest.mark.parametrize("fixture,options", [
    ("tiny_options", {}),
    ("tiny_2x", {"random_replace_sampled": True, "random_block_size": False}),
])
def test_training_step_makes_no_host_sync(fixtures_dir, fixture, options):
    """Forward (random block split, label drop, random replacement, head MLP), backward, clipping and
    the optimizer step, twice (the first creates the optimizer's state)."""
    step = meta_training_run(fixtures_dir / fixture, **options)
    with HostSyncDetector() as detector:
        step()
        step()
    assert detector.found == []


# ---- the regularisers ------------------------------------------------------------------------------
class Captured(Exception):
    """Stops a forward pass once the inputs under test are recorded."""


def test_labels_are_dropped_in_training_only(tiny_dir):
    model = load_model(tiny_dir)
    model.config.uncond_training_prob = 0.25
    seen = []

    def record(module, inputs, output):
        seen.append(inputs[0])
        raise Captured

    model.class_embeddings.register_forward_hook(record)
    n = 4000
    labels = torch.arange(n) % model.config.num_classes
    indices = [torch.zeros(n, s, s, dtype=torch.long) for s in model.scale_sizes]
    for training in (True, False):
        with torch.no_grad(), pytest.raises(Captured):
            model.train(training)(indices, labels)
    dropped = seen[0] == model.config.num_classes
    assert abs(dropped.float().mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)
    assert torch.equal(seen[0][~dropped], labels[~dropped])
    assert torch.equal(seen[1], labels)


def replacement_inputs(model, monkeypatch, training: bool, n: int = 500):
    """(ground-truth indices, what each scale's sources read (from scale 1 on), what gt(t') reads)
    in one forward pass."""
    previous = {}
    scale_sources = model.scale_sources

    def record_sources(prev, k, batch_size):
        previous[k] = prev
        return scale_sources(prev, k, batch_size)

    def record_codes(indices):
        previous["gt"] = indices
        raise Captured

    monkeypatch.setattr(model, "scale_sources", record_sources)
    monkeypatch.setattr(model, "embed_codes", record_codes)
    g = torch.Generator().manual_seed(0)
    indices = [torch.randint(0, model.codebook_size, (n, s, s), generator=g) for s in model.scale_sizes]
    with torch.no_grad(), pytest.raises(Captured):
        model.train(training)(indices, torch.zeros(n, dtype=torch.long))
    gt = [model.sequence.to_grid(previous["gt"], k) for k in range(len(model.scale_sizes))]
    return indices, [previous[k] for k in range(1, len(model.scale_sizes))], gt


def replaced_share(a, b):
    # A replacement draws the same code again with probability 1/codebook size.
    return (a != b).float().mean().item()


@pytest.mark.parametrize("sampled", [False, True])
def test_random_replacement_hits_the_previous_or_the_sampled_codes(tiny_dir, monkeypatch, sampled):
    model = load_model(tiny_dir)
    model.config.random_replace, model.config.random_replace_sampled = 0.3, sampled
    expected = 0.3 * (1 - 1 / model.codebook_size)
    indices, sources, gt = replacement_inputs(model, monkeypatch, training=True)
    if not sampled:  # the sources of scale k read replaced codes of scale k-1; gt(t') the truth
        for k, prev in enumerate(sources):
            share = replaced_share(prev, indices[k])
            assert abs(share - expected) < 5 * math.sqrt(0.3 * 0.7 / prev.numel()) + 0.01, (k, share)
        assert all(torch.equal(a, b) for a, b in zip(gt, indices))
    else:  # gt(t') reads replaced codes from scale 1 on, and the next scale's sources read the same
        assert torch.equal(gt[0], indices[0]) and torch.equal(sources[0], indices[0])
        for k in range(1, len(indices)):
            share = replaced_share(gt[k], indices[k])
            assert abs(share - expected) < 5 * math.sqrt(0.3 * 0.7 / gt[k].numel()) + 0.01, (k, share)
        assert all(torch.equal(sources[k], gt[k]) for k in range(1, len(sources)))
    indices, sources, gt = replacement_inputs(model, monkeypatch, training=False)
    assert all(torch.equal(a, b) for a, b in zip(sources, indices)) and all(map(torch.equal, gt, indices))


def test_head_mlp_l2_acts_through_the_gradient_only(fixtures_dir):
    """With strength s the gradient of the head MLP's output W gains s * W; the loss is unchanged."""
    model = load_model(fixtures_dir / "tiny_options").train()
    strength = 0.05
    g = torch.Generator().manual_seed(0)
    indices = [torch.randint(0, model.codebook_size, (3, s, s), generator=g) for s in model.scale_sizes]
    labels = torch.tensor([1, 2, 3])

    def step(l2):
        model.config.head_weights_l2_loss = l2
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss, _ = model.loss(indices, labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = step(strength)
    loss_plain, grads_plain = step(0.0)
    assert torch.equal(loss, loss_plain)
    params = dict(model.head_mlp.named_parameters())
    w = model.head_mlp(model.autoencoder.codebook().detach())
    pull = torch.autograd.grad(w, list(params.values()), grad_outputs=strength * w.detach())
    assert pull[-1].abs().max() > 1e-4
    for (name, _), extra in zip(params.items(), pull):
        torch.testing.assert_close(grads[f"head_mlp.{name}"] - grads_plain[f"head_mlp.{name}"], extra,
                                   atol=1e-6, rtol=1e-4)
    assert torch.equal(grads["lm_head.weight"], grads_plain["lm_head.weight"])


# ---- every option trains -----------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {"num_mixing_layers": "all"}, {"num_mixing_layers": 0}, {"num_mixing_layers": None},
    {"single_scale": True}, {"use_head_mlp": True, "head_weights_l2_loss": 1e-2}, {"random_replace_sampled": True},
    {"uncond_training_prob": 0.5}, {"random_block_size": False, "num_blocks_per_scale": 2},
    {"llama_config": {"rms_norm_eps": 1e-5}},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_each_option_trains_on_the_cpu(tiny_dir, tiny_expected, options):
    section, _ = read_config(tiny_dir / "config.yaml")
    section.update({k: v for k, v in options.items() if k != "llama_config"})
    section["llama_config"].update(options.get("llama_config", {}))
    torch.manual_seed(0)
    model = build_generator(section, tiny_dir)
    images, labels = tiny_expected["imgs"].repeat(2, 1, 1, 1), tiny_expected["labels"].repeat(2)
    indices = model.autoencoder.encode_pyramid(images)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    def eval_loss():
        with torch.no_grad():
            return model.eval().loss(indices, labels)[0].item()

    before = eval_loss()
    model.train()
    for _ in range(25):
        loss, _ = model.loss(indices, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert eval_loss() < before - 0.5
