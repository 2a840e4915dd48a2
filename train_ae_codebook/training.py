"""Training a VQ autoencoder: its codebook alone (requantization of a frozen encoder/decoder,
e.g. LlamaGen's VQ-16) or everything from scratch (`train_all`, for small datasets).

Every step encodes the batch at one random scale. The codebook is initialised after
`init_steps` steps from per-scale latent statistics, then trained with the codebook and
commitment losses; codes unused for `dead_code_interval` steps are redrawn. All randomness of
a step derives from (seed, step), so a resumed run repeats an uninterrupted one exactly.
"""
import dataclasses
import json
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from common.files import atomic_torch_save, journal_file, remove_temporaries, run_lock
from common.lr_schedule import cosine_decay, set_lr
from models.autoencoder import LLAMAGEN_MODULES, AutoencoderConfig, VQModel, load_llamagen_weights
from common.distributed import resolve_device
from models.checkpoint_format import LAST, load_checkpoint_file, load_state_dict_strict, read_config
from common.folders import check_is_folder, folder_contents, shown
from common.tensorboard_writer import summary_writer

from .autoencoder_files import write_autoencoder
from .codebook import (LatentStatistics, flat_latents, initial_codebook, perplexity, reinit_dead_codes,
                       vq_losses)
from .images import ImageFiles, StepBatches, draw_latent_size, image_at_scale, latent_sizes, step_seed
from .train_config import AETrainConfig

LOG_NAME = "log.jsonl"


def autoencoder_config(config: AETrainConfig) -> AutoencoderConfig:
    ae_config = AutoencoderConfig.from_yaml(config.config_path)
    if config.n_embed is not None:
        ae_config = dataclasses.replace(ae_config, n_embed=config.n_embed)
    return ae_config


def codebook_weight(model: VQModel) -> torch.nn.Parameter:
    """The stored codebook parameter (raw rows; normalised on use when `normalize`)."""
    embedding = model.quantize.embedding
    return embedding.parametrizations.weight.original if model.config.normalize else embedding.weight


