"""Writing the published autoencoder layout: `autoencoder_config.yaml` + `checkpoint.pth`
(`{'state_dict': ...}` with exactly VQModel's keys), which a generator config's `autoenc:`
section and `models.autoencoder.load_autoencoder` read directly."""
import copy
from pathlib import Path

import yaml

from common.files import atomic_torch_save, atomic_write_text
from models.autoencoder import VQModel

CONFIG_NAME = "autoencoder_config.yaml"
CHECKPOINT_NAME = "checkpoint.pth"


def autoencoder_config_yaml(model_section: dict, model: VQModel, training_args: dict | None = None) -> str:
    """The source config's `model:` section with the trained codebook size. The training
    settings are kept as a record under `training_args:`, not `args:`, so that using this file
    as the --config of another run does not inherit its data_path / output_dir."""
    section = copy.deepcopy(model_section)
    section.setdefault("params", {})["n_embed"] = model.config.n_embed
    document = {"model": section}
    if training_args is not None:
        document["training_args"] = training_args
    return yaml.safe_dump(document, sort_keys=False)


def write_autoencoder(model: VQModel, model_section: dict, output_dir, training_args: dict | None = None) -> Path:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(output_dir / CHECKPOINT_NAME, {"state_dict": state_dict})
    atomic_write_text(output_dir / CONFIG_NAME, autoencoder_config_yaml(model_section, model, training_args))
    return output_dir
