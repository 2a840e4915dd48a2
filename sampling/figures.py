"""Figures of the sampling process: sample grids, the pyramid of decoded scales, the progressive
checkerboard fill (paper Figure 1), per-cell step and entropy maps (Figure 7) and the entropy
per step over a batch (Figure 6). numpy and PIL only.

Images are uint8 (B, H, W, 3) arrays; `to_uint8` of sampling.sample_io converts model output.
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from common.files import atomic_write
from sampling.sample_io import to_uint8

PAD = 2  # pixels between panels
KEYED_PAD = 8  # between panels with colour bars: the end values of neighbouring bars stay apart
BACKGROUND = 255
GREY = 128  # unsampled cells are blended towards this level
UNSAMPLED_BLEND = 0.6  # share of grey over an unsampled cell: dim enough to see the pattern
LINE_HEIGHT = 12  # pixels per line of text (PIL's default font is 11 high)
FONT_HEIGHT = 11
BAR_HEIGHT = 8
MIN_PANEL = 64  # smaller panels are enlarged (nearest) so that their titles and colour bars fit
# viridis at 0, 1/4, 1/2, 3/4, 1: perceptually ordered, readable in greyscale print.
VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def image_grid(images: np.ndarray, ncol: int | None = None, pad: int = PAD) -> np.ndarray:
    """(B, H, W, 3) uint8 -> one (rows*H, ncol*W, 3) image, row-major, white gaps."""
    B, H, W, _ = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(B)))
    nrow = int(np.ceil(B / ncol))
    out = np.full((nrow * (H + pad) - pad, ncol * (W + pad) - pad, 3), BACKGROUND, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        out[r * (H + pad):r * (H + pad) + H, c * (W + pad):c * (W + pad) + W] = img
    return out


@dataclass(frozen=True)
class ColourBar:
    """The key of a colour-coded panel column: the colours from `low` to `high`, both ends written
    in numbers. With `levels`, that many blocks (a discrete quantity such as a step number), else a
    continuous gradient."""

    low: float
    high: float
    unit: str = ""
    levels: int | None = None

    def colours(self, values) -> np.ndarray:
        """uint8 RGB of `values` on this bar's scale (values outside [low, high] take the end colours)."""
        span = self.high - self.low
        return colormap((np.asarray(values, dtype=np.float64) - self.low) / span if span else
                        np.zeros(np.shape(values)))

    def render(self, width: int) -> np.ndarray:
        """(BAR_HEIGHT + LINE_HEIGHT, width, 3) uint8: the bar, and its end values below it."""
        if self.levels:
            value = self.low + (self.high - self.low) * np.minimum(
                np.arange(width) * self.levels // width, self.levels - 1) / max(self.levels - 1, 1)
        else:
            value = np.linspace(self.low, self.high, width)
        bar = np.repeat(self.colours(value)[None], BAR_HEIGHT, axis=0)
        text = Image.new("RGB", (width, LINE_HEIGHT), (BACKGROUND,) * 3)
        draw, font = ImageDraw.Draw(text), ImageFont.load_default()
        number = "{:.0f}" if self.levels else "{:.3g}"
        draw.text((0, 0), number.format(self.low), fill=(0, 0, 0), font=font)
        if self.high != self.low:
            high = number.format(self.high) + (f" {self.unit}" if self.unit else "")
            draw.text((width - draw.textlength(high, font=font), 0), high, fill=(0, 0, 0), font=font)
        return np.concatenate([bar, np.asarray(text)], axis=0)


def _text_strip(width: int, lines: int, texts: list[tuple[int, str]]) -> np.ndarray:
    """A white strip `lines` text lines high with each text (a "\n" starts a new line) at its x."""
    strip = Image.new("RGB", (width, lines * LINE_HEIGHT + 2), (BACKGROUND,) * 3)
    draw, font = ImageDraw.Draw(strip), ImageFont.load_default()
    for x, text in texts:
        draw.multiline_text((x + 1, 1), text, fill=(0, 0, 0), font=font, spacing=LINE_HEIGHT - FONT_HEIGHT)
    return np.asarray(strip)


def panel_rows(rows: list[list[np.ndarray]], titles: list[str] | None = None, row_titles: list[str] | None = None,
               bars: list[ColourBar | None] | None = None, pad: int = PAD) -> np.ndarray:
    """Rows of equally sized (H, W, 3) panels side by side, with optional column titles on top (one
    per column; "\n" breaks a line), row titles on the left and colour bars under the columns
    that have one."""
    panels = np.stack([p for row in rows for p in row])
    if (titles or bars) and panels.shape[2] < MIN_PANEL:
        factor = -(-MIN_PANEL // panels.shape[2])
        panels = panels.repeat(factor, axis=1).repeat(factor, axis=2)
    columns, W = len(rows[0]), panels.shape[2]
    parts = [image_grid(panels, ncol=columns, pad=pad)]
    width = parts[0].shape[1]
    if titles:
        lines = max(t.count("\n") + 1 for t in titles)
        parts.insert(0, _text_strip(width, lines, [(i * (W + pad), t) for i, t in enumerate(titles)]))
    if bars:
        footer = np.full((pad + BAR_HEIGHT + LINE_HEIGHT, width, 3), BACKGROUND, dtype=np.uint8)
        for i, bar in enumerate(bars):
            if bar is not None:
                footer[pad:, i * (W + pad):i * (W + pad) + W] = bar.render(W)
        parts.append(footer)
    figure = np.concatenate(parts, axis=0)
    if not row_titles:
        return figure
    top = parts[0].shape[0] if titles else 0
    H = panels.shape[1]
    font = ImageFont.load_default()
    side = int(max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font) for t in row_titles)) + 2 * pad
    strip = Image.new("RGB", (side, figure.shape[0]), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(strip)
    for r, title in enumerate(row_titles):
        draw.text((pad, top + r * (H + pad) + (H - FONT_HEIGHT) // 2), title, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(strip), figure], axis=1)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (..., 3) on the viridis scale."""
    x = np.clip(values, 0, 1) * (len(VIRIDIS) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(VIRIDIS) - 2)
    t = (x - lo)[..., None]
    return np.round(VIRIDIS[lo] * (1 - t) + VIRIDIS[lo + 1] * t).astype(np.uint8)


def upsample_cells(grid: np.ndarray, size: int) -> np.ndarray:
    """(s, s, ...) per-cell values -> (size, size, ...) by repeating cells (size a multiple of s)."""
    rep = size // grid.shape[0]
    return grid.repeat(rep, axis=0).repeat(rep, axis=1)


def _resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Decoded (B, 3, h, w) -> (B, 3, size, size), nearest so that coarse scales show their cells."""
    return F.interpolate(images, size=(size, size), mode="nearest")


@torch.no_grad()
def decode_scales(autoencoder, tokens: list) -> list[torch.Tensor]:
    """Per scale the RGB decode (B, 3, s*stride, s*stride) of its code indices."""
    return [autoencoder.decode(autoencoder.lookup(t)) for t in tokens]


def class_titles(labels) -> list[str] | None:
    return None if labels is None else [f"class {int(c)}" for c in labels]


def pyramid_figure(autoencoder, tokens: list, img_size: int, labels=None) -> np.ndarray:
    """One row per sample (titled with its class when `labels` are given): the decoded image of every
    scale, smallest first, shown at full size."""
    decoded = [to_uint8(_resize_images(x, img_size)) for x in decode_scales(autoencoder, tokens)]
    sizes = [t.shape[-1] for t in tokens]
    rows = [[d[b] for d in decoded] for b in range(tokens[0].shape[0])]
    return panel_rows(rows, [f"{s}x{s}" for s in sizes], class_titles(labels))


@torch.no_grad()
def fill_frames(autoencoder, tokens: list, steps: list, img_size: int) -> list[np.ndarray]:
    """Per sampling step t, uint8 (B, img_size, img_size, 3): the scale being sampled, where the
    cells sampled up to step t show their codes and the others are not known yet - they show the
    previous scale's codes rescaled to this one (what the model conditions on), dimmed so that
    the checkerboard pattern of the filled cells stands out."""
    frames = []
    for k, (idx, step) in enumerate(zip(tokens, steps)):
        s = idx.shape[-1]
        codes = autoencoder.lookup(idx)  # (B, 8, s, s)
        context = autoencoder.rescale_latents(autoencoder.lookup(tokens[k - 1]), s) if k else torch.zeros_like(codes)
        for t in torch.unique(step).tolist():
            known = (step <= t)[:, None]  # (B, 1, s, s)
            image = to_uint8(_resize_images(autoencoder.decode(torch.where(known, codes, context)), img_size))
            unknown = upsample_cells((~known[:, 0]).permute(1, 2, 0).cpu().numpy(), img_size)  # (H, W, B)
            unknown = unknown.transpose(2, 0, 1)[..., None]
            dimmed = image * (1 - UNSAMPLED_BLEND) + GREY * UNSAMPLED_BLEND
            frames.append(np.where(unknown, np.round(dimmed), image).astype(np.uint8))
    return frames


def step_titles(steps: list) -> list[str]:
    """Per sampling step: its scale and its number within the scale, e.g. "8x8\nstep 2/4"."""
    titles = []
    for step in steps:
        s, count = step.shape[-1], len(torch.unique(step))
        titles += [f"{s}x{s}\nstep {j}/{count}" for j in range(1, count + 1)]
    return titles


def fill_figure(autoencoder, tokens: list, steps: list, img_size: int, labels=None) -> np.ndarray:
    """One row per sample (titled with its class when `labels` are given), one column per sampling
    step (paper Figure 1)."""
    frames = fill_frames(autoencoder, tokens, steps, img_size)
    rows = [[f[b] for f in frames] for b in range(tokens[0].shape[0])]
    return panel_rows(rows, step_titles(steps), class_titles(labels))


def entropy_bar(entropy: list) -> ColourBar:
    """The entropy maps' key: from the smallest to the largest entropy of any cell in the figure."""
    return ColourBar(min(float(e.min()) for e in entropy), max(float(e.max()) for e in entropy), "nats")


def step_bar(step: torch.Tensor) -> ColourBar:
    """A scale's step map key: its steps numbered from 1 within the scale."""
    count = len(torch.unique(step))
    return ColourBar(1, count, levels=count)


def step_entropy_figure(images: np.ndarray, steps: list, entropy: list, labels=None) -> np.ndarray:
    """One row per sample (titled with its class when `labels` are given): the image, then per scale
    the step at which each cell was sampled (numbered within the scale), then per scale the
    entropy of the distribution each cell was drawn from (paper Figure 7), each column with its
    colour bar. The entropy maps share one scale, the smallest to the largest entropy in the figure."""
    size = images.shape[1]
    step_bars, entropy_key = [step_bar(st) for st in steps], entropy_bar(entropy)
    rows = []
    for b in range(images.shape[0]):
        row = [images[b]]
        for st, bar in zip(steps, step_bars):
            within = torch.unique(st, return_inverse=True)[1][b] + 1  # (s, s) step number within the scale
            row.append(upsample_cells(bar.colours(within.cpu().numpy()), size))
        for e in entropy:
            row.append(upsample_cells(entropy_key.colours(e[b].float().cpu().numpy()), size))
        rows.append(row)
    sizes = [st.shape[-1] for st in steps]
    titles = ["sample"] + [f"steps\n{s}x{s}" for s in sizes] + [f"entropy\n{s}x{s}" for s in sizes]
    return panel_rows(rows, titles, class_titles(labels), [None] + step_bars + [entropy_key] * len(entropy),
                      pad=KEYED_PAD)


@dataclass
class EntropyStats:
    """Entropy of the cells sampled at each step, over all cells of all samples of a batch."""

    step: list[int]
    mean: list[float]
    q25: list[float]
    median: list[float]
    q75: list[float]
    scale_of_step: list[int]  # side length of the scale each step belongs to

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def entropy_per_step(steps: list, entropy: list) -> EntropyStats:
    """steps, entropy: per scale (B, s, s) from generate(return_trace=True)."""
    step = torch.cat([s.flatten() for s in steps])
    value = torch.cat([e.flatten().float() for e in entropy])
    scale = torch.cat([torch.full((s.numel(),), s.shape[-1]) for s in steps])
    stats = EntropyStats([], [], [], [], [], [])
    for t in torch.unique(step).tolist():
        v = value[step == t]
        q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75]))
        stats.step.append(int(t))
        stats.mean.append(float(v.mean()))
        stats.q25.append(float(q[0]))
        stats.median.append(float(q[1]))
        stats.q75.append(float(q[2]))
        stats.scale_of_step.append(int(scale[step == t][0]))
    return stats


