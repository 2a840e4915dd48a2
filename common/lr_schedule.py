"""Learning rates: main.py's schedule over fractional epochs (linear warm-up, then constant, step or
cosine), and the cosine decay it shares with train_ae_codebook."""
import math
from dataclasses import dataclass, field

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    lr: float
    epochs: int
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    steps: tuple = field(default_factory=tuple)  # epochs at which the step schedule multiplies by gamma
    gamma: float = 0.1
    min_lr: float = 0.0

    @classmethod
    def of(cls, config) -> "LRSchedule":
        """The schedule of a TrainConfig whose lr is resolved (see TrainConfig.resolved_lr)."""
        return cls(config.lr, config.epochs, config.lr_schedule, config.warmup_epochs, tuple(config.lr_step_epochs),
                   config.lr_step_factor, config.min_lr)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.schedule!r} ({', '.join(SCHEDULES)})")
        if self.schedule == "cosine" and self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr:g} is above lr {self.lr:g}: the cosine schedule would climb "
                             f"from lr to min_lr; give a min_lr <= lr")

    def __call__(self, epoch: float) -> float:
        """Rate at `epoch` = epoch index + fraction of it done (called once per iteration)."""
        if epoch < self.warmup_epochs:
            return self.lr * epoch / self.warmup_epochs
        if self.schedule == "step":
            return self.lr * self.gamma ** sum(epoch >= s for s in self.steps)
        if self.schedule == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-12)
            return cosine_decay(self.lr, (epoch - self.warmup_epochs) / span, self.min_lr)
        return self.lr


def cosine_decay(lr: float, progress: float, min_lr: float = 0.0) -> float:
    """From `lr` at progress 0 down to `min_lr` at progress 1 along half a cosine; constant outside [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float):
    for group in optimizer.param_groups:
        group["lr"] = lr
