"""Block layouts built on the device: the same splits as the host rules, training's random split with
its exact distribution, and nothing kept per split."""
import itertools
import math
from collections import Counter
from fractions import Fraction

import pytest
import torch

from models import load_model
from models.checkerboard import block_sizes, checkerboard_order, random_block_probabilities, split_sizes
from models.layout import SequenceLayout, blockwise_causal_mask

from model_state import held_bytes

DRAWS = 20_000


def reference_layout(scale_sizes: list[int], blocks: list[int], merges: list[bool], n_cls: int):
    """Step, t' (None: "empty") and mask of a split, token by token from the host rule `split_sizes`."""
    step, prev, offset, first = [], [], 0, 0
    for s, b, merge in zip(scale_sizes, blocks, merges):
        start = 0
        for j, size in enumerate(split_sizes(s * s, b, merge)):
            for r in range(start, start + size):
                step.append(first + j)
                prev.append(None if j == 0 or r - start >= b else offset + r - b)
            start += size
        first += len(split_sizes(s * s, b, merge))
        offset += s * s
    seq_block = [0] * n_cls + [t + n_cls for t in step]
    mask = [[seq_block[j] <= seq_block[i] for j in range(len(seq_block))] for i in range(len(seq_block))]
    return step, prev, mask


def check_against_reference(sequence: SequenceLayout, blocks, merges):
    layout = sequence.layout(torch.tensor(blocks), torch.tensor(merges))
    step, prev, mask = reference_layout(sequence.scale_sizes, blocks, merges, sequence.n_cls)
    assert layout.block.tolist() == step
    assert layout.has_prev.tolist() == [p is not None for p in prev]
    assert layout.prev_index.tolist() == [0 if p is None else p for p in prev]
    pos_id = sequence.pos_id.tolist()
    assert layout.prev_pos_id.tolist() == [0 if p is None else pos_id[p] for p in prev]
    head = [sequence.class_pos_id] * sequence.n_cls
    assert layout.rot_prev.tolist() == head + [sequence.empty_pos_id if p is None else pos_id[p] for p in prev]
    assert layout.mask.tolist() == mask


@pytest.mark.parametrize("scale_sizes,n_cls", [([1, 2, 4, 8], 1), ([1, 2, 3, 5], 0), ([6], 1)])
def test_device_layouts_follow_the_host_rule(scale_sizes, n_cls):
    sequence = SequenceLayout(scale_sizes, n_cls, default_steps=4)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        blocks = [int(torch.randint(1, s * s + 1, (), generator=g)) for s in scale_sizes]
        merges = [bool(torch.rand((), generator=g) < 0.5) for _ in scale_sizes]
        check_against_reference(sequence, blocks, merges)


def test_inference_keeps_a_remainder_as_its_own_block():
    """Sampling never merges: 3 steps on a 5x5 scale are blocks of 8, 8, 8 and 1, and the last
    token reads the token 8 places earlier as t'."""
    sequence = SequenceLayout([1, 2, 5], 1, default_steps=4)
    for steps in [(1, 1, 3), (4, 3, 3), (4, 4, 4), (1, 3, 2)]:
        layout = sequence.inference_layout(steps)
        counts = Counter(layout.block.tolist())
        expected = [size for s, p in zip([1, 2, 5], steps) for size in block_sizes(s * s, p)]
        assert [counts[t] for t in range(len(counts))] == expected
    layout = sequence.inference_layout((1, 1, 3))
    assert layout.has_prev[-1] and layout.prev_index[-1] == 5 + 24 - 8
    default = sequence.inference_layout()
    assert torch.equal(default.block, sequence.inference_layout((4, 4, 4)).block)


