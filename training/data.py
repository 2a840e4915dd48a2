"""Training images: ADM centre crop to 1.1 x size, then one of its ten crops, in [-1, 1].

Items are addressed by (image index, crop index) pairs that `CropSampler` draws per epoch from the
run's seed, so the data order and the crops are reproducible and a resumed run sees exactly what an
uninterrupted one would. Images that common/images.py cannot read are skipped and reported, never fatal.
"""
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler, default_collate

from common.images import IMAGE_EXTENSIONS, ImageError, list_images, load_rgb
from common.json_files import read_json

CROP_MARGIN = 1.1  # the centre crop keeps 1.1 x the training size so the ten crops differ
NUM_CROPS = 10
DATASETS = ("imagefolder", "celeba", "food101")
NO_LABEL = -1  # the label of every image of a dataset without classes (CelebA)
CELEBA_TRAIN = "0"  # list_eval_partition.txt: 0 train, 1 valid, 2 test
# The published rule reads a folder named celeba or food101 as that dataset: an ImageFolder of that name
# must say so.
IMAGEFOLDER_HINT = "for an ImageFolder (<data_path>/train/<class>/<image>) pass --dataset imagefolder"
DECODE_TRIES = 16  # images decoded before training starts, to refuse a folder of which none decodes


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """ADM's centre crop: box-downsample while the short side is >= 2x, bicubic resize, crop."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[crop_y:crop_y + image_size, crop_x:crop_x + image_size])


def five_crops(img: Image.Image, size: int) -> tuple:
    """torchvision's FiveCrop: top-left, top-right, bottom-left, bottom-right, centre."""
    w, h = img.size
    centre = (int(round((w - size) / 2.0)), int(round((h - size) / 2.0)))
    corners = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size), centre]
    return tuple(img.crop((x, y, x + size, y + size)) for x, y in corners)


def ten_crops(pil_image: Image.Image, image_size: int) -> tuple:
    """torchvision's TenCrop of the ADM centre crop: five crops, then five of the mirrored image."""
    img = center_crop_arr(pil_image, int(image_size * CROP_MARGIN))
    return five_crops(img, image_size) + five_crops(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image_size)


def to_model_range(pil_image: Image.Image) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(pil_image, dtype=np.uint8))  # (H, W, 3)
    return pixels.permute(2, 0, 1).float().div(127.5).sub(1.0)  # (3, H, W) in [-1, 1]


class Skipped(NamedTuple):
    """Stands in for an image that could not be decoded."""

    path: str


class Batch(NamedTuple):
    inputs: object  # images (B, 3, H, W), or per-scale codes [(B, s, s) int16] from the token cache
    labels: torch.Tensor | None  # (B,); None when every image of the batch was skipped
    skipped: list  # paths of undecodable images left out of this batch


def image_folder_samples(root, num_classes: int | None = None) -> tuple[list, list]:
    """(class names, [(path, label)]) of an ImageFolder, checked against the model's class count."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"training images not found: {root} (expected <data_path>/train/<class>/<image>)")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if num_classes is not None and len(classes) != num_classes:
        raise ValueError(f"{root} has {len(classes)} class folders but the config's model.num_classes is "
                         f"{num_classes}")
    label_of = {name: label for label, name in enumerate(classes)}
    samples = []
    # One listing of the whole folder, so that a link from a class back up (to the data folder) adds
    # no other class's images to it; files beside the class folders are not ImageFolder's.
    for path in list_images(root):
        parts = path.relative_to(root).parts
        if len(parts) > 1 and parts[0] in label_of:
            samples.append((str(path), label_of[parts[0]]))
    samples.sort(key=lambda sample: sample[1])  # stable: torchvision's order, one class after another
    found = {label for _, label in samples}
    for label, name in enumerate(classes):
        if label not in found:
            raise FileNotFoundError(f"{root / name}: no images ({', '.join(IMAGE_EXTENSIONS)}; a folder reached "
                                    f"through a link is listed once, under its first path)")
    if not samples:
        raise FileNotFoundError(f"{root}: no class folders with images")
    return classes, samples


def dataset_for_path(data_path) -> str:
    """The published rule: a data folder named `celeba` holds torchvision's CelebA, one named `food101`
    torchvision's Food101; anything else is an ImageFolder root with a train/ split."""
    name = Path(os.path.abspath(data_path)).name
    return name if name in ("celeba", "food101") else "imagefolder"


def check_data_path(data_path):
    if not Path(data_path).exists():
        raise FileNotFoundError(f"data path not found: {data_path}")
    if not Path(data_path).is_dir():
        raise ValueError(f"--data_path {data_path} is a file, not a folder")


def image_root(data_path, dataset: str) -> Path:
    """The folder a dataset's images are listed from: <data_path>/train for an ImageFolder, else data_path
    (CelebA: the folder holding img_align_celeba/; Food101: the folder holding food-101/)."""
    return Path(data_path) / "train" if dataset == "imagefolder" else Path(data_path)


