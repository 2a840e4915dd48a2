"""Activation memory of a training step, measurable without a GPU; one JSON line per setting.

    python benchmarks/activation_memory.py --model S --batch_size 128 --device cpu
    python benchmarks/activation_memory.py --model S --batch_size 128 --device cpu --grad_checkpointing
    python benchmarks/activation_memory.py --model S --batch_size 128 --device cuda --compile

Counts the bytes autograd keeps for the backward pass of one teacher-forced training step
(the regularisers on, under bf16 autocast unless --dtype fp32), each storage once, with a
saved-tensor hook. These activations are what dominates a step's peak memory beside the
training state (fp32 weights, gradients and the two AdamW moments of the trainable weights,
plus the frozen autoencoder), which is reported too. They grow linearly with the batch, so
they are measured at two small batches and extrapolated to --batch_size: a CPU machine can
tell the activation memory of the paper's S model at batch 128 in a few minutes.

It is not a GPU's peak memory: that adds the allocator's transient buffers, and CPU and CUDA
autocast keep a few ops in different precisions. Compare settings within one device.
"""
import argparse
import json
import time

import torch

from benchmarks.random_models import build_random_model
from training.engine import GeneratorLoss


def saved_tensor_bytes(fn) -> tuple:
    """Runs `fn()` (a forward pass); returns its result and the bytes of the tensors saved for its
    backward pass, each storage counted once however many ops keep it."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[(storage.data_ptr(), t.device, t.dtype)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return result, sum(storages.values())


def training_state_bytes(model) -> int:
    """fp32 weights, gradients and the two AdamW moments of the trainable weights; the frozen rest once."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return 4 * (4 * trainable + frozen)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="S", choices=["S", "L", "L_4x", "tiny"])
    parser.add_argument("--batch_size", type=int, default=128, help="the batch to extrapolate to")
    parser.add_argument("--measure_batches", type=int, nargs=2, default=[2, 4],
                        help="the two batches measured (above 1: a compiled graph specialises batch 1)")
    parser.add_argument("--device", default="cpu", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="autocast dtype (fp32: none)")
    parser.add_argument("--grad_checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    small, large = args.measure_batches
    if not 0 < small < large:
        parser.error(f"--measure_batches must be two increasing positive batches, got {small} {large}")

    device = torch.device(args.device)
    model = build_random_model(args.model, device).train()
    model.transformer.grad_checkpointing = args.grad_checkpointing
    module = GeneratorLoss(model)
    if args.compile:
        module = torch.compile(module)
    amp = args.dtype == "bf16"
    book = model.autoenc.config.n_embed

    def step_bytes(B: int) -> int:
        indices = [torch.randint(0, book, (B, s, s), device=device) for s in model.scale_sizes]
        labels = torch.randint(0, model.config.num_classes, (B,), device=device)

        def forward():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                return module(indices, labels)[0]

        return saved_tensor_bytes(forward)[1]

    start = time.perf_counter()
    if args.compile:  # compile (and recompile for a second batch) outside the measurement
        step_bytes(small), step_bytes(large)
    measured = {B: step_bytes(B) for B in (small, large)}
    per_sample = (measured[large] - measured[small]) / (large - small)
    fixed = measured[small] - small * per_sample  # e.g. bf16 copies of the weights under autocast
    activations = fixed + args.batch_size * per_sample
    state = training_state_bytes(model)
    record = {
        "bench": "activation_memory", "model": args.model, "batch_size": args.batch_size, "dtype": args.dtype,
        "grad_checkpointing": args.grad_checkpointing, "compile": args.compile,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "measured_batches": [small, large], "per_sample_mib": round(per_sample / 2**20, 2),
        "fixed_mib": round(fixed / 2**20, 1), "activations_gib": round(activations / 2**30, 2),
        "training_state_gib": round(state / 2**30, 2),
        "activations_plus_state_gib": round((activations + state) / 2**30, 2),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
