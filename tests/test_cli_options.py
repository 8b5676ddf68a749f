"""The config dataclasses are the one source of the commands' options: every setting has an
option, named by one scheme, whose default and choices are the dataclass's own."""

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
# run's seed, the phrase count comes from word2vec, one tokenizer so far.
NOT_OPTIONS = {"model.vocab_size", "model.embed_dim", "text.tokenizer", "text.phrases"}
NOT_OPTIONS |= {"embeddings.seed"}
GROUPS = {"embeddings": "w2v_"}


def _params(command: str, argv: list[str]) -> dict:
    ctx = COMMAND.commands[command].make_context(command, argv)
    return ctx.params


def _leaves(cls: type, path: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
            out += _leaves(f.default_factory, f"{path}{f.name}.")
        else:
            out.append(path + f.name)
    return out


def _param_name(leaf: str) -> str:
    group, _, name = leaf.rpartition(".")
    return GROUPS.get(group, "") + name


def test_defaults_are_the_dataclasses_defaults() -> None:
    params = _params("train", ["--data", "d"])
    assert from_options(TrainConfig, {**params, "w2v_seed": 0}, "", GROUPS) == TrainConfig(data="d")
    params = _params("score", ["in.parquet"])
    assert from_options(ScoreConfig, params) == ScoreConfig(inputs=("in.parquet",))
    params = _params("embeddings", ["--data", "d", "--output", "o"])
    assert from_options(EmbeddingConfig, params, "w2v_") == EmbeddingConfig()


@pytest.mark.parametrize(
    ("command", "cls", "missing"),
    [("train", TrainConfig, NOT_OPTIONS), ("score", ScoreConfig, set())],
)
def test_every_setting_has_an_option(command: str, cls: type, missing: set[str]) -> None:
    names = {p.name for p in COMMAND.commands[command].params}
    leaves = set(_leaves(cls)) - missing
    assert {leaf for leaf in leaves if _param_name(leaf) not in names} == set()


def test_word2vec_options_share_one_spelling() -> None:
    for command in ("train", "embeddings"):
        for p in COMMAND.commands[command].params:
            # the vectors' source, format and limit are --embeddings-* in train, and
            # --source/--format/--limit in `embeddings`; the seed is the run's --seed
            if p.name.startswith("w2v_") and p.name[4:] not in (
                "source",
                "format",
                "limit",
                "seed",
            ):
                assert p.opts[0].startswith("--w2v-"), (command, p.opts)


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
    cfg = from_options(TrainConfig, {**params, "w2v_seed": params["seed"]}, "", GROUPS)
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
