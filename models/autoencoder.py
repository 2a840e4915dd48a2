"""VQ autoencoder: LlamaGen's VQ-16 encoder/decoder with an L2-normalised codebook (docs/method.md section 3).

Module names follow LlamaGen (`vq_ds16_c2i.pt` loads into encoder/decoder unchanged) and the
published checkpoints (`autoenc.*` keys of the generator, `{'state_dict': ...}` files).
"""
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from common.config import ConfigError, Layer, fields_of, make, option
from common.yaml_files import load_yaml

from .checkpoint_format import load_checkpoint_file, load_state_dict_strict, state_dict_mismatch


GROUP_NORM_GROUPS = 32  # every normalised channel count must be a multiple of it
TOP_LEVEL_KEYS = ("embed_dim", "n_embed", "normalize", "resolution")  # model.params; resolution may be in both
DDCONFIG_EXCLUDED = ("embed_dim", "n_embed", "normalize")  # the codebook's keys: never in ddconfig


@dataclass
class AutoencoderConfig:
    """`model.params` of an autoencoder_config.yaml (LlamaGen's names; `ddconfig` holds the
    encoder/decoder shape). Values are checked as every config value is (common/config.py)."""

    embed_dim: int = option("code vector width", 8, ge=1)
    n_embed: int = option("codebook size", 4096, ge=1)
    normalize: bool = option("L2-normalised codebook and latents", True)
    resolution: int = option("training image size", 256, ge=1)
    ch: int = option("base channel count", 128, ge=1)
    ch_mult: list[int] = option("channel multiplier per level (the stride is 2^(levels - 1))", [1, 1, 2, 2, 4], ge=1)
    num_res_blocks: int = option("residual blocks per encoder level", 2, ge=0)
    z_channels: int = option("latent channels before quant_conv", 256, ge=1)
    dropout: float = option("dropout of the residual blocks", 0.0, ge=0, lt=1)
    in_channels: int = option("image channels in", 3, ge=1)
    out_ch: int = option("image channels out", 3, ge=1)
    double_z: bool = option("mean and log-variance latents (not supported)", False)
    attn_resolutions: list[int] | None = option("resolutions with attention (the lowest level only)", None, ge=1)

    # Keys of `model.params` that configure training-time behaviour only.
    IGNORED_PARAMS = ("requant_pyramid_levels",)

    def __post_init__(self):
        self.ch_mult = tuple(self.ch_mult)
        if self.attn_resolutions is not None:
            self.attn_resolutions = tuple(self.attn_resolutions)

    def check(self, source: str = "AutoencoderConfig"):
        """The fixed architecture: z has z_channels (no mean/logvar split), attention sits on the
        lowest-resolution level only, and GroupNorm's 32 groups divide every level's channels."""
        if not self.ch_mult:
            raise ConfigError(f"{source}: ch_mult needs at least one level")
        if self.double_z:
            raise ConfigError(f"{source}: double_z: true is not supported by the VQ-16 encoder")
        stride = 2 ** (len(self.ch_mult) - 1)
        if self.attn_resolutions is not None and self.attn_resolutions not in ((), (self.resolution // stride,)):
            raise ConfigError(f"{source}: attn_resolutions {list(self.attn_resolutions)} must be "
                              f"[{self.resolution // stride}] (attention on the lowest level)")
        odd = [self.ch * m for m in self.ch_mult if (self.ch * m) % GROUP_NORM_GROUPS]
        if odd:
            raise ConfigError(f"{source}: ch {self.ch} x ch_mult {list(self.ch_mult)} gives {odd[0]} channels, not a "
                              f"multiple of GroupNorm's {GROUP_NORM_GROUPS} groups")

    @classmethod
    def from_yaml(cls, path, overrides: dict | None = None, overrides_source: str | None = None
                  ) -> "AutoencoderConfig":
        """`model.params` of an autoencoder_config.yaml (`target` is never imported), then `overrides`
        (a generator config's `model.autoenc.params`, from `overrides_source`)."""
        document = load_yaml(path, "autoencoder config")
        try:
            params = dict(document["model"]["params"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{path}: expected a 'model.params' mapping") from None
        ddconfig = params.pop("ddconfig", None) or {}
        if not isinstance(ddconfig, dict):
            raise ConfigError(f"{path}: model.params.ddconfig must be a mapping, got {ddconfig!r}")
        top = {k: v for k, v in params.items() if k not in cls.IGNORED_PARAMS}
        for key in ddconfig:
            if key not in fields_of(cls) or key in DDCONFIG_EXCLUDED:
                raise ConfigError(f"{path}: unknown key 'model.params.ddconfig.{key}'")
        for key in top:
            if key not in TOP_LEVEL_KEYS:
                raise ConfigError(f"{path}: unknown key 'model.params.{key}'")
            if key in ddconfig and ddconfig[key] != top[key]:
                raise ConfigError(f"{path}: '{key}' differs between model.params and ddconfig")
        overrides = {k: v for k, v in (overrides or {}).items() if k not in cls.IGNORED_PARAMS}
        config = make(cls, Layer(ddconfig, str(path), "model.params.ddconfig."), Layer(top, str(path), "model.params."),
                      Layer(overrides, overrides_source, "model.autoenc.params."))
        config.check(str(path) if not overrides else f"{path} with {overrides_source}'s model.autoenc.params")
        return config


def swish(x):
    return x * torch.sigmoid(x)


def Normalize(channels):
    return nn.GroupNorm(num_groups=GROUP_NORM_GROUPS, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels, out_channels, dropout=0.0):
        super().__init__()
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions."""

    def __init__(self, channels):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(B, C, H * W).transpose(1, 2)  # (B, HW, C)
        k = self.k(h).reshape(B, C, H * W)  # (B, C, HW)
        v = self.v(h).reshape(B, C, H * W)  # (B, C, HW)
        w = torch.softmax(torch.bmm(q, k) * C ** -0.5, dim=2)  # (B, HW_q, HW_k)
        h = torch.bmm(v, w.transpose(1, 2)).reshape(B, C, H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad: right/bottom only


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(res, attn, resample_name=None, resample=None):
    block = nn.Module()
    block.res, block.attn = nn.ModuleList(res), nn.ModuleList(attn)
    if resample is not None:
        setattr(block, resample_name, resample)
    return block


class Encoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        ch, n = config.ch, len(config.ch_mult)
        self.num_res_blocks = config.num_res_blocks
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        c_in = ch
        for i, mult in enumerate(config.ch_mult):
            res, attn = [], []
            for _ in range(config.num_res_blocks):
                res.append(ResnetBlock(c_in, ch * mult, config.dropout))
                c_in = ch * mult
                if i == n - 1:
                    attn.append(AttnBlock(c_in))
            down = Downsample(c_in) if i != n - 1 else None
            self.conv_blocks.append(_level(res, attn, "downsample", down))
        self.mid = nn.ModuleList([ResnetBlock(c_in, c_in, config.dropout), AttnBlock(c_in),
                                  ResnetBlock(c_in, c_in, config.dropout)])
        self.norm_out = Normalize(c_in)
        self.conv_out = nn.Conv2d(c_in, config.z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for block in self.conv_blocks:
            for j in range(self.num_res_blocks):
                h = block.res[j](h)
                if len(block.attn) > 0:
                    h = block.attn[j](h)
            if hasattr(block, "downsample"):
                h = block.downsample(h)
        for layer in self.mid:
            h = layer(h)
        return self.conv_out(swish(self.norm_out(h)))  # (B, z_channels, H/stride, W/stride)


class Decoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        ch, n = config.ch, len(config.ch_mult)
        self.num_res_blocks = config.num_res_blocks
        c_in = ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, c_in, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(c_in, c_in, config.dropout), AttnBlock(c_in),
                                  ResnetBlock(c_in, c_in, config.dropout)])
        # Levels from the lowest resolution up: conv_blocks[0] is the deepest level.
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(n)):
            res, attn = [], []
            for _ in range(config.num_res_blocks + 1):
                res.append(ResnetBlock(c_in, ch * config.ch_mult[i], config.dropout))
                c_in = ch * config.ch_mult[i]
                if i == n - 1:
                    attn.append(AttnBlock(c_in))
            up = Upsample(c_in) if i != 0 else None
            self.conv_blocks.append(_level(res, attn, "upsample", up))
        self.norm_out = Normalize(c_in)
        self.conv_out = nn.Conv2d(c_in, config.out_ch, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        for layer in self.mid:
            h = layer(h)
        for block in self.conv_blocks:
            for j in range(self.num_res_blocks + 1):
                h = block.res[j](h)
                if len(block.attn) > 0:
                    h = block.attn[j](h)
            if hasattr(block, "upsample"):
                h = block.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))  # (B, out_ch, H, W)


class L2Normalize(nn.Module):
    """Parametrization: the codebook rows are stored raw and used unit-length."""

    def forward(self, w):
        return F.normalize(w, dim=1)


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed, embed_dim, normalize):
        super().__init__()
        self.register_buffer("initialized", torch.tensor(False))
        self.embedding = nn.Embedding(n_embed, embed_dim)
        if normalize:
            parametrize.register_parametrization(self.embedding, "weight", L2Normalize())


class VQModel(nn.Module):
    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config = config or AutoencoderConfig()
        config.check()
        self.stride = 2 ** (len(config.ch_mult) - 1)
        self.scale_sizes = None  # latent sizes of the pyramid; set by the generator
        self.register_buffer("cluster_usage_train", torch.zeros(config.n_embed))
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim, config.normalize)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def _normalize(self, z):
        return F.normalize(z, dim=1) if self.config.normalize else z

    def codebook(self):
        return self.quantize.embedding.weight  # (n_embed, embed_dim), unit rows if normalize

    def encode(self, x):
        return self._normalize(self.quant_conv(self.encoder(x)))  # (B, embed_dim, h, w)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(self._normalize(z)))  # (B, out_ch, H, W)

    def quantize_latents(self, z):
        """Nearest codebook row by Euclidean distance; ties go to the lowest index."""
        B, C, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, C)  # (B*h*w, C)
        e = self.codebook()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)  # (B*h*w, n_embed)
        indices = dist.argmin(dim=1).reshape(B, h, w)
        return self.lookup(indices), indices

    def lookup(self, indices):
        return F.embedding(indices, self.codebook()).permute(0, 3, 1, 2)  # (B, C, h, w)

    def rescale_latents(self, z, size):
        z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)
        return self._normalize(z)

    def quantize_pyramid(self, imgs, scale_sizes):
        """Encode the image separately at every scale; returns ([zq (B,C,s,s)], [indices (B,s,s)])."""
        largest = max(scale_sizes)
        zqs, inds = [], []
        for s in scale_sizes:
            x = imgs if s == largest else F.interpolate(
                imgs, size=(s * self.stride, s * self.stride), mode="bilinear",
                align_corners=False, antialias=False)
            zq, idx = self.quantize_latents(self.encode(x))
            zqs.append(zq)
            inds.append(idx)
        return zqs, inds

    def encode_pyramid(self, imgs, scale_sizes=None):
        scale_sizes = scale_sizes if scale_sizes is not None else self.scale_sizes
        if scale_sizes is None:
            raise ValueError("encode_pyramid: no scale_sizes given and VQModel.scale_sizes is not set")
        return self.quantize_pyramid(imgs, scale_sizes)[1]


def autoencoder_state_dict_from_file(path, map_location="cpu", prefix=""):
    """State dict of `{'state_dict': sd}`, `{'model': sd}` or a bare `sd` file (safe load).

    With `prefix` (e.g. "autoenc." for a generator checkpoint) only keys under it are kept,
    with the prefix stripped.
    """
    path = Path(path)
    ckpt = load_checkpoint_file(path, map_location, "autoencoder checkpoint")
    for key in ("state_dict", "model"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path}: no autoencoder state dict found (expected 'state_dict', 'model' or a bare state dict)")
    if prefix:
        ckpt = {k[len(prefix):]: v for k, v in ckpt.items() if k.startswith(prefix)}
        if not ckpt:
            raise ValueError(f"{path}: no keys under the prefix '{prefix}'")
    return ckpt


def load_autoencoder(config_path, checkpoint_path=None, map_location="cpu") -> VQModel:
    """Build from autoencoder_config.yaml; load weights strictly when a checkpoint is given."""
    model = VQModel(AutoencoderConfig.from_yaml(config_path))
    if checkpoint_path is not None:
        state_dict = autoencoder_state_dict_from_file(checkpoint_path, map_location)
        load_state_dict_strict(model, state_dict, str(checkpoint_path))
    return model.to(map_location).eval()


LLAMAGEN_MODULES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def load_llamagen_weights(model: VQModel, path, load_codebook=False):
    """Copy encoder/decoder/quant convs from LlamaGen's `vq_ds16_c2i.pt` (strict for those).

    Its codebook (`quantize.embedding.weight`, not parametrized) and usage buffers are
    ignored unless `load_codebook`, which then requires the codebook shapes to match.
    """
    state_dict = autoencoder_state_dict_from_file(path)
    ours = model.state_dict()
    keys = {k for k in set(ours) | set(state_dict) if k.startswith(LLAMAGEN_MODULES)}
    message = state_dict_mismatch(str(path), ours, state_dict, keys)
    if message:
        raise ValueError(message)
    with torch.no_grad():
        for key in keys:
            ours[key].copy_(state_dict[key])
        if load_codebook:
            old = state_dict.get("quantize.embedding.weight")
            target = (model.quantize.embedding.parametrizations.weight.original
                      if model.config.normalize else model.quantize.embedding.weight)
            if old is None or old.shape != target.shape:
                got = "none" if old is None else list(old.shape)
                raise ValueError(f"{path}: codebook 'quantize.embedding.weight' is {got}, "
                                 f"the model's is {list(target.shape)}")
            target.copy_(old)
    return model
