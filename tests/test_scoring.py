"""The Ray-free Scorer: statuses, padding invariance, Arrow in and out, safe loading."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sentiment.artifacts import load_model_dir
from sentiment.config import SentimentError
from sentiment.scoring import Scorer
from tests.conftest import make_reviews, train_tiny_model


@pytest.fixture(scope="module")
def scorer(tiny_model) -> Scorer:
    return Scorer(tiny_model, batch_size=64)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("great product i love it", "ok"),
        (None, "null_text"),
        ("", "empty_text"),
        ("   \n\t ", "empty_text"),
        (123, "not_text"),
        (b"\xff\xfe broken", "not_text"),
        (b"great bytes", "ok"),
        ("zzz qqq xyzzy", "no_known_tokens"),
        ("great " * 100_000, "truncated"),
    ],
    ids=["ok", "null", "empty", "whitespace", "int", "bad-bytes", "utf8-bytes", "unknown", "100k"],
)
def test_every_row_gets_a_status(scorer, text, status):
    scores = scorer.score_texts(["awful product", text, "great"])
    assert scores.status == ["ok", status, "ok"]
    p = scores.p_positive[1]
    if status in ("ok", "truncated"):
        assert 0.0 <= p <= 1.0 and scores.sentiment[1] in ("positive", "negative")
    else:
        assert math.isnan(p) and scores.sentiment[1] is None


def test_the_model_separates_the_generated_reviews(scorer):
    rows = make_reviews(200, seed=7)
    scores = scorer.score_texts([r["text"] for r in rows])
    predicted = (scores.p_positive >= 0.5).astype(int)
    assert (predicted == [r["label"] for r in rows]).mean() > 0.9


@pytest.mark.parametrize("variant", ["gru", "grub", "gruh", "pmgru"])
def test_a_review_alone_and_in_a_large_padded_batch_get_the_same_probability(tmp_path, variant):
    train_tiny_model(tmp_path / variant, variant, steps=5)
    scorer = Scorer(tmp_path / variant, batch_size=512)
    texts = [r["text"] for r in make_reviews(300, seed=3)] + ["great " * 350]
    together = scorer.score_texts(texts).p_positive
    alone = np.array([scorer.score_texts([t]).p_positive[0] for t in texts])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


def test_arrow_batch_keeps_input_columns_and_appends_predictions(scorer, tiny_model):
    table = pa.table(
        {
            "id": pa.array([3, 1, 2], pa.int64()),
            "text": ["great", None, "awful"],
            "extra": [{"a": 1}, {"a": 2}, {"a": 3}],
        }
    )
    out = scorer(table)
    assert out.column_names == [
        "id",
        "text",
        "extra",
        "sentiment",
        "p_positive",
        "model_id",
        "score_status",
    ]
    assert out.select(["id", "text", "extra"]).equals(table)
    assert out.schema.field("p_positive").type == pa.float32()
    assert out["score_status"].to_pylist() == ["ok", "null_text", "ok"]
    assert out["p_positive"].null_count == 1 and out["sentiment"].to_pylist()[1] is None
    assert set(out["model_id"].to_pylist()) == {load_model_dir(tiny_model).model_id}


def test_max_tokens_override_truncates(tiny_model):
    scorer = Scorer(tiny_model, max_tokens=3)
    assert scorer.score_texts(["great love best happy"]).status == ["truncated"]
    assert scorer.score_texts(["great love best"]).status == ["ok"]


def test_scorer_runs_on_cpu_when_torch_sees_no_gpu(scorer):
    assert scorer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert next(scorer.model.parameters()).device.type == scorer.device.type


def test_pickled_weights_are_never_loaded(tmp_path, tiny_model):
    """A model.safetensors that is really a pickle (which could run code) is refused."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (bad / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(SentimentError, match=r"model\.safetensors: cannot load weights"):
        Scorer(bad)
    assert not marker.exists()


def test_not_a_model_directory(tmp_path):
    with pytest.raises(SentimentError, match="not a model directory"):
        Scorer(tmp_path)


def test_batch_size_defaults_per_device_and_bad_sizes_are_refused(tiny_model):
    from sentiment.config import ScoreConfig
    from sentiment.scoring import CPU_MODEL_BATCH, GPU_MODEL_BATCH

    default = GPU_MODEL_BATCH if torch.cuda.is_available() else CPU_MODEL_BATCH
    assert Scorer(tiny_model).batch_size == default
    assert Scorer(tiny_model, batch_size=7).batch_size == 7
    assert ScoreConfig(model_batch_size=0).model_batch_size == 0  # 0: the Scorer chooses
    for bad in ({"batch_size": 0}, {"model_batch_size": -1}):
        with pytest.raises(SentimentError, match="--batch-size must be >= 1"):
            ScoreConfig(**bad)


