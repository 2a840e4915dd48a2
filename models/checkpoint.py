"""A generator from a model folder (config.yaml + checkpoint-last.pth, local or on the Hub): built from
its config, loaded strictly. The format itself is models/checkpoint_format.py's."""
from pathlib import Path

import torch

from common.config import expand_path

from .autoencoder import AutoencoderConfig, VQModel, autoencoder_state_dict_from_file
from .checkpoint_format import CONFIG, LAST, load_checkpoint_file, load_state_dict_strict, read_config
from .config import GeneratorConfig
from .generator import CheckerboardGenerator
from .hub import fetch_model, parse_reference, snapshot_root


def resolve_path(p, config_dir) -> Path:
    """A path a config names. Relative ones are tried against the config's own folder first, so that a
    model folder finds its own files whatever the working directory holds, then against the working
    directory, or for a config in the Hub cache its snapshot's root (the published configs name
    `pretrained_models/...` from the published repository's root). A leading ~ is the home folder."""
    p = Path(expand_path(str(p)))
    if p.is_absolute():
        return p
    root = snapshot_root(config_dir) or Path()  # a Hub model's files come from its own snapshot only
    for candidate in (Path(config_dir) / p, root / p):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"'{p}' not found relative to {config_dir} or to {root.resolve()}")


def width_text(config_path) -> str:
    """The model size of a config file in words ("model width 1024 (24 layers)"), for messages; what
    cannot be read is left out."""
    try:
        llama = read_config(config_path)[0].get("llama_config") or {}
        layers = f" ({llama['num_hidden_layers']} layers)" if "num_hidden_layers" in llama else ""
        return f"model width {llama['hidden_size']}{layers}"
    except (OSError, ValueError, KeyError, AttributeError):
        return "this model"


def build_generator(model_section: dict, config_dir, load_autoencoder_weights: bool = True,
                    source: str = "config") -> CheckerboardGenerator:
    """A generator from a `model:` section; the autoencoder's weights come from its checkpoint
    (training from scratch) or are left for the generator checkpoint to fill (loading)."""
    model_config = GeneratorConfig.from_dict(model_section, source)
    ae_config = AutoencoderConfig.from_yaml(resolve_path(model_config.autoenc.config_path, config_dir),
                                            model_config.autoenc.params, source)
    autoencoder = VQModel(ae_config)
    if load_autoencoder_weights:
        if not model_config.autoenc.checkpoint_path:
            raise ValueError(f"{source}: model.autoenc.checkpoint_path is required to train a generator")
        ae_path = resolve_path(model_config.autoenc.checkpoint_path, config_dir)
        load_state_dict_strict(autoencoder, autoencoder_state_dict_from_file(ae_path), str(ae_path))
    try:
        return CheckerboardGenerator(model_config, autoencoder)
    except ValueError as e:  # a size the scales cannot be built from
        raise ValueError(f"{source}: {e}") from None


def checkpoint_paths(path) -> tuple[Path, Path]:
    """(checkpoint file, config.yaml) from a checkpoint file or a model folder, local or on the Hub
    (models/hub.py: fetched into the Hub cache and checked)."""
    reference = parse_reference(path)
    path = fetch_model(reference) if reference else Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        hint = ""
        if "pretrained_models" in path.parts:
            model = path.parts[path.parts.index("pretrained_models") + 1:][:1]
            hint = f" (fetch the published models with `{' '.join(['bash pretrained_models/download.sh', *model])}`"
            hint += f", or load {model[0]} from the Hugging Face Hub by its name)" if model else ")"
        raise FileNotFoundError(f"checkpoint not found: {path}{hint}")
    config = path.parent / CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"{CONFIG} not found beside the checkpoint: {config}")
    return path, config


def load_model(path, use_ema: bool = False, device="cpu") -> CheckerboardGenerator:
    """A generator in eval mode from a published-layout checkpoint (file or folder), loaded strictly."""
    ckpt_path, config_path = checkpoint_paths(path)
    model_section, _ = read_config(config_path)
    with torch.device("meta"):
        model = build_generator(model_section, config_path.parent, load_autoencoder_weights=False,
                                source=str(config_path))
    ckpt = load_checkpoint_file(ckpt_path)
    key = "model_ema" if use_ema else "model"
    state_dict = ckpt.get(key) if isinstance(ckpt, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{ckpt_path}: no '{key}' state dict in the checkpoint")
    load_state_dict_strict(model, state_dict, str(ckpt_path), assign=True)
    return model.to(device).eval()