def build_autoencoder(config: AETrainConfig, ae_config: AutoencoderConfig) -> VQModel:
    """Fresh weights from `seed`, encoder/decoder from `init_checkpoint` (its codebook ignored);
    when requantizing, everything but the codebook is frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VQModel(ae_config)
    if config.init_checkpoint is not None:
        load_llamagen_weights(model, config.init_checkpoint)
    if not config.train_all:
        model.requires_grad_(False)
        codebook_weight(model).requires_grad_(True)
    return model


def _run_identity(config: AETrainConfig, ae_config: AutoencoderConfig) -> dict:
    """What a resumed run must share with the saved one."""
    return {"train_all": config.train_all, **dataclasses.asdict(ae_config)}


def _trained_state(model: VQModel, train_all: bool) -> dict:
    """Requantization saves what changes: the codebook and usage buffers, not the frozen convs."""
    state = model.state_dict()
    return state if train_all else {k: v for k, v in state.items() if not k.startswith(LLAMAGEN_MODULES)}


class AutoencoderRun:
    """One training run: model, optimiser, statistics and the output folder."""

    def __init__(self, config: AETrainConfig):
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        self.model_section, _ = read_config(config.config_path)
        self.ae_config = autoencoder_config(config)
        self.img_size = config.img_size or self.ae_config.resolution
        self.dataset = ImageFiles(config.data_path, self.img_size)
        self.model = build_autoencoder(config, self.ae_config).to(self.device)
        self.sizes = latent_sizes(self.img_size, config.min_size, self.model.stride)
        self.total_steps = config.total_steps(len(self.dataset))
        if self.total_steps <= config.init_steps:
            raise ValueError(f"init_steps {config.init_steps} leaves nothing to train: {config.epochs} epoch(s) of "
                             f"{len(self.dataset)} images at batch_size {config.batch_size} are "
                             f"{self.total_steps} steps")
        self.weight = codebook_weight(self.model)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                           lr=config.lr, weight_decay=config.weight_decay,
                                           foreach=True)  # one call for all tensors, also on CPU
        self.perceptual = None
        if config.perceptual_weights:
            from .perceptual import PerceptualLoss  # torchvision takes seconds to import
            self.perceptual = PerceptualLoss(config.perceptual_weights).to(self.device)
        dim = self.ae_config.embed_dim
        self.scale_stats = LatentStatistics(self.sizes[-1] + 1, dim, self.device)  # row = latent size
        self.code_stats = LatentStatistics(self.ae_config.n_embed, dim, self.device)  # since the last re-init
        self.output_dir = Path(config.output_dir)
        self.check_output_dir()
        self.start_step = 0
        self._lock = ExitStack()

    # ---- the output folder --------------------------------------------------------------
    def check_output_dir(self):
        """The folder of this run: new, empty, or holding this run's checkpoint-last.pth to resume. Any other
        folder (e.g. a published autoencoder's) is refused before anything is written."""
        folder = self.output_dir
        check_is_folder(folder)
        names = folder_contents(folder)
        if names and LAST not in names:
            raise ValueError(f"--output_dir {folder} is not empty ({shown(names)}) and holds no {LAST} "
                             f"of a run to resume: a new run writes only into a new or empty folder, so that nothing "
                             f"it did not make is overwritten; pass another --output_dir")
        if LAST in names:
            self.load_state(folder / LAST, check_only=True)

    # ---- checkpoint-last.pth ----------------------------------------------------------
    def save_state(self, step: int):
        atomic_torch_save(self.output_dir / LAST, {
            "model": _trained_state(self.model, self.config.train_all),
            "optimizer": self.optimizer.state_dict(),
            "step": step,
            "scale_statistics": self.scale_stats.state_dict(),
            "code_statistics": self.code_stats.state_dict(),
            "run": _run_identity(self.config, self.ae_config),
            "args": self.config.to_dict(),
        })

    def load_state(self, path: Path, check_only: bool = False):
        """Restores the run saved at `path`; with `check_only`, checks that it is this run's and restores nothing."""
        state = load_checkpoint_file(path)
        if not isinstance(state, dict) or not isinstance(state.get("run"), dict):
            raise ValueError(f"{path}: not a training checkpoint of train_ae_codebook; use another output_dir")
        saved, now = state["run"], _run_identity(self.config, self.ae_config)
        for key, value in now.items():
            if saved.get(key) != value:
                raise ValueError(f"{path}: the run there has {key}={saved.get(key)!r}, this one {key}={value!r}; "
                                 f"resume with the same settings or use another output_dir")
        if check_only:
            return
        load_state_dict_strict(self.model, {**self.model.state_dict(), **state["model"]}, str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scale_stats.load_state_dict(state["scale_statistics"])
        self.code_stats.load_state_dict(state["code_statistics"])
        self.start_step = int(state["step"])

    # ---- one step -----------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Cosine decay to 0 over the steps after the codebook initialisation."""
        progress = (step - self.config.init_steps) / (self.total_steps - self.config.init_steps)
        return cosine_decay(self.config.lr, progress)

    def train_step(self, x, size: int, quantized: bool) -> dict:
        """x (B, 3, size*stride, size*stride). Returns 0-dim tensors (no host sync)."""
        config, model = self.config, self.model
        with torch.set_grad_enabled(config.train_all):
            z = model.encode(x)  # (B, C, size, size)
        flat = flat_latents(z)
        stats, loss = {}, None
        if not quantized:
            self.scale_stats.add(torch.full((flat.shape[0],), size, device=flat.device), flat)
            z_dec = z
        else:
            with torch.no_grad():
                _, indices = model.quantize_latents(z)  # the distances need no graph
            zq = model.lookup(indices)  # (B, C, size, size), differentiable in the codebook
            codebook_loss, commitment_loss = vq_losses(z, zq)
            loss = config.codebook_weight * codebook_loss + config.commitment_weight * commitment_loss
            counts = torch.bincount(indices.flatten(), minlength=self.ae_config.n_embed)
            self.code_stats.add(indices.flatten(), flat)
            model.cluster_usage_train += counts
            stats.update(loss_codebook=codebook_loss, loss_commitment=commitment_loss,
                         perplexity_batch=perplexity(counts))
            z_dec = z + (zq - z).detach()  # straight-through
        if config.train_all:
            rec = model.decode(z_dec)
            recon = F.l1_loss(rec, x) if config.recon_loss == "l1" else F.mse_loss(rec, x)
            stats["loss_recon"] = recon
            loss = recon if loss is None else loss + recon
            if self.perceptual is not None:
                stats["loss_perceptual"] = self.perceptual(rec, x)
                loss = loss + config.perceptual_weight * stats["loss_perceptual"]
        if loss is not None:
            stats["loss"] = loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return {k: v.detach() for k, v in stats.items()}

    def initialise_codebook(self, step: int):
        generator = torch.Generator().manual_seed(step_seed(self.config.seed, "init", step))
        with torch.no_grad():
            self.weight.copy_(initial_codebook(self.scale_stats, self.ae_config.n_embed, generator))
            self.model.quantize.initialized.fill_(True)

    def reinit_dead_codes(self, step: int) -> int:
        generator = torch.Generator().manual_seed(step_seed(self.config.seed, "reinit", step))
        n = reinit_dead_codes(self.weight, self.code_stats, generator, self.optimizer)
        self.code_stats.reset()
        return n

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> Path:
        self.start()
        return self.train()

    def start(self):
        """Takes the output folder's lock (a second run of the folder is refused), checks the folder again
        under it, removes an interrupted run's partial files and restores its state, or writes the state at
        step 0. `train` releases the lock."""
        self._lock.enter_context(run_lock(self.output_dir))
        try:
            self.check_output_dir()
            remove_temporaries(self.output_dir)
            if (self.output_dir / LAST).is_file():
                self.load_state(self.output_dir / LAST)
                tqdm.write(f"resuming {self.output_dir / LAST} at step {self.start_step}")
            else:
                # The run's first write says whose folder this is: stopped before its first save, the same
                # run resumes here (at step 0, which repeats exactly) and any other is refused.
                self.save_state(0)
        except BaseException:
            self._lock.close()
            raise

    def train(self) -> Path:
        """Trains (after `start`) and writes the autoencoder; returns the output folder."""
        try:
            return self._train()
        finally:
            self._lock.close()

    def _train(self) -> Path:
        config = self.config
        self.model.train(config.train_all)  # requantization: the frozen layers stay in eval mode
        loader = DataLoader(self.dataset, num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
                            batch_sampler=StepBatches(len(self.dataset), config.batch_size, config.seed,
                                                      self.start_step, self.total_steps))
        writer = None
        if config.tensorboard:
            writer = summary_writer(self.output_dir)
        quantized = bool(self.model.quantize.initialized)
        sums, counts = {}, {}
        usage_at_log = self.model.cluster_usage_train.clone()
        progress = tqdm(total=self.total_steps, initial=self.start_step, desc="train_ae", disable=None)
        try:
            for step, imgs in enumerate(loader, start=self.start_step):
                set_lr(self.optimizer, self.lr_at(step))
                size = draw_latent_size(self.sizes, config.seed, step)
                x = image_at_scale(imgs.to(self.device, non_blocking=True), size, self.model.stride)
                for k, v in self.train_step(x, size, quantized).items():
                    sums[k] = sums.get(k, 0) + v
                    counts[k] = counts.get(k, 0) + 1
                done = step + 1
                extra = {}
                if not quantized and done >= config.init_steps:
                    self.initialise_codebook(step)
                    quantized = True
                elif quantized and (done - config.init_steps) % config.dead_code_interval == 0:
                    extra["dead_codes_reinitialised"] = self.reinit_dead_codes(step)
                progress.update(1)
                if done % config.log_every == 0 or done == self.total_steps or extra:
                    record = {k: (sums[k] / counts[k]).item() for k in sums}
                    sums, counts = {}, {}
                    usage = self.model.cluster_usage_train - usage_at_log
                    usage_at_log = self.model.cluster_usage_train.clone()
                    if quantized and usage.sum() > 0:
                        record["codebook_usage"] = (usage > 0).float().mean().item()
                        record["perplexity"] = perplexity(usage).item()
                    record.update(extra, lr=self.lr_at(step))
                    self.log(done, record, writer, progress)
                if done % config.save_every == 0 or done == self.total_steps:
                    self.save_state(done)
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        return write_autoencoder(self.model, self.model_section, self.output_dir, config.to_dict())

    def log(self, step: int, record: dict, writer, progress):
        journal_file(self.output_dir / LOG_NAME)
        with open(self.output_dir / LOG_NAME, "a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")
        if writer is not None:
            for k, v in record.items():
                writer.add_scalar(f"train/{k}", v, step)
        shown = {k: f"{v:.4g}" for k, v in record.items() if k != "lr"}
        progress.set_postfix(shown, refresh=False)
        tqdm.write(f"step {step}/{self.total_steps} " + " ".join(f"{k} {v}" for k, v in shown.items()))


def train_autoencoder(config: AETrainConfig) -> Path:
    """Train as `config` says (resuming from `<output_dir>/checkpoint-last.pth` when it exists);
    writes `<output_dir>/autoencoder_config.yaml` + `checkpoint.pth` and returns output_dir."""
    return AutoencoderRun(config).run()
