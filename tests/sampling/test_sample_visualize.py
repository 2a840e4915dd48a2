"""sampling.figures on a real trace of the tiny_2x model."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import load_model
from models.sampler import Sampler
from sampling import figures as visualize
from sampling.sample_io import to_uint8

STEPS = [1, 2, 4, 4]


@pytest.fixture(scope="module")
def trace(tiny_dir):
    model = load_model(tiny_dir)
    out = Sampler(model).generate(labels=torch.tensor([2, 7]), cfg=1.5, cfg_start_step=2, steps_per_scale=STEPS,
                                  temperature=1.0, generator=[torch.Generator().manual_seed(i) for i in range(2)],
                                  return_trace=True)
    return model, out


def test_image_grid_places_images_row_major():
    images = np.stack([np.full((3, 4, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)])
    grid = visualize.image_grid(images, ncol=3, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 2, 3)
    assert grid[0, 0, 0] == 10 and grid[0, 5, 0] == 20 and grid[4, 0, 0] == 40 and grid[4, 5, 0] == 50
    assert grid[4, 10, 0] == visualize.BACKGROUND and grid[3, 0, 0] == visualize.BACKGROUND


def test_the_colormap_ends_are_viridis_ends():
    assert visualize.colormap(np.array([0.0, 1.0])).tolist() == [[68, 1, 84], [253, 231, 37]]


def test_entropy_per_step_matches_a_direct_computation(trace):
    _, out = trace
    stats = visualize.entropy_per_step(out.steps, out.entropy)
    assert stats.step == list(range(sum(STEPS)))
    assert stats.scale_of_step == [1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8]
    steps = np.concatenate([s.numpy().ravel() for s in out.steps])
    values = np.concatenate([e.numpy().ravel() for e in out.entropy])
    for i, t in enumerate(stats.step):
        v = values[steps == t]
        assert stats.mean[i] == pytest.approx(v.mean(), rel=1e-5)
        assert [stats.q25[i], stats.median[i], stats.q75[i]] == pytest.approx(np.quantile(v, [0.25, 0.5, 0.75]),
                                                                             rel=1e-5)
    plot = visualize.entropy_plot(stats)
    assert plot.size == (visualize.PLOT_W, visualize.PLOT_H)
    assert len(np.unique(np.asarray(plot).reshape(-1, 3), axis=0)) > 3


def test_fill_frames_show_each_scale_filling_up(trace):
    model, out = trace
    ae = model.autoencoder
    frames = visualize.fill_frames(ae, out.tokens, out.steps, 32)
    assert len(frames) == sum(STEPS) and all(f.shape == (2, 32, 32, 3) for f in frames)
    last_step_of_scale = np.cumsum(STEPS) - 1
    with torch.no_grad():
        for k, t in enumerate(last_step_of_scale):
            whole = to_uint8(F.interpolate(ae.decode(ae.lookup(out.tokens[k])), size=(32, 32), mode="nearest"))
            assert np.array_equal(frames[t], whole), f"scale {k} complete after step {t}"
    # First step of the 8x8 scale: the cells not sampled yet are dimmed towards grey.
    t = int(last_step_of_scale[2]) + 1
    unknown = visualize.upsample_cells((out.steps[3][0] > t).numpy(), 32)
    lo = visualize.GREY * visualize.UNSAMPLED_BLEND
    hi = lo + 255 * (1 - visualize.UNSAMPLED_BLEND)
    assert unknown.mean() == pytest.approx(0.75)
    assert (frames[t][0][unknown] >= np.floor(lo)).all() and (frames[t][0][unknown] <= np.ceil(hi)).all()
    assert (frames[t][0][~unknown] < lo).any() or (frames[t][0][~unknown] > hi).any()


def test_step_map_colours_follow_the_sampling_order(trace):
    model, out = trace
    images = to_uint8(out.images)
    fig = visualize.step_entropy_figure(images, out.steps, out.entropy)
    panel, pad = 64, visualize.KEYED_PAD  # 32 px panels are enlarged to MIN_PANEL
    top = 2 * visualize.LINE_HEIGHT + 2  # two-line titles
    footer = pad + visualize.BAR_HEIGHT + visualize.LINE_HEIGHT  # the colour bars and their values
    assert fig.shape == (top + 2 * panel + pad + footer, 9 * panel + 8 * pad, 3)
    x0 = 4 * (panel + pad)  # the 8x8 step map of sample 0
    cell = panel // 8
    steps = out.steps[3][0]
    first, last = (steps == steps.min()).nonzero()[0].tolist(), (steps == steps.max()).nonzero()[0].tolist()
    pixel = lambda yx: fig[top + yx[0] * cell + 1, x0 + yx[1] * cell + 1].tolist()  # noqa: E731
    assert pixel(first) == visualize.VIRIDIS[0].tolist() and pixel(last) == visualize.VIRIDIS[-1].tolist()
    bar = fig[top + 2 * panel + 2 * pad:, x0:x0 + panel]
    assert np.array_equal(bar, visualize.ColourBar(1, STEPS[3], levels=STEPS[3]).render(panel))
    pyramid = visualize.pyramid_figure(model.autoencoder, out.tokens, 32)
    one_line = visualize.LINE_HEIGHT + 2
    assert pyramid.shape == (one_line + 2 * panel + visualize.PAD, 4 * panel + 3 * visualize.PAD, 3)


def test_entropy_maps_span_the_entropy_range_they_state(trace):
    """Fig. 7: every entropy cell is coloured on one scale from the smallest to the largest entropy of
    the figure, and the colour bar under each entropy map states those two numbers."""
    _, out = trace
    fig = visualize.step_entropy_figure(to_uint8(out.images), out.steps, out.entropy)
    low = min(float(e.min()) for e in out.entropy)
    high = max(float(e.max()) for e in out.entropy)
    panel, pad, top = 64, visualize.KEYED_PAD, 2 * visualize.LINE_HEIGHT + 2
    seen = []
    for k, entropy in enumerate(out.entropy):
        x0, s = (1 + len(STEPS) + k) * (panel + pad), entropy.shape[-1]
        cell = panel // s
        for b in range(len(entropy)):
            y0 = top + b * (panel + pad)
            shown = fig[y0 + cell // 2:y0 + panel:cell, x0 + cell // 2:x0 + panel:cell]  # (s, s, 3) cell centres
            expected = visualize.colormap((entropy[b].numpy().astype(np.float64) - low) / (high - low))
            assert np.array_equal(shown, expected), f"entropy map {s}x{s} of sample {b}"
            seen.append(shown.reshape(-1, 3))
        bar = fig[top + 2 * panel + 2 * pad:, x0:x0 + panel]
        assert np.array_equal(bar, visualize.ColourBar(low, high, "nats").render(panel)), f"bar {s}x{s}"
        assert bar[0, 0].tolist() == visualize.VIRIDIS[0].tolist()
        assert bar[0, -1].tolist() == visualize.VIRIDIS[-1].tolist()
    colours = {tuple(c) for c in np.concatenate(seen).tolist()}
    assert {tuple(visualize.VIRIDIS[0]), tuple(visualize.VIRIDIS[-1])} <= colours  # the whole range is used


def test_fill_columns_name_scale_and_step_and_rows_the_class(trace):
    model, out = trace
    assert visualize.step_titles(out.steps) == ["1x1\nstep 1/1", "2x2\nstep 1/2", "2x2\nstep 2/2"] + \
        [f"{s}x{s}\nstep {j}/4" for s in (4, 8) for j in range(1, 5)]
    bare = visualize.fill_figure(model.autoencoder, out.tokens, out.steps, 32)
    titled = visualize.fill_figure(model.autoencoder, out.tokens, out.steps, 32, labels=[2, 7])
    side = titled.shape[1] - bare.shape[1]
    assert bare.shape[1] == 11 * 64 + 10 * visualize.PAD and side > 0
    assert np.array_equal(titled[:, side:], bare)
    assert (titled[:, :side] < visualize.BACKGROUND).any()  # "class 2", "class 7" written on the left
