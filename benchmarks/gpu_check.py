"""Exactness on a GPU: the tiny_2x parity fixture in float32 (eager and compiled sampler) and the
deviation that bf16 introduces. One JSON line per check.

    python benchmarks/gpu_check.py --fixture tests/fixtures/tiny_2x
"""
import argparse
import json
from pathlib import Path

import torch

from models import load_model
from models.sampler import Sampler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    fixture = Path(args.fixture)
    settings = json.loads((fixture / "expected.json").read_text())
    expected = {k: v.to(args.device) for k, v in torch.load(fixture / "expected.pt", weights_only=True).items()}
    imgs, labels = expected["imgs"], expected["labels"]

    # cuDNN convolutions default to TF32 on Ampere and later; the float32 check needs float32.
    torch.backends.cudnn.allow_tf32 = False
    for dtype in (torch.float32, torch.bfloat16):
        model = load_model(fixture, device=args.device).to(dtype)
        with torch.no_grad():
            logits = model.teacher_forced_logits(imgs.to(dtype), labels, steps_per_scale=4).float()
        ref = expected["forward_logits"]
        record = {"check": "teacher_forced_logits", "dtype": str(dtype), "max_abs_err": (logits - ref).abs().max().item(),
                  "rel_err": ((logits - ref).norm() / ref.norm()).item()}
        print(json.dumps(record), flush=True)
        for name in ("sample_nocfg", "sample_cfg"):
            s = settings[name]
            for compile in (False, True):
                out = Sampler(model, compile=compile).generate(
                    labels=labels, cfg=s["cfg"], cfg_start_step=s["cfg_start_step"],
                    steps_per_scale=s["steps_per_scale"], temperature=0)
                same = [(out.tokens[i] == expected[f"{name}_tokens_{i}"]).float().mean().item()
                        for i in range(len(model.scale_sizes))]
                img_err = (out.images.float() - expected[f"{name}_img_{len(same) - 1}"]).abs().max().item()
                print(json.dumps({"check": name, "dtype": str(dtype), "compile": compile,
                                  "token_agreement_per_scale": same, "image_max_abs_err": img_err}), flush=True)


if __name__ == "__main__":
    main()