# --- issue 9: undecodable rows, errors inside a scoring actor, hostile model directories ---


def invalid_utf8(kind: pa.DataType) -> pa.ChunkedArray:
    """A string column holding a lone surrogate (0xed 0xa0 0x80) and a stray 0xff, as some
    Parquet writers store them: Arrow does not check string bytes on read."""
    raw = pa.array([b"great product", b"\xed\xa0\x80 awful", None, b"\xff"], pa.binary())
    column = raw.view(pa.string())
    if pa.types.is_dictionary(kind):
        column = column.dictionary_encode()
    elif kind != pa.string():
        column = column.cast(kind)
    return pa.chunked_array([column, column.slice(0, 1)])


@pytest.mark.parametrize(
    "kind",
    [pa.string(), pa.large_string(), pa.string_view(), pa.dictionary(pa.int32(), pa.string())],
    ids=["string", "large_string", "string_view", "dictionary"],
)
def test_invalid_utf8_in_a_string_column_is_not_text(scorer, kind):
    table = pa.table({"text": invalid_utf8(kind)})
    with pytest.raises(UnicodeDecodeError):
        table.column("text").to_pylist()  # what the Scorer used to do with the whole batch
    out = scorer(table)
    assert out["score_status"].to_pylist() == ["ok", "not_text", "null_text", "not_text", "ok"]
    assert out.column("text").equals(table.column("text"))  # passed through unchanged


def test_actor_error_names_file_row_group_and_reason(tiny_model, tmp_path):
    """Any exception inside a scoring actor becomes one line naming the file and row group
    of the row that caused it, and the reason (here the actor runs without Ray)."""
    import json

    from sentiment.pipeline import POS, SOURCE, UNIT, ScorerActor

    (tmp_path / "_staging").mkdir()  # the driver's part
    actor = ScorerActor(
        model_dir=str(tiny_model), text_column="text", max_tokens=0, batch_size=64,
        pool_rows=4096, threads=1, output=str(tmp_path), staging=str(tmp_path / "_staging"),
    )  # fmt: skip
    real = actor.scorer.score_texts

    def score_texts(texts):
        if "poison" in texts:
            raise RuntimeError("something broke\n  deep inside")
        return real(texts)

    actor.scorer.score_texts = score_texts
    source = json.dumps([{"uri": "/data/b.parquet", "groups": [2, 3], "rows": [2, 2], "at": 0}])
    batch = pa.table(
        {
            "text": ["great", "awful", "love", "poison"],
            UNIT: pa.array([5] * 4, pa.int64()),
            POS: pa.array(range(4), pa.int64()),
            SOURCE: pa.DictionaryArray.from_arrays(pa.array([0] * 4, pa.int32()), [source]),
        }
    )
    with pytest.raises(SentimentError) as err:
        actor(batch)
    assert str(err.value) == (
        "/data/b.parquet: row group 3: scoring failed: RuntimeError: something broke deep inside"
    )
    receipt = actor(batch.slice(0, 3)).to_pylist()
    assert [(r["unit"], r["first"], r["rows"]) for r in receipt] == [(5, 0, 3)]
    assert receipt[0]["path"].endswith(".staged")  # no `*.parquet` glob sees it
    ok = pq.read_table(receipt[0]["path"])
    assert ok["score_status"].to_pylist() == ["ok"] * 3
    assert not {UNIT, POS, SOURCE} & set(ok.column_names)


def copy_model(tiny_model, directory):
    import shutil

    shutil.copytree(tiny_model, directory)
    return directory


