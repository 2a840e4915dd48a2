"""LPIPS-style perceptual loss on VGG16 features, from weights already on disk (no download)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vgg import cfgs, make_layers

from models.checkpoint_format import load_checkpoint_file, load_state_dict_strict

# Indices in vgg16().features of relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (as LPIPS).
FEATURE_LAYERS = (3, 8, 15, 22, 29)
# Four max-pools precede relu5_3: smaller images are upsampled so it keeps one pixel.
MIN_SIZE = 2 ** 4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_features_state_dict(path) -> dict:
    """The `features.*` weights of a torchvision VGG16 file (bare, or under 'state_dict'/'model')."""
    state = load_checkpoint_file(path, what="perceptual weights")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state dict found")
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}


class PerceptualLoss(nn.Module):
    """Mean squared distance of channel-normalised VGG16 features, summed over five layers."""

    def __init__(self, weights_path):
        super().__init__()
        self.features = make_layers(cfgs["D"])[: FEATURE_LAYERS[-1] + 1]
        load_state_dict_strict(self.features, vgg16_features_state_dict(weights_path),
                               f"{weights_path} (VGG16 features)")
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        return super().train(False)  # frozen

    def forward(self, x, y):
        """x, y (B, 3, H, W) in [-1, 1] -> 0-dim loss."""
        h = torch.cat([x, y])  # (2B, 3, H, W)
        if h.shape[-1] < MIN_SIZE or h.shape[-2] < MIN_SIZE:
            h = F.interpolate(h, size=(max(MIN_SIZE, h.shape[-2]), max(MIN_SIZE, h.shape[-1])),
                              mode="bilinear", align_corners=False)
        h = ((h + 1) / 2 - self.mean) / self.std
        loss = h.new_zeros(())
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in FEATURE_LAYERS:
                fx, fy = F.normalize(h, dim=1).chunk(2)
                loss = loss + F.mse_loss(fx, fy)
        return loss
