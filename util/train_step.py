"""One optimisation step of the generator, written to be fast on a GPU.

bf16 autocast on CUDA (fp32 on CPU), the forward and loss compiled as one graph with the
random block split drawn outside it (so it never recompiles), fused AdamW with weight decay
only on >= 2-D weights, gradient clipping. No host syncs: the loss comes back as a tensor.
"""
import contextlib

import torch

from models.generator import CheckerboardGenerator


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norms and other 1-D parameters are left alone."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


class TrainStep:
    def __init__(self, model: CheckerboardGenerator, lr: float, weight_decay: float, betas=(0.9, 0.95),
                 grad_clip: float = 0.0, bf16: bool = True, compile: bool = False, optimizer=None):
        self.model = model
        self.device = model.lm_head.weight.device
        self.grad_clip = grad_clip
        self.bf16 = bf16 and self.device.type == "cuda"
        self.optimizer = optimizer or torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                                                        fused=self.device.type == "cuda")
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.loss_fn = torch.compile(model.loss) if compile else model.loss
        self.encode_fn = torch.compile(model.autoenc.quantize_pyramid) if compile else \
            model.autoenc.quantize_pyramid

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    @torch.no_grad()
    def encode(self, images) -> list:
        """Per-scale code indices of a batch of images (training without a token cache)."""
        with self.autocast():
            return self.encode_fn(images, self.model.scale_sizes)[1]

    def __call__(self, indices: list, labels, accumulate: int = 1, step: bool = True):
        """Forward + backward of one (micro-)batch; `step=False` accumulates gradients only.
        Returns the loss and per-scale stats as tensors, and the gradient norm (or None)."""
        layout = self.model.training_layout(self.device)
        with self.autocast():
            loss, stats = self.loss_fn(indices, labels, layout=layout)
        (loss / accumulate).backward()
        grad_norm = None
        if step:
            if self.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), stats, grad_norm
