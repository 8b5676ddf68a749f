"""The config dataclasses are the one source of the commands' options: every setting has an
option, named by one scheme, whose default, help and choices are the dataclass field's."""

from __future__ import annotations

import dataclasses

import pytest
import typer.main
from typer.testing import CliRunner

from sentiment.cli import app, from_options
from sentiment.config import (
    READOUTS,
    VARIANTS,
    EmbeddingConfig,
    ScoreConfig,
    TrainConfig,
)

COMMAND = typer.main.get_command(app)
# Set by the run itself, not by an option: sizes come from the vectors, word2vec takes the
# run's seed, the phrase count comes from word2vec, one tokenizer so far, the n-gram head's
# presence and size come from --ngrams and the fit; inputs are `score`'s arguments.
NOT_OPTIONS = {"model.vocab_size", "model.embed_dim", "text.tokenizer", "text.phrases"}
NOT_OPTIONS |= {"model.ngrams", "model.ngram_pairs"}
NOT_OPTIONS |= {"embeddings.seed", "inputs"}


def _params(command: str, argv: list[str]) -> dict:
    return COMMAND.commands[command].make_context(command, argv).params


def _leaves(cls: type, path: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
            out += _leaves(f.default_factory, f"{path}{f.name}.")
        else:
            out.append(path + f.name)
    return out


def _options(command: str) -> dict[str, str]:
    return {p.name: p.opts[0] for p in COMMAND.commands[command].params}


def test_defaults_are_the_dataclasses_defaults() -> None:
    params = _params("train", ["--data", "d"])
    assert from_options(TrainConfig, params) == TrainConfig(data="d")
    params = _params("score", ["in.parquet"])
    assert from_options(ScoreConfig, params) == ScoreConfig(inputs=("in.parquet",))
    params = _params("embeddings", ["--data", "d", "--output", "o"])
    assert from_options(EmbeddingConfig, params) == EmbeddingConfig()


@pytest.mark.parametrize(("command", "cls"), [("train", TrainConfig), ("score", ScoreConfig)])
def test_every_setting_has_an_option(command: str, cls: type) -> None:
    names = set(_options(command))
    leaves = set(_leaves(cls)) - NOT_OPTIONS
    assert {leaf for leaf in leaves if leaf.replace(".", "__") not in names} == set()


def test_one_spelling_per_group() -> None:
    train, embeddings = _options("train"), _options("embeddings")
    for name in ("dim", "min_count", "window", "epochs", "negative", "sample", "phrases"):
        assert train[f"embeddings__{name}"] == embeddings[name] == f"--w2v-{name}".replace("_", "-")
    assert (train["embeddings__sg"], embeddings["sg"]) == ("--w2v-skipgram",) * 2
    for name in ("source", "format", "limit"):  # the vectors' own: --embeddings* in train
        assert train[f"embeddings__{name}"].startswith("--embeddings")
        assert embeddings[name] == f"--{name}"
    assert train["model__hidden_size"] == "--hidden-size" and train["model__variant"] == "--model"


def test_choices_are_the_librarys_names() -> None:
    for option, names in (("--model", VARIANTS), ("--readout", READOUTS)):
        for name in names:  # max-mean too, which a hand-written choice list once missed
            params = _params("train", ["--data", "d", option, name])
            assert name in {getattr(v, "value", v) for v in params.values()}
        result = CliRunner().invoke(app, ["train", "--data", "d", option, "nonsense"])
        assert result.exit_code == 2 and "nonsense" in result.output


def test_options_reach_the_config() -> None:
    argv = ["--data", "d", "--model", "gruh", "--readout", "max-mean", "--lr-schedule"]
    argv += ["constant", "--grad-clip", "0", "--w2v-window", "3", "--w2v-cbow"]
    argv += ["--trainable-embeddings", "--threads", "2", "--resource-timeout", "5", "--seed", "7"]
    argv += ["--w2v-corpus", "a", "--w2v-corpus", "b", "--embeddings-limit", "10"]
    params = _params("train", argv)
    cfg = from_options(TrainConfig, {**params, "embeddings__seed": params["seed"]})
    assert (cfg.model.variant, cfg.model.readout, cfg.model.freeze_embeddings) == (
        "gruh",
        "max-mean",
        False,
    )
    assert (cfg.lr_schedule, cfg.grad_clip, cfg.threads_per_worker) == ("constant", 0.0, 2)
    assert cfg.resource_timeout_s == 5.0 and cfg.seed == 7
    assert cfg.embeddings == dataclasses.replace(
        EmbeddingConfig(), window=3, sg=False, seed=7, corpus=("a", "b"), limit=10
    )


def test_help_comes_from_the_field() -> None:
    helps = {p.name: p.help for p in COMMAND.commands["score"].params}
    field = {f.name: f for f in dataclasses.fields(ScoreConfig)}["incremental"]
    assert helps["incremental"] == field.metadata["help"]
    assert helps["incremental"] == "Only score input files the committed manifest does not list."
