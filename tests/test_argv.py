"""The command-line form of configs (`to_argv` / `from_argv`): how a Ray job gets its settings."""

from __future__ import annotations

import pytest

from sentiment.config import (
    EmbeddingConfig,
    ModelConfig,
    ScoreConfig,
    SentimentError,
    TextConfig,
    TrainConfig,
    from_argv,
    to_argv,
)

TRAIN = TrainConfig(
    data="/shared/reviews dir",
    model=ModelConfig(
        variant="gruh",
        hidden_size=8,
        dropout=0.25,
        freeze_embeddings=False,
        readout="max-mean",
        word_bias=True,
        word_dropout=0.1,
    ),
    text=TextConfig(max_tokens=50, phrases=12),
    embeddings=EmbeddingConfig(
        dim=16,
        min_count=1,
        epochs=5,
        sg=True,
        limit=1000,
        negative=10,
        sample=1e-4,
        phrases=10.0,
        corpus=("/data/unlabelled a.parquet", "s3://bucket/more"),
    ),
    epochs=2,
    weight_decay=0.01,
    label_smoothing=0.1,
    embedding_lr=1e-4,
    calibrate=False,
    ensemble=3,
    lr=3.3e-4,
    use_gpu=True,
    store="s3://bucket/models",
    name="run-1",
)
SCORE = ScoreConfig(
    inputs=("/data/a.parquet", "/data/b dir", "--odd-name.parquet"),
    output="/data/out",
    model="/models/gru-1",
    gpus_per_actor=0.5,
    actors=3,
    incremental=True,
    on_bad_file="skip",
)


@pytest.mark.parametrize("config", [TRAIN, SCORE, TrainConfig(), ScoreConfig()])
def test_round_trip(config):
    assert from_argv(type(config), to_argv(config)) == config


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (TrainConfig(), []),
        (
            TrainConfig(model=ModelConfig(variant="grub")),
            ["--model.variant", "grub", "--model.bidirectional"],
        ),
        (TrainConfig(model=ModelConfig(freeze_embeddings=False)), ["--model.no-freeze-embeddings"]),
        (TrainConfig(embeddings=EmbeddingConfig(dim=16)), ["--embeddings.dim", "16"]),
        (TrainConfig(lr=0.1 + 0.2), ["--lr", "0.30000000000000004"]),
        (ScoreConfig(inputs=("a", "b")), ["--inputs", "a", "--inputs", "b"]),
        (ScoreConfig(gpus_per_actor=0.0), ["--gpus-per-actor", "0.0"]),
    ],
)
def test_only_changed_settings_become_options(config, expected):
    assert to_argv(config) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["x.parquet", "y", "--model=/m"], ScoreConfig(inputs=("x.parquet", "y"), model="/m")),
        (["--incremental", "--no-incremental"], ScoreConfig(incremental=False)),
        (["--gpus-per-actor", "-1"], ScoreConfig()),
        (["--inputs", "a", "b"], ScoreConfig(inputs=("a", "b"))),
    ],
)
def test_from_argv_forms(argv, expected):
    assert from_argv(ScoreConfig, argv) == expected


def test_none_and_nested_values():
    cfg = from_argv(TrainConfig, ["--embeddings.limit", "none", "--model.hidden-size", "4"])
    assert cfg.embeddings.limit is None and cfg.model.hidden_size == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "many"], "option --epochs: expected int, got 'many'"),
        (["--epochs"], "option --epochs needs a value"),
        (["--colour", "red"], "unknown option --colour for TrainConfig"),
        (["--no-epochs"], "unknown option --no-epochs for TrainConfig"),
        (["--model.no-variant"], "unknown option --model.no-variant for TrainConfig"),
        (["stray"], "unexpected argument 'stray' for TrainConfig"),
        (["--epochs", "0"], "epochs must be >= 1, got 0"),
    ],
)
def test_bad_argv_is_a_clear_error(argv, message):
    with pytest.raises(SentimentError) as info:
        from_argv(TrainConfig, argv)
    assert str(info.value) == message
