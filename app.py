"""A local web app to sample a model interactively: classes, guidance, steps per scale, temperature,
seed and count in; the samples, the checkerboard filling in step by step, the per-cell step and
entropy maps and the time taken out.

    python app.py                                                   # then open http://127.0.0.1:7860
    python app.py --checkpoint pretrained_models/checkerboard-L-4x --port 7861

With no --checkpoint it shows the published L-2x if pretrained_models/ holds it, else the digits
model `python demo.py` trained. The model is loaded once and one Sampler serves every request (on a
GPU compiled, one CUDA graph per count and setting). The library is interactive/; this script parses
the command line and lays out the page.
"""
import sys

import gradio as gr

from common.cli import one_line_errors
from common.config import ArgumentParser, add_arguments, command_line, given_options, make
from common.distributed import resolve_device
from interactive.config import AppConfig, choose_model
from interactive.session import MAX_COUNT, Session
from models import load_model
from sampling.config import DEFAULT_CFG, SampleConfig

PROG = "app.py"
MAX_CFG, MAX_TEMPERATURE = 10.0, 2.0  # the sliders' ends


def get_args_parser() -> ArgumentParser:
    return add_arguments(ArgumentParser(PROG, description=__doc__.split("\n\n")[0]), AppConfig)


def build_ui(session: Session, title: str) -> gr.Blocks:
    model = session.model
    conditional = session.class_names is not None
    defaults = SampleConfig()
    steps = model.steps_per_scale_list()
    steps_text = str(steps[0]) if len(set(steps)) == 1 else ",".join(map(str, steps))

    def generate(classes, count, cfg, cfg_start_step, steps_per_scale, temperature, seed):
        try:
            drawing = session.draw(session.plan(classes, count, cfg, cfg_start_step, steps_per_scale, temperature,
                                                seed))
        except ValueError as e:  # a setting out of range: its one line, shown on the page
            raise gr.Error(str(e)) from None
        last = len(drawing.frames)
        return (list(zip(drawing.images, drawing.captions)),
                gr.Slider(minimum=1, maximum=last, value=last, step=1, interactive=last > 1),
                gr.Image(drawing.frames[-1], label=drawing.frame_titles[-1]),
                drawing.step_maps, drawing.summary(model.device), (drawing.frames, drawing.frame_titles))

    def show_step(step, fill):
        if not fill:
            return gr.Image()
        frames, titles = fill
        i = min(max(int(step), 1), len(frames)) - 1
        return gr.Image(frames[i], label=titles[i])

    with gr.Blocks(title="checkerboard-gen", analytics_enabled=False) as ui:
        gr.Markdown(f"## checkerboard-gen: {title}")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                classes = gr.Dropdown(choices=[(name, i) for i, name in enumerate(session.class_names or [])],
                                      multiselect=True, label="classes (cycled over the samples; none: random)",
                                      visible=conditional, elem_id="classes")
                count = gr.Slider(1, MAX_COUNT, value=4, step=1, label="count", elem_id="count")
                cfg = gr.Slider(0, MAX_CFG, value=DEFAULT_CFG if conditional else 0.0, step=0.05,
                                label="guidance weight (0: none)", visible=conditional, elem_id="cfg")
                cfg_start_step = gr.Number(defaults.cfg_start_step, precision=0, minimum=0,
                                           label="first guided step (counted over all scales)", visible=conditional,
                                           elem_id="cfg_start_step")
                steps_per_scale = gr.Textbox(steps_text, label="steps per scale (one value, or one per scale: "
                                                               f"{len(steps)} values)", elem_id="steps_per_scale")
                temperature = gr.Slider(0, MAX_TEMPERATURE, value=defaults.temperature, step=0.05,
                                        label="temperature (0: argmax)", elem_id="temperature")
                seed = gr.Number(defaults.seed, precision=0, minimum=0, label="seed", elem_id="seed")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="summary")
                gallery = gr.Gallery(label="samples", columns=min(4, MAX_COUNT), format="png", elem_id="samples")
                step = gr.Slider(1, 2, value=1, step=1, label="sampling step: the cells drawn so far (the others "
                                                              "dimmed, showing the scale before)", elem_id="step")
                fill = gr.Image(label="the checkerboard filling in", format="png", elem_id="fill")
                # its own column titles would hide under a floating label: the caption goes above it
                gr.Markdown("Per sample and scale: the step each cell was drawn at, and the entropy of the "
                            "distribution it was drawn from")
                step_maps = gr.Image(show_label=False, format="png", elem_id="step_maps")
        frames = gr.State()
        button.click(generate, [classes, count, cfg, cfg_start_step, steps_per_scale, temperature, seed],
                     [gallery, step, fill, step_maps, summary, frames], api_name="generate", concurrency_limit=1)
        step.change(show_step, [step, frames], fill, api_name="show_step")
    return ui


def main(argv=None) -> int:
    with one_line_errors(PROG):
        config = make(AppConfig, command_line(given_options(get_args_parser(), argv)))
        device = resolve_device(config.device)
        choice = choose_model(config.checkpoint, config.use_ema)
        model = load_model(choice.path, use_ema=choice.use_ema, device=device)
        print(f"{PROG}: model {choice.describe()} on {device}", flush=True)
        ui = build_ui(Session(model, compile=config.compile), choice.path)
        ui.launch(server_name=config.host, server_port=config.port, footer_links=["api"])  # a port taken: one line
    return 0


if __name__ == "__main__":
    sys.exit(main())
