"""What a person reads of a guidance sweep's rows (sweep/results.py): the best guidance per setting
as a table, and the paper's plots.

Files in the sweep folder, each rewritten whole and atomically from the full row list:
  best_guidance.md, .csv          per setting: the best guidance, its metrics and the 2% rule's IS
  fid_vs_is.png                   FID against IS over guidance, one line per setting (Fig. 4a)
  by_steps_per_scale.png          lowest FID, and near-best IS with min-max bars, by steps per scale
  by_total_steps.png              the same by total sampling steps (Fig. 5)
"""
from numbers import Real
from pathlib import Path

from common.files import atomic_write, atomic_write_text
from evaluation.features import metric_key, metric_label
from sweep.results import (NEAR_BEST, SETTING_COLUMNS, best_per_setting, checked_rows, csv_text, group,
                           values_of)

LINE_COLUMNS = ("checkpoint", "ratio", "cfg_start_step", "temperature", "num_samples")  # one Fig. 5 line each
BEST_MD, BEST_CSV = "best_guidance.md", "best_guidance.csv"
FID_VS_IS, BY_STEPS_PER_SCALE, BY_TOTAL_STEPS = "fid_vs_is.png", "by_steps_per_scale.png", "by_total_steps.png"
FIGURE_DPI = 120
DODGE = 0.04  # octaves between the error bars of neighbouring lines
FEATURE_NAMES = {"inception": "Inception features (ADM)", "digits": "digits-classifier features"}


# ---------------------------------------------------------------- the best-guidance table


def _cell(value, digits):
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def best_table_markdown(table, features: str, tolerance: float = NEAR_BEST) -> str:
    label = lambda m: metric_label(features, m)  # noqa: E731
    heads = [("checkpoint", "checkpoint", 0), ("ratio", "ratio", 0), ("steps_per_scale", "steps/scale", 0),
             ("total_steps", "total steps", 0), ("cfg_start_step", "cfg start", 0),
             ("temperature", "temperature", 2), ("num_samples", "n", 0), ("runs", "runs", 0),
             ("best_cfg", "best cfg", 2)]
    heads += [(metric_key(features, m), label(m), 3 if m in ("precision", "recall") else 2)
              for m in ("fid", "sfid", "is", "precision", "recall")]
    is_ = metric_key(features, "is")
    heads += [("near_best_runs", "near-best runs", 0), ("near_best_cfgs", "near-best cfgs", 0),
              (f"{is_}_near_best_mean", f"{label('is')} mean", 2), (f"{is_}_near_best_min", f"{label('is')} min", 2),
              (f"{is_}_near_best_max", f"{label('is')} max", 2)]
    lines = [f"Best guidance per setting (lowest {label('fid')}; metrics on {FEATURE_NAMES[features]}). "
             f"Near-best: the runs whose {label('fid')} is within {tolerance:.0%} of the setting's lowest.", "",
             "| " + " | ".join(h for _, h, _ in heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(_cell(row[k], d) for k, _, d in heads) + " |" for row in table]
    return "\n".join(lines) + "\n"


def write_best_table(folder, rows, features: str, tolerance: float = NEAR_BEST) -> list:
    table = best_per_setting(rows, features, tolerance)
    folder = Path(folder)
    columns = list(table[0]) if table else list(SETTING_COLUMNS)
    return [atomic_write_text(folder / BEST_MD, best_table_markdown(table, features, tolerance)),
            atomic_write_text(folder / BEST_CSV, csv_text(table, columns))]



# ---------------------------------------------------------------- plots


def _figure(panels, width=6.4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Figure and its Agg canvas directly: no pyplot, so no global backend or figure state
    figure = Figure(figsize=(width * panels, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, panels, i + 1) for i in range(panels)]


def _save(figure, path) -> Path:
    return atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=FIGURE_DPI))


def _name(checkpoint) -> str:
    return Path(str(checkpoint)).name or str(checkpoint)


def _varying(keys, columns):
    return [i for i, c in enumerate(columns) if len({k[i] for k in keys}) > 1]


def _line_label(key, columns, varying) -> str:
    parts = {c: v for c, v in zip(columns, key)}
    ratio = "single scale" if str(parts["ratio"]) == "single" else f"ratio {parts['ratio']}"
    label = f"{_name(parts['checkpoint'])}, {ratio}"
    for i in varying:
        if columns[i] not in ("checkpoint", "ratio"):
            label += f", {columns[i]} {key[i]}"
    return label


LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")


