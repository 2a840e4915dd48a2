"""The `model:` section of a config file: the published key names and defaults, values checked.

A config written for the published implementation loads here and means the same (docs/method.md
section 8): a key it leaves out takes the published default. A value of the wrong type or out of
range, or an unknown key, is refused with one line naming the file, the key and the value.
"""
import math
from dataclasses import dataclass, field

from .checkerboard import scale_ratio_from_config

# What the published implementation builds when `llama_config` is absent or empty. Given a
# mapping, it reads each key with these defaults except `intermediate_size`, whose absence means
# Llama's own SwiGLU width (8/3 of hidden_size, see TransformerConfig.ffn_hidden).
PUBLISHED_LLAMA_DEFAULTS = {"hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 8,
                            "num_hidden_layers": 8, "rms_norm_eps": 1e-6}
RENAMED_KEYS = {"label_drop_prob": "uncond_training_prob"}


@dataclass
class LlamaConfig:
    hidden_size: int = PUBLISHED_LLAMA_DEFAULTS["hidden_size"]
    num_attention_heads: int = PUBLISHED_LLAMA_DEFAULTS["num_attention_heads"]
    num_hidden_layers: int = PUBLISHED_LLAMA_DEFAULTS["num_hidden_layers"]
    intermediate_size: int | None = None
    rms_norm_eps: float = PUBLISHED_LLAMA_DEFAULTS["rms_norm_eps"]


@dataclass
class AutoencSection:
    config_path: str
    checkpoint_path: str | None = None
    params: dict = field(default_factory=dict)


@dataclass
class GeneratorConfig:
    """The `model:` section (published key names; defaults are the published ones)."""

    img_size: int
    autoenc: AutoencSection
    llama_config: LlamaConfig = field(default_factory=lambda: LlamaConfig(**PUBLISHED_LLAMA_DEFAULTS))
    class_cond: bool = False
    num_classes: int = 0
    uncond_training_prob: float = 0.1  # classifier-free guidance: label dropped in training
    scale_ratio: float = 2.0
    scale_min_size: int = 1
    single_scale: bool = False  # one scale, the full latent grid; ratio and min size ignored
    num_blocks_per_scale: int = 8  # the model's default sampling steps per scale
    random_block_size: bool = False
    random_replace: float = 0.0
    random_replace_sampled: bool = False
    use_head_mlp: bool = True
    head_weights_l2_loss: float = 1e-3
    num_mixing_layers: int = 2  # resolved: `all` / null in a file mean every layer

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "GeneratorConfig":
        check = _Checker(source)
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            hints = [f"{k} (now {RENAMED_KEYS[k]})" if k in RENAMED_KEYS else k for k in unknown]
            raise ValueError(f"{source}: unknown key(s) in the model section: {', '.join(hints)}")
        if "img_size" not in d or "autoenc" not in d:
            missing = [k for k in ("img_size", "autoenc") if k not in d]
            raise ValueError(f"{source}: the model section is missing {', '.join(missing)}")
        llama = check.llama(d.get("llama_config"))
        values = {
            "img_size": check.integer("img_size", d["img_size"], 1),
            "autoenc": check.autoenc(d["autoenc"]),
            "llama_config": llama,
            "scale_ratio": check.scale_ratio(d.get("scale_ratio", cls.scale_ratio)),
            "num_mixing_layers": check.mixing_layers(d.get("num_mixing_layers", cls.num_mixing_layers),
                                                     llama.num_hidden_layers),
        }
        for key in ("class_cond", "single_scale", "random_block_size", "random_replace_sampled", "use_head_mlp"):
            values[key] = check.boolean(key, d.get(key, getattr(cls, key)))
        for key in ("num_classes", "scale_min_size", "num_blocks_per_scale"):
            values[key] = check.integer(key, d.get(key, getattr(cls, key)), 0 if key == "num_classes" else 1)
        for key in ("uncond_training_prob", "random_replace"):
            values[key] = check.number(key, d.get(key, getattr(cls, key)), 0.0, 1.0)
        values["head_weights_l2_loss"] = check.number("head_weights_l2_loss",
                                                      d.get("head_weights_l2_loss", cls.head_weights_l2_loss), 0.0)
        # The published model asserts the same pairing of class_cond and num_classes.
        if values["class_cond"] and values["num_classes"] < 1:
            raise ValueError(f"{source}: model.num_classes must be >= 1 for a class-conditional model "
                             f"(class_cond: true), got {values['num_classes']}")
        if not values["class_cond"] and values["num_classes"]:
            raise ValueError(f"{source}: model.num_classes is {values['num_classes']} but class_cond is false "
                             f"(an unconditional model has no classes: set class_cond: true or num_classes: 0)")
        return cls(**values)


