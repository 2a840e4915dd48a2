"""A leading ~ in a path is the home folder, in configs (their options and their model section's
paths) and on the command line (issue 23)."""
import shutil
from dataclasses import dataclass

import pytest
import torch

import evaluator
import main
from common.config import ArgumentParser, add_arguments, command_line, given_options, make, option, yaml_section
from models import build_generator
from models.checkpoint_format import read_config
from train_ae_codebook import main_train_ae
from train_support import FAST_ARGS, digits_subset, tiny_config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return digits_subset(tmp_path_factory, per_class=1)


@dataclass
class Paths:
    out: str = option("a folder", "out", path=True)
    inputs: list[str] = option("files", [], path=True)
    name: str = option("not a path", "~x")


def test_a_leading_tilde_is_the_home_folder_in_configs_and_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = str(tmp_path / "home")
    from_yaml = make(Paths, yaml_section({"out": "~/runs/a", "inputs": ["~/x.npz", "/abs"], "name": "~n"}, "c.yaml",
                                         "args"))
    assert (from_yaml.out, from_yaml.inputs, from_yaml.name) == (f"{home}/runs/a", [f"{home}/x.npz", "/abs"], "~n")
    parser = add_arguments(ArgumentParser("paths"), Paths)
    given = given_options(parser, ["--out=~/b", "--inputs", "~/y.npz,~/z.npz", "--name", "~m"])
    assert given["out"] == f"{home}/b"  # before any use: scripts open some (--config, --resume) first
    cli = make(Paths, command_line(given))
    assert (cli.out, cli.inputs, cli.name) == (f"{home}/b", [f"{home}/y.npz", f"{home}/z.npz"], "~m")


def test_main_takes_tilde_paths_from_its_config_and_command_line(data, tiny_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    tiny_config(home / "tiny.yaml", tiny_dir, **FAST_ARGS, output_dir="~/runs/a", log_dir="~/tb")
    config = main.parse_config(["--config=~/tiny.yaml", "--data_path", str(data)])
    assert (config.config, config.output_dir, config.log_dir) == (str(home / "tiny.yaml"), str(home / "runs" / "a"),
                                                                  str(home / "tb"))
    assert evaluator.get_args_parser().parse_args(["~/ref.npz", "~/sample"]).ref == str(home / "ref.npz")
    assert main_train_ae.get_args_parser().parse_args(["--config=~/ae.yaml"]).config == str(home / "ae.yaml")


def test_a_model_sections_autoencoder_paths_take_a_tilde(tiny_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    shutil.copytree(tiny_dir / "autoenc", home / "ae")
    monkeypatch.setenv("HOME", str(home))
    section, _ = read_config(tiny_dir / "config.yaml")
    built = {}
    for folder in ("~/ae", str(home / "ae")):
        section["autoenc"] = {**section["autoenc"], "config_path": f"{folder}/autoencoder_config.yaml",
                              "checkpoint_path": f"{folder}/checkpoint.pth"}
        built[folder] = build_generator(section, tmp_path / "elsewhere", source="c.yaml").autoencoder.state_dict()
    tilde, absolute = built.values()
    assert tilde.keys() == absolute.keys() and all(torch.equal(tilde[k], absolute[k]) for k in tilde)
