import math

import pytest
import torch

from models.checkerboard import block_sizes, checkerboard_order, checkerboard_rank, scale_sizes


def test_rank_2x2_visits_tl_br_tr_bl():
    order = checkerboard_order(2).tolist()
    assert [(i % 2, i // 2) for i in order] == [(0, 0), (1, 1), (1, 0), (0, 1)]


def test_rank_is_recursive_round_robin_over_quadrants():
    r4 = checkerboard_rank(4)
    r2 = checkerboard_rank(2)
    # Each quadrant, read alone, follows the 2x2 order; quadrants are interleaved TL, BR, TR, BL.
    for q, (y, x) in enumerate([(0, 0), (2, 2), (0, 2), (2, 0)]):
        quad = r4[y:y + 2, x:x + 2]
        assert torch.equal(quad % 4, torch.full_like(quad, q))
        assert torch.equal(quad // 4, r2)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8, 11, 16])
def test_rank_is_a_permutation(n):
    assert sorted(checkerboard_rank(n).flatten().tolist()) == list(range(n * n))


@pytest.mark.parametrize("n", [3, 5, 6, 11])
def test_non_power_of_two_keeps_top_left_window_order(n):
    p = 1 << (n - 1).bit_length()
    big = checkerboard_rank(p)[:n, :n].flatten()
    small = checkerboard_rank(n).flatten()
    assert torch.equal(torch.argsort(big), torch.argsort(small))


@pytest.mark.parametrize("ratio,expected", [
    (2, [1, 2, 4, 8, 16]), (4, [1, 4, 16]), (3, [1, 2, 5, 16]), (math.sqrt(2), [1, 2, 3, 4, 6, 8, 11, 16]),
])
def test_scale_sizes_shrink_by_the_ratio(ratio, expected):
    assert scale_sizes(16, ratio, 1) == expected


def test_a_single_scale_is_the_image_size():
    assert scale_sizes(16, 2, 16) == [16]


def test_zero_size_scale_is_a_config_error():
    with pytest.raises(ValueError, match="zero-size scale"):
        scale_sizes(16, 8, 1)
    for ratio in (1, math.inf, math.nan):
        with pytest.raises(ValueError, match="scale_ratio must be a finite number > 1"):
            scale_sizes(16, ratio, 1)


def test_block_sizes():
    assert block_sizes(25, 3) == [8, 8, 8, 1]
    assert block_sizes(1, 4) == [1]
    assert block_sizes(4, 4) == [1, 1, 1, 1]
    assert block_sizes(256, 4) == [64] * 4
