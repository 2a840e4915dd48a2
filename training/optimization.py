"""What updates the weights: the optimizer (AdamW or Adam, the published parameter groups), the loss
scaler of fp16 autocast, the learning-rate schedule, the EMA of the weights and the per-step options."""
from dataclasses import dataclass

import torch
import torch.nn as nn

from common.lr_schedule import LRSchedule
from training.config import TrainConfig
from training.ema import EMA


@dataclass(frozen=True)
class StepOptions:
    accum_iter: int = 1
    grad_clip: float | None = None  # None or 0: no clipping (the norm is still returned)
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: full precision
    compile: bool = False  # applied by wrap_for_training


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    ema: EMA | None
    step_options: StepOptions


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on >= 2-D weights only; biases and 1-D parameters (norms, empty tokens) get none."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas, device,
                    kind: str = "adamw") -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) or Adam (weight decay added to the gradient), as the published code."""
    optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[kind]
    return optimizer(param_groups(model, weight_decay), lr=lr, betas=tuple(betas),
                     fused=torch.device(device).type == "cuda")


def amp_dtype_for(precision: str, device) -> torch.dtype | None:
    """Autocast only on GPUs; the CPU trains in fp32."""
    if torch.device(device).type != "cuda" or precision == "fp32":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def build_optimization(config: TrainConfig, model: nn.Module, device: torch.device) -> Optimization:
    """The run's optimization, fresh (a resumed run restores its state: training/checkpoint.py), for the
    model already on `device` (the EMA copies its weights there)."""
    ema = EMA(model, config.ema_rate) if config.ema else None
    optimizer = build_optimizer(model, config.lr, config.weight_decay, config.betas, device, config.optimizer)
    amp_dtype = amp_dtype_for(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    options = StepOptions(config.grad_accum_steps, config.clip_grad, amp_dtype, config.compile)
    return Optimization(optimizer, scaler, LRSchedule.of(config), ema, options)
