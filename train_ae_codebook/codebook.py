"""Codebook training pieces: latent statistics, initialisation from them, dead-code
re-initialisation, VQ losses and usage measures."""
import math

import torch
import torch.nn.functional as F


class LatentStatistics:
    """Count, sum and sum of squares of latent vectors per group (a scale or a code), in float64:
    an ImageNet epoch adds ~1e8 vectors."""

    def __init__(self, groups: int, dim: int, device=None):
        self.count = torch.zeros(groups, dtype=torch.float64, device=device)
        self.total = torch.zeros(groups, dim, dtype=torch.float64, device=device)
        self.squares = torch.zeros(groups, dim, dtype=torch.float64, device=device)

    def add(self, groups, vectors):
        """groups (N,) int64, vectors (N, dim)."""
        v = vectors.detach().to(torch.float64)
        self.count.index_add_(0, groups, torch.ones_like(groups, dtype=torch.float64))
        self.total.index_add_(0, groups, v)
        self.squares.index_add_(0, groups, v * v)

    def mean_std(self):
        """(groups, dim) mean and standard deviation; rows of empty groups are 0."""
        n = self.count.clamp(min=1)[:, None]
        mean = self.total / n
        return mean, (self.squares / n - mean * mean).clamp(min=0).sqrt()

    def reset(self):
        for t in (self.count, self.total, self.squares):
            t.zero_()

    def state_dict(self) -> dict:
        return {"count": self.count, "total": self.total, "squares": self.squares}

    def load_state_dict(self, state: dict):
        for name, t in self.state_dict().items():
            if state[name].shape != t.shape:
                raise ValueError(f"latent statistics '{name}' have shape {list(state[name].shape)}, "
                                 f"expected {list(t.shape)}")
            t.copy_(state[name])


def flat_latents(z):
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*h*w, C)


def allocate_codes(counts, n_embed: int) -> list[int]:
    """Split n_embed codes over groups in proportion to `counts` (largest remainder)."""
    counts = [float(c) for c in counts]
    total = sum(counts)
    if total <= 0:
        raise ValueError("no latent statistics were gathered: cannot initialise the codebook")
    exact = [n_embed * c / total for c in counts]
    shares = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: n_embed - sum(shares)]:
        shares[i] += 1
    return shares


def initial_codebook(scale_stats: LatentStatistics, n_embed: int, generator: torch.Generator):
    """(n_embed, dim) codes drawn from each scale's diagonal Gaussian of latents, each scale
    getting codes in proportion to the latent vectors seen at it."""
    mean, std = (t.cpu().float() for t in scale_stats.mean_std())
    shares = allocate_codes(scale_stats.count.tolist(), n_embed)
    rows = [mean[g] + std[g] * torch.randn(k, mean.shape[1], generator=generator)
            for g, k in enumerate(shares) if k]
    return torch.cat(rows)  # (n_embed, dim)


def reinit_dead_codes(weight, code_stats: LatentStatistics, generator: torch.Generator, optimizer=None) -> int:
    """Codes no latent picked since the last call are redrawn from the Gaussian of the latents
    of a used code (chosen in proportion to its use), which splits the busiest clusters. Their
    Adam moments restart at zero. Returns how many codes were redrawn."""
    dead = (code_stats.count == 0).cpu()
    n_dead = int(dead.sum())
    if n_dead == 0 or n_dead == dead.numel():
        return 0
    mean, std = (t.cpu().float() for t in code_stats.mean_std())
    source = torch.multinomial(code_stats.count.cpu().float(), n_dead, replacement=True, generator=generator)
    new = mean[source] + std[source] * torch.randn(n_dead, mean.shape[1], generator=generator)
    dead = dead.to(weight.device)
    with torch.no_grad():
        weight[dead] = new.to(weight)
    state = optimizer.state.get(weight, {}) if optimizer is not None else {}
    for moment in ("exp_avg", "exp_avg_sq"):
        if moment in state:
            state[moment][dead] = 0
    return n_dead


def vq_losses(z, zq):
    """(codebook loss: codes move to the latents, commitment loss: latents move to the codes)."""
    return F.mse_loss(zq, z.detach()), F.mse_loss(z, zq.detach())


def perplexity(counts):
    """exp(entropy) of the code distribution given by `counts` (n_embed,); 0 counts add nothing."""
    p = counts / counts.sum().clamp(min=1)
    return torch.exp(torch.special.entr(p).sum())
