"""The names the app's class picker shows: ImageNet's for a 1000-class model, the class index for
any other (for the digits demo's model, index c is the digit c)."""
IMAGENET_CLASSES = 1000


def imagenet_names() -> list[str]:
    """ImageNet-1k's class names in index order, from torchvision's weights metadata (installed with
    torchvision: no download)."""
    from torchvision.models import ResNet50_Weights  # slow to import: only for ImageNet models
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def class_names(num_classes: int) -> list[str]:
    """One label per class index, each starting with the index (the number the command line takes)."""
    if num_classes == IMAGENET_CLASSES:
        return [f"{i} {name}" for i, name in enumerate(imagenet_names())]
    return [str(i) for i in range(num_classes)]
