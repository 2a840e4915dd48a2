"""Sampling speed with random weights at the paper's shapes; one JSON line per setting.

    python benchmarks/bench_sample.py --model L --batch_size 1 64 --device cuda --compile
    python benchmarks/bench_sample.py --model tiny --device cpu --dtype fp32

Times one whole `generate` call (all steps, guidance, decode) with device events (CUDA) or a
host clock (CPU), after warm-up; reports the median of the repeats.
"""
import argparse
import json
import statistics
import time

import torch

from benchmarks.random_models import build_random_model
from models.sampler import Sampler
from sampling.config import DEFAULT_CFG_START_STEP


def time_call(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="L", choices=["S", "L", "L_4x", "tiny"])
    parser.add_argument("--batch_size", type=int, nargs="+", default=[1])
    parser.add_argument("--steps_per_scale", type=int, default=None, help="default: 4 (ratio 2), 8 (ratio 4)")
    parser.add_argument("--cfg", type=float, default=1.5)
    parser.add_argument("--cfg_start_step", type=int, default=DEFAULT_CFG_START_STEP)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--compile", action="store_true",
                        help="compiled steps; on a GPU the whole generation as one CUDA graph per batch shape")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = build_random_model(args.model, device, dtype)
    steps = args.steps_per_scale or (8 if args.model == "L_4x" else 4)
    sampler = Sampler(model, compile=args.compile)
    n_steps = len(sampler.schedule(steps).block_bounds)
    for batch in args.batch_size:
        labels = torch.arange(batch, device=device) % model.config.num_classes
        gen = torch.Generator(device=device).manual_seed(0)

        def run():
            sampler.generate(labels=labels, cfg=args.cfg, cfg_start_step=args.cfg_start_step, steps_per_scale=steps,
                             temperature=1.0, generator=gen)

        times = time_call(run, device, args.warmup, args.repeats)
        median = statistics.median(times)
        # The decoder's share: decode alone, the same way generate does it.
        seq_idx = torch.randint(0, model.autoenc.config.n_embed, (batch, model.num_tokens), device=device)
        decode_times = time_call(lambda: sampler.decode_fn(model, seq_idx), device, args.warmup, args.repeats)
        record = {
            "bench": "sample", "model": args.model, "batch_size": batch, "steps": n_steps, "cfg": args.cfg,
            "dtype": args.dtype, "compile": args.compile, "device": torch.cuda.get_device_name(device)
            if device.type == "cuda" else "cpu", "median_s": round(median, 5),
            "s_per_image": round(median / batch, 5), "images_per_s": round(batch / median, 2),
            "min_s": round(min(times), 5), "max_s": round(max(times), 5), "repeats": len(times),
            "decode_median_s": round(statistics.median(decode_times), 5),
        }
        if device.type == "cuda":
            record["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
