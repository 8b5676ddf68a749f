"""The Scorer: load a model directory once, then score batches of review texts (no Ray).

It is the compute core of `sentiment-jobs score`: Ray Data runs one Scorer per
actor, and the same class scores in a plain process, a test, or a GPU box
without Ray. Every input row gets a `score_status`; rows that cannot be scored
keep null predictions instead of being dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from sentiment.artifacts import load_model_dir
from sentiment.models import set_up_for
from sentiment.text import pad_batch

log = logging.getLogger(__name__)

# Reviews per forward pass when none is given. CPU: small passes keep each step's gate
# tensors in cache (measured: tests/benchmarks/RESULTS.md). GPU: a judgement, not measured
# (no GPU was lent): large enough to fill the device through cuDNN.
CPU_MODEL_BATCH = 128
GPU_MODEL_BATCH = 1024

# score_status values; every one but `ok` and `truncated` leaves the predictions null.
OK, TRUNCATED = "ok", "truncated"
NULL_TEXT, NOT_TEXT, EMPTY_TEXT, NO_KNOWN_TOKENS = (
    "null_text",
    "not_text",
    "empty_text",
    "no_known_tokens",
)
STATUSES = (OK, TRUNCATED, NULL_TEXT, NOT_TEXT, EMPTY_TEXT, NO_KNOWN_TOKENS)
OUTPUT_COLUMNS = ("sentiment", "p_positive", "model_id", "score_status")
OUTPUT_SCHEMA = pa.schema(
    [
        ("sentiment", pa.string()),
        ("p_positive", pa.float32()),
        ("model_id", pa.string()),
        ("score_status", pa.string()),
    ]
)


@dataclass
class Scores:
    """Predictions for a batch of texts, in input order."""

    p_positive: np.ndarray  # (N,) float32, NaN where not scored
    status: list[str]

    @property
    def sentiment(self) -> list[str | None]:
        return [
            None if np.isnan(p) else ("positive" if p >= 0.5 else "negative")
            for p in self.p_positive
        ]


class Scorer:
    """A model directory loaded once; `score_texts` for lists, `__call__` for Arrow tables."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        text_column: str = "text",
        max_tokens: int = 0,
        batch_size: int = 0,
        device: str | None = None,
        threads: int = 0,
    ):
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        loaded = load_model_dir(model_dir, self.device)
        self.model, self.vocab, self.model_id = loaded.model, loaded.vocab, loaded.model_id
        set_up_for(self.model, self.device, inference=True)
        self.max_tokens = max_tokens or loaded.text.max_tokens
        self.text_column = text_column
        self.batch_size = batch_size or (
            GPU_MODEL_BATCH if self.device.type == "cuda" else CPU_MODEL_BATCH
        )
        log.info("scorer %s on %s (max_tokens %d)", self.model_id, self.device, self.max_tokens)

    def score_texts(self, texts: Sequence[object]) -> Scores:
        """Scores for review texts; None, non-strings and empty ones get their status."""
        status = [OK] * len(texts)
        ids: list[list[int]] = []
        rows: list[int] = []
        for row, text in enumerate(texts):
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError:
                    status[row] = NOT_TEXT
                    continue
            if text is None:
                status[row] = NULL_TEXT
            elif not isinstance(text, str):
                status[row] = NOT_TEXT
            elif not text.strip():
                status[row] = EMPTY_TEXT
            else:
                enc = self.vocab.encode(text, self.max_tokens)
                if not enc.ids:
                    status[row] = NO_KNOWN_TOKENS
                else:
                    status[row] = TRUNCATED if enc.truncated else OK
                    ids.append(enc.ids)
                    rows.append(row)
        p = np.full(len(texts), np.nan, dtype=np.float32)
        if ids:
            p[np.asarray(rows)] = self._predict(ids)
        return Scores(p_positive=p, status=status)

    @torch.inference_mode()
    def _predict(self, ids: list[list[int]]) -> np.ndarray:
        """P(positive) for non-empty id lists, batched by length so padding stays small."""
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty(len(ids), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            padded, lengths = pad_batch([ids[i] for i in chunk])
            log_probs = self.model(
                torch.from_numpy(padded).to(self.device), torch.from_numpy(lengths).to(self.device)
            )
            out[chunk] = log_probs[:, 1].exp().float().cpu().numpy()
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Ray Data's batch UDF: the input table with the four output columns appended."""
        scores = self.score_texts(text_values(batch.column(self.text_column)))
        n = batch.num_rows
        columns = {
            "sentiment": pa.array(scores.sentiment, pa.string()),
            "p_positive": pa.array(
                scores.p_positive, pa.float32(), mask=np.isnan(scores.p_positive)
            ),
            "model_id": pa.array([self.model_id] * n, pa.string()),
            "score_status": pa.array(scores.status, pa.string()),
        }
        for name in OUTPUT_COLUMNS:  # a pass-through column of the same name is replaced
            if name in batch.column_names:
                batch = batch.drop_columns([name])
        for name in OUTPUT_COLUMNS:
            batch = batch.append_column(OUTPUT_SCHEMA.field(name), columns[name])
        return batch


_AS_BYTES = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}
if hasattr(pa, "string_view"):  # pyarrow >= 16
    _AS_BYTES[pa.string_view()] = pa.binary_view()


def text_values(column: pa.ChunkedArray | pa.Array) -> list[object]:
    """A text column as Python values. A string column holding bytes that are not UTF-8
    (Parquet writers do not all check) is read as bytes, so that `score_texts` marks just
    those rows `not_text` instead of the whole batch failing to convert."""
    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        pass
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    values: list[object] = []
    for chunk in chunks:
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_decode()
        binary = _AS_BYTES.get(chunk.type)
        values.extend(chunk.view(binary).to_pylist() if binary else chunk.to_pylist())
    return values