# plot geometry (pixels)
PLOT_W, PLOT_H = 640, 400
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 60, 20, 30, 50
Y_TICKS = 5
HEADROOM = 1.05  # the y axis ends a little above the largest value
MEAN_COLOR, MEDIAN_COLOR, BAND_COLOR, AXIS_COLOR, SCALE_LINE = (31, 119, 180), (255, 127, 14), \
    (198, 219, 239), (0, 0, 0), (200, 200, 200)


def entropy_plot(stats: EntropyStats, title: str = "entropy per sampling step") -> Image.Image:
    """Mean (thick line with dots), median (thin line) and interquartile band of the entropy at each step (Figure 6);
    grey verticals separate the scales."""
    img = Image.new("RGB", (PLOT_W, PLOT_H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, x1, y0, y1 = MARGIN_L, PLOT_W - MARGIN_R, PLOT_H - MARGIN_B, MARGIN_T
    n = len(stats.step)
    top = max(max(stats.q75), max(stats.mean)) * HEADROOM or 1.0
    px = lambda i: x0 + (x1 - x0) * (i + 0.5) / n  # noqa: E731
    py = lambda v: y0 - (y0 - y1) * v / top  # noqa: E731

    for i in range(1, n):
        if stats.scale_of_step[i] != stats.scale_of_step[i - 1]:
            x = (px(i - 1) + px(i)) / 2
            draw.line([(x, y1), (x, y0)], fill=SCALE_LINE)
    band = [(px(i), py(v)) for i, v in enumerate(stats.q75)] + \
           [(px(i), py(v)) for i, v in reversed(list(enumerate(stats.q25)))]
    if n > 1:
        draw.polygon(band, fill=BAND_COLOR)
    else:
        draw.line(band, fill=BAND_COLOR, width=5)
    draw.line([(px(i), py(v)) for i, v in enumerate(stats.median)], fill=MEDIAN_COLOR, width=1)
    draw.line([(px(i), py(v)) for i, v in enumerate(stats.mean)], fill=MEAN_COLOR, width=2)
    for i, v in enumerate(stats.mean):
        draw.ellipse([px(i) - 3, py(v) - 3, px(i) + 3, py(v) + 3], fill=MEAN_COLOR)

    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill=AXIS_COLOR)
    for k in range(Y_TICKS + 1):
        v = top * k / Y_TICKS
        draw.line([(x0 - 4, py(v)), (x0, py(v))], fill=AXIS_COLOR)
        draw.text((4, py(v) - 6), f"{v:.2f}", fill=AXIS_COLOR, font=font)
    for i, t in enumerate(stats.step):
        draw.text((px(i) - 4, y0 + 6), str(t), fill=AXIS_COLOR, font=font)
    draw.text(((x0 + x1) / 2 - 40, y0 + 24), "sampling step", fill=AXIS_COLOR, font=font)
    draw.text((x0, 8), f"{title} (nats)", fill=AXIS_COLOR, font=font)
    legend = [("mean", MEAN_COLOR), ("median", MEDIAN_COLOR), ("25-75%", BAND_COLOR)]
    for j, (name, color) in enumerate(reversed(legend)):
        lx = x1 - 70 * (j + 1)
        ly = 8
        draw.rectangle([lx, ly + 3, lx + 12, ly + 9], fill=color)
        draw.text((lx + 16, ly), name, fill=AXIS_COLOR, font=font)
    return img


def save_png(array_or_image, path) -> None:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
