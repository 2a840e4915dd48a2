"""The compiled sampler (`Sampler(model, compile=True)`, main_sample.py --compile) on a CPU: the same
tokens and images as eager on a parity fixture, and no more compilations than its static shapes need
across two steps-per-scale settings.

tiny_single, not tiny_2x: Inductor compiles C++ kernels for each graph, tens of seconds per graph on
a loaded 2-core machine with a cold cache, and tiny_2x needs 13 graphs for these two settings (four
scales: four sources graphs and seven block sizes) where tiny_single needs 5."""
import pytest
import torch
from torch._dynamo.utils import counters

from models import load_model
from models.sampler import Sampler

SETTINGS = (1, 2)  # steps per scale: one block of 64 cells, then two of 32
# Measured on the 2-core CPU (2026-12-06, torch 2.14.1): images within 6.0e-6 and 7.8e-6 of eager for
# steps 1 and 2 (tiny_2x: 5.5e-6, 6.6e-6), from Inductor's fused kernels summing in another order;
# the parity fixtures' own tolerance is 1e-4.
IMAGE_TOLERANCE = 1e-4


def generate(sampler, steps):
    return sampler.generate(labels=torch.tensor([1, 7]), cfg=1.5, cfg_start_step=0, temperature=1.0,
                            steps_per_scale=steps, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def runs(fixtures_dir):
    """Eager and compiled draws of each setting, each compiled setting drawn twice, and the number
    of graphs compiled by the first round and by the second."""
    model = load_model(fixtures_dir / "tiny_single")
    eager, compiled = Sampler(model), Sampler(model, compile=True)
    draws, graphs = {}, []
    threads = torch.get_num_threads()
    # Inductor's kernels (and its cache key) depend on the thread count: one, whatever ran before
    torch.set_num_threads(1)
    try:
        for _ in range(2):
            before = counters["stats"]["unique_graphs"]
            for steps in SETTINGS:
                draws[steps] = generate(eager, steps), generate(compiled, steps)
            graphs.append(counters["stats"]["unique_graphs"] - before)
    finally:
        torch.set_num_threads(threads)
    return compiled, draws, graphs


@pytest.mark.parametrize("steps", SETTINGS)
def test_compiled_draws_the_eager_tokens_and_images(runs, steps):
    _, draws, _ = runs
    eager, compiled = draws[steps]
    assert len(eager.tokens) == len(compiled.tokens) == 1
    assert torch.equal(eager.tokens[0], compiled.tokens[0])
    assert eager.images.shape == compiled.images.shape == (2, 3, 32, 32)
    assert (eager.images - compiled.images).abs().max() <= IMAGE_TOLERANCE
    assert not torch.equal(draws[1][0].tokens[0], draws[2][0].tokens[0])  # the settings draw differently


def test_compilations_are_one_per_static_shape(runs):
    """Static shapes (dynamic=False): the class prefill, the decoder and the sources of the one scale
    compile once each, the block step once per block size (64, then 32); a setting drawn again
    compiles nothing."""
    compiled, _, graphs = runs
    block_sizes = {hi - lo for steps in SETTINGS for lo, hi in compiled.schedule(steps).block_bounds}
    assert block_sizes == {64, 32}
    assert graphs == [3 + len(block_sizes), 0]
