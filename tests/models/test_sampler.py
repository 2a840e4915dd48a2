"""The sampler owns generation state and talks to the model through its public interface."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import torch

from models import load_model
from models.sampler import Sampler

from model_state import held_bytes

REPO = Path(__file__).resolve().parents[2]


def test_the_model_modules_do_not_import_the_sampler():
    code = "import sys, models.generator, models.checkpoint; assert 'models.sampler' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_sampler_reads_no_private_member_of_anything_else():
    """No `x._name` in models/sampler.py but on the sampler itself: not the model's, not torch's
    (its global settings included)."""
    tree = ast.parse((REPO / "models" / "sampler.py").read_text())
    private = [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
               and not (isinstance(node.value, ast.Name) and node.value.id == "self")]
    assert private == []


def test_generation_leaves_the_model_as_it_was(tiny_dir):
    """KV caches, plans and noise stay with the sampler: the model holds the same tensors and
    attributes before and after sampling, and its transformer runs without caches afterwards."""
    model = load_model(tiny_dir)
    before_bytes = held_bytes(model)
    before_attributes = {name: sorted(vars(module)) for name, module in model.named_modules()}
    sampler = Sampler(model)
    out = sampler.generate(labels=torch.tensor([1, 2]), cfg=1.5, temperature=1.0,
                           generator=torch.Generator().manual_seed(0))
    assert held_bytes(model) == before_bytes
    assert {name: sorted(vars(module)) for name, module in model.named_modules()} == before_attributes
    assert held_bytes(sampler) > before_bytes  # the caches are the sampler's
    with torch.no_grad():
        assert model.eval()(out.tokens, torch.tensor([1, 2])).shape == (2, model.num_tokens, model.codebook_size)


def test_caches_are_kept_per_batch_shape_and_written_in_place(tiny_dir):
    model = load_model(tiny_dir)
    sampler = Sampler(model)
    labels = torch.tensor([1, 2])
    first = sampler.generate(labels=labels, temperature=0)
    keys = sampler.caches[0][0]
    again = sampler.generate(labels=labels, temperature=0)
    assert sampler.caches[0][0] is keys and all(map(torch.equal, first.tokens, again.tokens))
    sampler.generate(labels=labels, cfg=1.5, temperature=0)  # guidance doubles the rows
    assert sampler.caches[0][0].shape[0] == 4
