"""The training data as the loop reads it: the dataset (the token cache or the images), the crops each
process draws per epoch (`CropSampler`) and the DataLoader over them."""
from torch.utils.data import BatchSampler, DataLoader, Dataset

from common.distributed import Placement
from models.generator import CheckerboardGenerator
from training.config import TrainConfig
from training.data import NUM_CROPS, CropSampler, TenCropImageFolder, check_data_path, collate_skipping, image_root
from training.token_cache import TokenCacheDataset, cache_folder, cache_spec


def training_dataset(config: TrainConfig, model: CheckerboardGenerator) -> Dataset:
    """The token cache with `use_cache` (made for this model), else the images, of which some must decode."""
    num_classes = model.config.num_classes if model.config.class_cond else None
    if config.use_cache:
        spec = cache_spec(model)
        if not config.cache_path:
            check_data_path(config.data_path)
        return TokenCacheDataset(cache_folder(config, spec), spec, num_classes)
    check_data_path(config.data_path)
    kind = config.resolved_dataset()
    dataset = TenCropImageFolder(image_root(config.data_path, kind), model.config.img_size, num_classes, kind)
    dataset.check_decodable()
    return dataset


def build_data(config: TrainConfig, model: CheckerboardGenerator, place: Placement) -> tuple[CropSampler, DataLoader]:
    """(the sampler of this process's crops, the loader of its batches); ValueError when the images give
    no full batch."""
    dataset = training_dataset(config, model)
    # Of the ten crops the first five are unmirrored (training/data.py), so five means "no mirroring".
    sampler = CropSampler(len(dataset), NUM_CROPS if config.mirrored_crops else NUM_CROPS // 2, config.seed,
                          place.rank, place.world)
    loader = DataLoader(dataset, batch_sampler=BatchSampler(sampler, config.batch_size, drop_last=True),
                        num_workers=config.num_workers, pin_memory=config.pin_mem and place.device.type == "cuda",
                        collate_fn=collate_skipping)
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} training images give no full batch of {config.batch_size} per process "
                         f"({place.world} processes): lower --batch_size")
    return sampler, loader