def plot_fid_vs_is(rows, path, features: str) -> Path:
    """Fig. 4a: FID against IS over the guidance weights, one line per setting (colour: steps per
    scale; line style and marker: checkpoint/ratio), the lowest FID of each starred, the smallest and
    largest weight and the best one written beside their points."""
    from matplotlib import colormaps

    fid, is_ = metric_key(features, "fid"), metric_key(features, "is")
    figure, (ax,) = _figure(1, width=9.6)
    settings = group(checked_rows(rows, features), SETTING_COLUMNS)
    steps = list(dict.fromkeys(runs[0]["steps_per_scale"] for runs in settings.values()))
    colours = colormaps["viridis"].resampled(max(len(steps), 2))
    line_keys = list(dict.fromkeys(values_of(runs[0], LINE_COLUMNS) for runs in settings.values()))
    varying = _varying(line_keys, LINE_COLUMNS)
    for runs in settings.values():
        runs = sorted(runs, key=lambda r: r["cfg"])
        first = runs[0]
        style = line_keys.index(values_of(first, LINE_COLUMNS))
        colour = colours(steps.index(first["steps_per_scale"]) / max(len(steps) - 1, 1) * 0.9)
        label = (f"{_line_label(values_of(first, LINE_COLUMNS), LINE_COLUMNS, varying)}: "
                 f"steps/scale {first['steps_per_scale']} ({first['total_steps']} steps in all)")
        ax.plot([r[is_] for r in runs], [r[fid] for r in runs], linestyle=LINE_STYLES[style % len(LINE_STYLES)],
                marker=MARKERS[style % len(MARKERS)], markersize=4, color=colour, label=label)
        best = min(runs, key=lambda r: r[fid])
        ax.plot(best[is_], best[fid], "*", markersize=13, color=colour)
        for r in {id(x): x for x in (runs[0], runs[-1], best)}.values():
            ax.annotate(f"cfg {r['cfg']:g}", (r[is_], r[fid]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=colour)
    ax.set_xlabel(f"{metric_label(features, 'is')} (higher is better)")
    ax.set_ylabel(f"{metric_label(features, 'fid')} (lower is better)")
    ax.set_title(f"{metric_label(features, 'fid')} against {metric_label(features, 'is')} over guidance "
                 f"(star: lowest {metric_label(features, 'fid')} of a setting)\n{FEATURE_NAMES[features]}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(figure, path)


def plot_by_steps(rows, path, features: str, x: str = "steps_per_scale", tolerance: float = NEAR_BEST) -> Path:
    """Fig. 5: by `x` (steps_per_scale or total_steps), one line per checkpoint/ratio (and any other
    setting column that varies): each setting's lowest FID, and the mean IS of its near-best runs with
    their min and max as error bars. Per-scale step lists have no place on a steps-per-scale axis and
    are left out of that plot."""
    fid, is_ = metric_key(features, "fid"), metric_key(features, "is")
    figure, (ax_fid, ax_is) = _figure(2)
    table = [r for r in best_per_setting(rows, features, tolerance) if isinstance(r[x], Real)]
    lines = group(table, LINE_COLUMNS)
    varying = _varying(list(lines), LINE_COLUMNS)
    ticks = sorted({r[x] for r in table})
    for index, (key, points) in enumerate(lines.items()):
        points = sorted(points, key=lambda r: r[x])
        xs = [p[x] for p in points]
        label = _line_label(key, LINE_COLUMNS, varying)
        (line,) = ax_fid.plot(xs, [p[fid] for p in points], "o-", label=label)
        means = [p[f"{is_}_near_best_mean"] for p in points]
        bars = [[m - p[f"{is_}_near_best_min"] for m, p in zip(means, points)],
                [p[f"{is_}_near_best_max"] - m for m, p in zip(means, points)]]
        # side by side, so that the bars of several lines at one x stay apart (the axis is logarithmic)
        dodged = [v * 2 ** (DODGE * (index - (len(lines) - 1) / 2)) for v in xs]
        ax_is.errorbar(dodged, means, yerr=bars, fmt="o-", capsize=4, color=line.get_color(), label=label)
    axis = "steps per scale" if x == "steps_per_scale" else "total sampling steps"
    for ax in (ax_fid, ax_is):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_fid.set_ylabel(f"lowest {metric_label(features, 'fid')} over guidance (lower is better)")
    ax_fid.set_title(f"{metric_label(features, 'fid')} by {axis}", fontsize=10)
    ax_is.set_ylabel(f"{metric_label(features, 'is')} (higher is better)")
    ax_is.set_title(f"{metric_label(features, 'is')} of the runs within {tolerance:.0%} of the lowest "
                    f"{metric_label(features, 'fid')}\n(mean; bars: min and max)", fontsize=10)
    figure.suptitle(FEATURE_NAMES[features], fontsize=9)
    return _save(figure, path)


def write_report(folder, rows, features: str, tolerance: float = NEAR_BEST) -> list:
    """Every table and plot of the rows, in `folder` (what a sweep calls after each point)."""
    folder = Path(folder)
    rows = checked_rows(rows, features)
    if not rows:
        return []
    return [*write_best_table(folder, rows, features, tolerance),
            plot_fid_vs_is(rows, folder / FID_VS_IS, features),
            plot_by_steps(rows, folder / BY_STEPS_PER_SCALE, features, "steps_per_scale", tolerance),
            plot_by_steps(rows, folder / BY_TOTAL_STEPS, features, "total_steps", tolerance)]