class _Checker:
    """Type and range checks of one file's model section; each failure is one line."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, value, expected: str):
        raise ValueError(f"{self.source}: model.{key}: expected {expected}, got {value!r}")

    def boolean(self, key, value) -> bool:
        if not isinstance(value, bool):
            self.fail(key, value, "true or false")
        return value

    def integer(self, key, value, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, value, f"an integer >= {minimum}")
        return value

    def number(self, key, value, low: float, high: float = math.inf) -> float:
        text = f"a number in [{low}, {high}]" if high < math.inf else f"a finite number >= {low}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            self.fail(key, value, text)
        return float(value)

    def scale_ratio(self, value) -> float:
        try:
            ratio = scale_ratio_from_config(value) if not isinstance(value, bool) else math.nan
        except ValueError:
            ratio = math.nan
        if not (math.isfinite(ratio) and ratio > 1):
            self.fail("scale_ratio", value, "a finite number > 1 or 'sqrt(N)'")
        return ratio

    def mixing_layers(self, value, num_layers: int) -> int:
        """More than num_hidden_layers is allowed, as in the published model: every layer mixes and
        the extra rows of mixing_coeffs go unused (the state dict keeps their shape)."""
        if value is None or value == "all":
            return num_layers
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail("num_mixing_layers", value, "an integer >= 0, 'all' or null")
        return value

    def autoenc(self, value) -> AutoencSection:
        if not isinstance(value, dict):
            self.fail("autoenc", value, "a mapping with config_path")
        unknown = sorted(set(value) - set(AutoencSection.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{self.source}: unknown key(s) in model.autoenc: {', '.join(unknown)}")
        if not isinstance(value.get("config_path"), str):
            self.fail("autoenc.config_path", value.get("config_path"), "a path")
        if not isinstance(value.get("checkpoint_path"), (str, type(None))):
            self.fail("autoenc.checkpoint_path", value["checkpoint_path"], "a path or null")
        if not isinstance(value.get("params") or {}, dict):
            self.fail("autoenc.params", value["params"], "a mapping")
        return AutoencSection(value["config_path"], value.get("checkpoint_path"), dict(value.get("params") or {}))

    def llama(self, value) -> LlamaConfig:
        if value is None or value == {}:
            return LlamaConfig(**PUBLISHED_LLAMA_DEFAULTS)
        if not isinstance(value, dict):
            self.fail("llama_config", value, "a mapping")
        if "num_key_value_heads" in value:
            raise ValueError(f"{self.source}: model.llama_config.num_key_value_heads is not supported (grouped "
                             f"keys and values; the published models use one per query head): remove it")
        unknown = sorted(set(value) - set(LlamaConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{self.source}: unknown key(s) in model.llama_config: {', '.join(unknown)}")
        llama_config = LlamaConfig()
        for key in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
            default = getattr(llama_config, key)
            setattr(llama_config, key, self.integer(f"llama_config.{key}", value.get(key, default), 1))
        if value.get("intermediate_size") is not None:
            llama_config.intermediate_size = self.integer("llama_config.intermediate_size",
                                                          value["intermediate_size"], 1)
        eps = value.get("rms_norm_eps", llama_config.rms_norm_eps)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps < math.inf):
            self.fail("llama_config.rms_norm_eps", eps, "a number > 0")
        llama_config.rms_norm_eps = float(eps)
        heads, width = llama_config.num_attention_heads, llama_config.hidden_size
        if width % heads or (width // heads) % 2:
            self.fail("llama_config.num_attention_heads", heads,
                      f"a divisor of hidden_size {width} leaving an even head width (rotary pairs)")
        return llama_config