def test_blockwise_causal_mask_reads_like_its_rule():
    """A token attends to every token of its own block and of all earlier blocks."""
    block = torch.tensor([0, 1, 1, 2])
    assert blockwise_causal_mask(block).int().tolist() == [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_sequence_and_grids_gather_both_ways():
    sequence = SequenceLayout([1, 2, 3], 1, default_steps=4)
    grids = [torch.arange(s * s).view(1, s, s) + 100 * k for k, s in enumerate([1, 2, 3])]
    seq = sequence.to_sequence(grids)
    order = [checkerboard_order(s) + 100 * k for k, s in enumerate([1, 2, 3])]
    assert seq[0].tolist() == torch.cat(order).tolist()
    for k, grid in enumerate(grids):
        assert torch.equal(sequence.to_grid(seq, k), grid)
        assert torch.equal(sequence.scale_to_sequence(grid, k), seq[:, sequence.scale_bounds[k][0]:
                                                                          sequence.scale_bounds[k][1]])


def literal_rule_distribution(n: int) -> dict:
    """The random block rule as written, each (x, coin) pair equally likely, a redrawn pair
    dropped: the exact distribution, counted pair by pair."""
    m = math.isqrt(n)
    outcomes = []
    for x, heads in itertools.product(range(1, m + 1), (True, False)):
        if heads:
            outcomes.append(x)
        elif not (x == m and n % m == 0):
            outcomes.append(n // x)
    return {b: Fraction(c, len(outcomes)) for b, c in Counter(outcomes).items()}


@pytest.mark.parametrize("n", [1, 2, 4, 12, 16, 25, 64, 256])
def test_random_block_table_is_the_exact_rule(n):
    expected = literal_rule_distribution(n)
    got = random_block_probabilities(n)
    assert {b + 1: p for b, p in enumerate(got) if p} == expected


@pytest.fixture(scope="module")
def drawn(tiny_dir):
    """20,000 training layouts of the tiny_2x model: memory held after 100 and after all, and each
    draw's block size and merge decision per scale."""
    model = load_model(tiny_dir).train()
    torch.manual_seed(0)
    sequence = model.sequence
    has_prev, held = [], {}
    for i in range(DRAWS):
        has_prev.append(model.training_layout().has_prev)
        if i + 1 in (100, DRAWS):
            held[i + 1] = held_bytes(model)
    has_prev = torch.stack(has_prev)  # (draws, N)
    blocks, merged = [], []
    for (lo, hi), s in zip(sequence.scale_bounds, model.scale_sizes):
        reads = has_prev[:, lo:hi]
        # The block size is the rank of the first token with a t' (the whole scale when none has
        # one); a merged remainder is a token past the first block that reads "empty".
        rank = torch.arange(s * s)
        first = torch.where(reads, rank, s * s).min(1).values
        blocks.append(first)
        merged.append(((rank >= first[:, None]) & ~reads).any(1))
    return model, held, blocks, merged


def test_memory_held_does_not_grow_with_training_layouts(drawn):
    _, held, _, _ = drawn
    assert held[DRAWS] == held[100]


def test_random_block_sizes_follow_the_rule(drawn):
    model, _, blocks, _ = drawn
    for s, drawn_blocks in zip(model.scale_sizes, blocks):
        expected = literal_rule_distribution(s * s)
        counts = Counter(drawn_blocks.tolist())
        assert set(counts) <= set(expected), s
        for b, p in expected.items():
            # 5 standard deviations of a frequency from 20,000 draws at most
            assert abs(counts[b] / DRAWS - float(p)) < 5 * math.sqrt(float(p) * (1 - float(p)) / DRAWS) + 1e-9, (s, b)


def test_remainders_join_the_last_block_half_the_time(drawn):
    model, _, blocks, merged = drawn
    for s, b, m in zip(model.scale_sizes, blocks, merged):
        with_remainder = (s * s) % b > 0
        assert not m[~with_remainder].any()
        if with_remainder.sum() > 1000:
            share = m[with_remainder].float().mean().item()
            assert abs(share - 0.5) < 5 * math.sqrt(0.25 / with_remainder.sum().item()), (s, share)


def test_layout_of_the_default_steps_in_training_without_random_blocks(tiny_dir):
    model = load_model(tiny_dir).train()
    model.config.random_block_size = False
    torch.manual_seed(0)
    for _ in range(20):
        layout = model.training_layout()
        assert torch.equal(layout.has_prev, model.layout().has_prev)  # 8 steps: no remainder in 1-2-4-8
