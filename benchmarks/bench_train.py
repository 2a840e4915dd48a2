"""Training-step speed with random weights at the paper's shapes; one JSON line per setting.

    python benchmarks/bench_train.py --model S --batch_size 128 --device cuda --compile
    python benchmarks/bench_train.py --model S --batch_size 128 --device cuda --from_images
    python benchmarks/bench_train.py --model S --batch_size 128 --device cuda --compile --grad_checkpointing
    python benchmarks/bench_train.py --model tiny --batch_size 8 --device cpu

One step = `training.engine.train_step`, what main.py runs: teacher-forced forward with the
training regularisers under bf16 autocast (fp32 on CPU), loss, backward, gradient clipping,
fused AdamW. From cached tokens the batch is per-scale code indices; --from_images
encodes the images with the autoencoder first, as training without a cache does.
"""
import argparse
import json
import statistics

import torch

from benchmarks.bench_sample import time_call
from benchmarks.random_models import build_random_model
from training.engine import train_step, wrap_for_training
from training.optimization import StepOptions, amp_dtype_for, build_optimizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="S", choices=["S", "L", "L_4x", "tiny"])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--from_images", action="store_true")
    parser.add_argument("--grad_checkpointing", action="store_true")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    device = torch.device(args.device)
    model = build_random_model(args.model, device).train()
    model.transformer.grad_checkpointing = args.grad_checkpointing
    # The training loop's own pieces (training/engine.py), as main.py assembles them.
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01, betas=(0.9, 0.95), device=device)
    amp_dtype = amp_dtype_for("bf16", device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    options = StepOptions(grad_clip=3.0, amp_dtype=amp_dtype, compile=args.compile)
    module = wrap_for_training(model, device, distributed=False, use_compile=args.compile)
    B = args.batch_size
    labels = torch.randint(0, model.config.num_classes, (B,), device=device)
    size = model.config.img_size
    images = torch.rand(B, 3, size, size, device=device) * 2 - 1
    book = model.autoenc.config.n_embed
    indices = [torch.randint(0, book, (B, s, s), device=device) for s in model.scale_sizes]

    def run():
        tokens = indices
        if args.from_images:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                tokens = model.autoenc.encode_pyramid(images, model.scale_sizes)
        train_step(module, (tokens, labels), optimizer, scaler, options)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = time_call(run, device, args.warmup, args.repeats)
    median = statistics.median(times)
    record = {
        "bench": "train", "model": args.model, "batch_size": B, "from_images": args.from_images,
        "compile": args.compile, "grad_checkpointing": args.grad_checkpointing,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "median_s": round(median, 5), "images_per_s": round(B / median, 1), "min_s": round(min(times), 5),
        "max_s": round(max(times), 5), "repeats": len(times),
    }
    if device.type == "cuda":
        record["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
