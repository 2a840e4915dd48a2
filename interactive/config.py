"""What app.py is asked for (`AppConfig`), and which model it shows (`choose_model`): the one named,
else the published L-2x if downloaded, else the digits model `python demo.py` trained."""
from dataclasses import dataclass
from pathlib import Path

from common.config import default_of, fields_of, option
from digits_demo.config import GENERATOR_DIR, REPO, DemoConfig
from digits_demo.report import has_ema
from models.checkpoint_format import LAST

PUBLISHED_MODEL = REPO / "pretrained_models" / "checkerboard-L-2x"  # where download.sh puts it
DEMO_MODEL = Path(default_of(fields_of(DemoConfig)["output_dir"])) / GENERATOR_DIR  # where demo.py trains it
NO_MODEL = ("no model to show: pass --checkpoint FOLDER, download the published one with "
            "`bash pretrained_models/download.sh checkerboard-L-2x`, or train the digits model with `python demo.py`")


@dataclass
class AppConfig:
    checkpoint: str | None = option("model folder or checkpoint file (published layout, with config.yaml)", None,
                                    default_text=f"pretrained_models/checkerboard-L-2x if downloaded, else the "
                                                 f"model `python demo.py` trained ({DEMO_MODEL})")
    use_ema: bool = option("sample with the checkpoint's model_ema weights (the demo's model: always, when kept, "
                           "as the demo samples)", False)
    device: str | None = option("cuda, cuda:N or cpu", None, default_text="cuda when available")
    compile: bool = option("on a GPU, compiled sampling steps and one CUDA graph per batch shape (the first "
                           "draw of each count and setting is slow); eager on a CPU", True)
    host: str = option("address the app listens on (0.0.0.0: every interface)", "127.0.0.1")
    port: int = option("port the app listens on", 7860, ge=1, le=65535)


@dataclass(frozen=True)
class ModelChoice:
    path: str
    use_ema: bool
    origin: str  # why this model: for the line the app prints

    def describe(self) -> str:
        return f"{self.path} ({self.origin}{', EMA weights' if self.use_ema else ''})"


def choose_model(checkpoint: str | None, use_ema: bool) -> ModelChoice:
    """The model named, else the first of PUBLISHED_MODEL and DEMO_MODEL that holds a checkpoint;
    none of them: FileNotFoundError saying how to get one."""
    published, demo = PUBLISHED_MODEL, DEMO_MODEL
    if checkpoint:
        return ModelChoice(checkpoint, use_ema, "--checkpoint")
    if (published / LAST).is_file():
        return ModelChoice(str(published), use_ema, "the published L-2x")
    if (demo / LAST).is_file():
        return ModelChoice(str(demo), use_ema or has_ema(demo), "the digits model of python demo.py")
    raise FileNotFoundError(NO_MODEL)

