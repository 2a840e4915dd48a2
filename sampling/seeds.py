"""One random stream per sample: sample i of a run with seed s draws everything (its random class,
its tokens) from a torch.Generator seeded with s * SEED_STRIDE + i. So a seed gives the same samples
whatever the batch size, the shard size or the number of processes, and any sample can be drawn
again alone (the figures' traces do)."""
import torch

# A prime larger than any sample count we use: two (seed, index) pairs with index < SEED_STRIDE never
# share a stream.
SEED_STRIDE = 1_000_003
MAX_SEED = 2**64 // SEED_STRIDE - 1  # torch seeds are 64-bit: seed * SEED_STRIDE + index stays below 2**64


def sample_seed(seed: int, index: int) -> int:
    return seed * SEED_STRIDE + index


def sample_generators(seed: int, indices, device) -> list[torch.Generator]:
    """One generator per sample, seeded from (seed, global index) only."""
    return [torch.Generator(device=device).manual_seed(sample_seed(seed, int(i))) for i in indices]