def edit_config(directory, **model):
    import json

    config = json.loads((directory / "config.json").read_text())
    config["model"].update(model)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"hidden_size": 10**6}, r"config\.json: hidden_size must be an integer in 1\.\.8192"),
        ({"vocab_size": 10**9}, r"config\.json: vocab_size must be an integer in 2\.\."),
        ({"layers": 10**4}, r"config\.json: layers must be an integer in 1\.\.16"),
        ({"embed_dim": "300"}, r"config\.json: embed_dim must be an integer .* got '300'"),
        ({"hidden_size": 8.5}, r"config\.json: hidden_size must be an integer"),
        ({"bidirectional": "yes"}, r"config\.json: bidirectional must be true or false"),
        (
            {"vocab_size": 10**7, "embed_dim": 4096},
            r"config\.json: 40,960,[\d,]+ parameters .* exceed the limit",
        ),
        ({"hidden_size": 16}, r"model\.safetensors: tensor .* has shape \[24\] .* gives \[48\]"),
        ({"layers": 2}, r"model\.safetensors: no tensor encoder\.layers\.1\..*, which config"),
        ({"embed_dim": 9}, r"model\.safetensors: tensor embedding\.weight has shape \[\d+, 8\]"),
    ],
    ids=[
        "hidden-1e6",
        "vocab-1e9",
        "layers-1e4",
        "string",
        "float",
        "bool",
        "too-many-parameters",
        "hidden-vs-weights",
        "layers-vs-weights",
        "embed-vs-weights",
    ],
)
def test_absurd_or_inconsistent_model_config_is_refused_before_allocation(
    tmp_path, tiny_model, model, message
):
    directory = copy_model(tiny_model, tmp_path / "m")
    edit_config(directory, **model)
    with pytest.raises(SentimentError, match=message):
        load_model_dir(directory)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: d.joinpath("model.safetensors").write_bytes(b"\xff" * 8 + b"{}"), "header"),
        (lambda d: _rewrite_header(d, lambda h: h["head.bias"].update(shape=[3])), r"\[3\]"),
        (
            lambda d: _rewrite_header(
                d, lambda h: h["head.bias"].update(data_offsets=[0, 1 << 40])
            ),
            "claims bytes",
        ),
        (lambda d: _rewrite_header(d, lambda h: h.update(extra=h["head.bias"])), "tensor extra"),
    ],
    ids=["header-length", "shape", "offsets", "extra-tensor"],
)
def test_tampered_safetensors_header_is_refused(tmp_path, tiny_model, tamper, message):
    directory = copy_model(tiny_model, tmp_path / "m")
    tamper(directory)
    with pytest.raises(SentimentError, match=rf"model\.safetensors: .*{message}"):
        load_model_dir(directory)


def _rewrite_header(directory, change) -> None:
    import json

    path = directory / "model.safetensors"
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    change(header)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length :])


@pytest.mark.parametrize(
    "pointer",
    ["../elsewhere/model", "../../../../elsewhere/model", "/abs/elsewhere/model", "..", ""],
)
def test_latest_must_resolve_inside_the_store(tmp_path, tiny_model, pointer):
    from sentiment.artifacts import resolve_model

    copy_model(tiny_model, tmp_path / "elsewhere" / "model")
    store = tmp_path / "store"
    store.mkdir()
    (store / "LATEST").write_text(pointer.replace("/abs", str(tmp_path)) + "\n")
    with pytest.raises(SentimentError, match=r"LATEST: .* is not the name of a model in the store"):
        resolve_model("latest", str(store))


def test_store_links_leading_outside_the_store_are_refused(tmp_path, tiny_model):
    from sentiment.artifacts import resolve_model

    outside = copy_model(tiny_model, tmp_path / "elsewhere")
    store = tmp_path / "store"
    store.mkdir()
    (store / "gru-0123456789ab").symlink_to(outside)
    (store / "LATEST").write_text("gru-0123456789ab\n")
    for ref in ("latest", "gru-0123456789ab"):
        with pytest.raises(SentimentError, match="outside the model store"):
            resolve_model(ref, str(store))
    # a model directory in the store whose weights are a link out of it
    inside = copy_model(tiny_model, store / "gru-ba9876543210")
    (inside / "model.safetensors").unlink()
    (inside / "model.safetensors").symlink_to(outside / "model.safetensors")
    with pytest.raises(SentimentError, match=r"model\.safetensors: leads to .* outside"):
        resolve_model("gru-ba9876543210", str(store))
    # every file of it: phrases.txt (read as the vocabulary is) and any other
    for name in ("phrases.txt", "metrics.json"):
        (inside / "model.safetensors").unlink()
        (inside / "model.safetensors").write_bytes((outside / "model.safetensors").read_bytes())
        (outside / name).write_text("not\tthis\n")
        (inside / name).unlink(missing_ok=True)
        (inside / name).symlink_to(outside / name)
        with pytest.raises(SentimentError, match=rf"{name}: leads to .* outside"):
            resolve_model("gru-ba9876543210", str(store))
        (inside / name).unlink()
    # links that stay inside the store are fine
    (store / "LATEST").write_text("current\n")
    (store / "current").symlink_to(store / "gru-ba9876543210")
    (inside / "model.safetensors").unlink()
    (inside / "model.safetensors").write_bytes((outside / "model.safetensors").read_bytes())
    assert resolve_model("latest", str(store)) == store / "current"


def test_a_config_nested_too_deeply_is_one_error_not_a_recursion(tmp_path, tiny_model):
    directory = copy_model(tiny_model, tmp_path / "m")
    (directory / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SentimentError, match=r"config\.json: nested too deeply"):
        load_model_dir(directory)