def celeba_samples(root, num_classes: int | None = None) -> tuple[None, list]:
    """(None, [(path, NO_LABEL)]) of the training split of torchvision's CelebA layout:
    <root>/list_eval_partition.txt and <root>/img_align_celeba/<image>. CelebA has no classes."""
    root = Path(root)
    partition = root / "list_eval_partition.txt"
    if not partition.is_file():  # first: a folder of another layout is no CelebA, whatever the model
        raise FileNotFoundError(f"CelebA partition file not found: {partition} (expected torchvision's layout: "
                                f"<data_path>/list_eval_partition.txt and <data_path>/img_align_celeba/; "
                                f"{IMAGEFOLDER_HINT})")
    if num_classes is not None:
        raise ValueError(f"{root}: CelebA has no class labels, but the config's model.class_cond is true "
                         f"(set class_cond: false and num_classes: 0 for an unconditional model)")
    samples = []
    for number, line in enumerate(partition.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{partition}, line {number}: expected '<image> <partition>', got {line!r}")
        if fields[1] == CELEBA_TRAIN:
            samples.append((str(root / "img_align_celeba" / fields[0]), NO_LABEL))
    if not samples:
        raise FileNotFoundError(f"{partition}: no training images (partition 0)")
    return None, samples


def food101_samples(root, num_classes: int | None = None) -> tuple[list, list]:
    """(class names, [(path, label)]) of the training split of torchvision's Food101 layout:
    <root>/food-101/meta/train.json ({class: ["class/image", ...]}) and <root>/food-101/images/."""
    base = Path(root) / "food-101"
    meta = base / "meta" / "train.json"
    if not meta.is_file():
        raise FileNotFoundError(f"Food101 split file not found: {meta} (expected torchvision's layout: "
                                f"<data_path>/food-101/meta/train.json and <data_path>/food-101/images/; "
                                f"{IMAGEFOLDER_HINT})")
    listing = read_json(meta, dict, "a mapping of class names to lists of images")
    if not all(isinstance(v, list) for v in listing.values()):
        raise ValueError(f"{meta}: expected a mapping of class names to lists of images")
    classes = sorted(listing)
    if num_classes is not None and len(classes) != num_classes:
        raise ValueError(f"{meta} has {len(classes)} classes but the config's model.num_classes is {num_classes}")
    label_of = {name: label for label, name in enumerate(classes)}
    # torchvision's order: the file's classes in the file's order, each class's images as listed
    samples = [(str(base / "images" / f"{image}.jpg"), label_of[name])
               for name, images in listing.items() for image in images]
    if not samples:
        raise FileNotFoundError(f"{meta}: no training images")
    return classes, samples


def dataset_samples(root, dataset: str = "imagefolder", num_classes: int | None = None) -> tuple[list | None, list]:
    """(class names or None, [(path, label)]) of a dataset's training images."""
    if dataset == "celeba":
        return celeba_samples(root, num_classes)
    if dataset == "food101":
        return food101_samples(root, num_classes)
    if dataset != "imagefolder":
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    return image_folder_samples(root, num_classes)


class TenCropImageFolder(Dataset):
    """Training images (an ImageFolder, or CelebA / Food101 laid out as torchvision expects: see
    `dataset_samples`) whose item (index, crop) is crop `crop` of image `index`; item `index` alone is all
    ten crops (10, 3, H, W) with the label and index (for the token cache)."""

    def __init__(self, root, image_size: int, num_classes: int | None = None, dataset: str = "imagefolder"):
        self.root = Path(root)
        self.image_size = image_size
        self.classes, self.samples = dataset_samples(root, dataset, num_classes)

    def __len__(self):
        return len(self.samples)

    def check_decodable(self, tries: int = DECODE_TRIES):
        """Refuses a dataset of which none of `tries` images spread over it decodes (a folder of damaged
        or foreign files would otherwise train on nothing); stops at the first that does."""
        tried = self.samples[::max(1, len(self.samples) // tries)][:tries]
        for path, _ in tried:
            try:
                load_rgb(path)
                return
            except ImageError as e:
                error = e
        raise ValueError(f"{self.root}: none of {len(tried)} images tried across its {len(self.samples)} can be "
                         f"decoded ({error})")

    def __getitem__(self, key):
        index, crop = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            img = load_rgb(path)
        except ImageError:
            return Skipped(path)
        crops = ten_crops(img, self.image_size)
        if crop is None:
            return torch.stack([to_model_range(c) for c in crops]), label, index
        return to_model_range(crops[crop]), label


def collate_skipping(items: list) -> Batch:
    kept = [item for item in items if not isinstance(item, Skipped)]
    skipped = [item.path for item in items if isinstance(item, Skipped)]
    if not kept:
        return Batch(None, None, skipped)
    inputs, labels = default_collate(kept)
    return Batch(inputs, labels, skipped)


def collate_all_crops(items: list):
    """(crops (B, 10, 3, H, W), labels, indices, skipped paths) for the token cache."""
    kept = [item for item in items if not isinstance(item, Skipped)]
    skipped = [item.path for item in items if isinstance(item, Skipped)]
    if not kept:
        return None, None, None, skipped
    crops, labels, indices = default_collate(kept)
    return crops, labels, indices, skipped


def epoch_seed(*parts: int) -> int:
    """A 32-bit seed mixed from (seed, epoch, ...), stable across runs and processes."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class CropSampler(Sampler):
    """Per epoch: a permutation of the images and one crop per image, from (seed, epoch) alone.

    Both are drawn before splitting among processes, so an image gets the same crop whatever the
    process count. Each process takes every world_size-th item; the order is padded by wrapping
    around so that every process has the same number of items (as DistributedSampler does).
    """

    def __init__(self, num_items: int, num_crops: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if num_items < 1:
            raise ValueError("no training images")
        self.num_items, self.num_crops = num_items, num_crops
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(self.num_items / self.world_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_items, generator=g) if self.shuffle else torch.arange(self.num_items)
        crops = torch.randint(0, self.num_crops, (self.num_items,), generator=g)
        total = len(self) * self.world_size
        order = order.repeat(math.ceil(total / self.num_items))[:total]
        for i in order[self.rank::self.world_size].tolist():
            yield i, int(crops[i])
