"""A linear n-gram head beside the GRU: TF-IDF of a review's known words and word pairs,
scored by L2-regularised logistic regression (what a TF-IDF + logistic-regression baseline
does), fitted on the driver before the GRU trains and averaged with it when scoring.

The features come from the token ids the GRU reads (words of the vocabulary, in order,
cut at max_tokens), so the head needs no tokenizer or vocabulary of its own: feature i < V
is word i, feature V + j is the j-th pair in `NgramHead.pairs` (sorted keys a·V + b, pairs
seen in at least `min_df` training reviews). A review's vector is tf times smoothed idf,
divided by √(Σ tf · idf²) (its L2 norm when no feature repeats), so that the logit
coef · x + bias is a sum over the review's occurrences: no counting, sorting or scatter
when scoring. (Sublinear tf with the exact L2 norm validated 0.2–0.3 points higher, within
the folds' noise, and made the head twice as costly: tests/benchmarks/RESULTS.md.)
Everything runs in torch, batched, on the model's device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sentiment.text import pad_batch

log = logging.getLogger(__name__)

FIRST_WORD = 2  # ids 0 and 1 are padding and <unk>: never features


@dataclass
class NgramFit:
    """A fitted head's arrays: the buffers of `NgramHead`."""

    pairs: np.ndarray  # (P,) int64, sorted: a * vocab_size + b
    idf: np.ndarray  # (V + P,) float32
    coef: np.ndarray  # (V + P,) float32
    bias: float
    train_accuracy: float
    iterations: int


class NgramHead(nn.Module):
    """Logit of P(positive) from a review's word and word-pair TF-IDF vector."""

    def __init__(self, vocab_size: int, n_pairs: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("pairs", torch.zeros(n_pairs, dtype=torch.int64))
        self.register_buffer("idf", torch.zeros(vocab_size + n_pairs))
        self.register_buffer("coef", torch.zeros(vocab_size + n_pairs))
        self.register_buffer("bias", torch.zeros(1))

    def load_fit(self, fit: NgramFit) -> None:
        # torch.tensor copies: the arrays may be read-only (a Ray worker's, from the object
        # store), which torch.as_tensor warns about.
        with torch.no_grad():
            self.pairs.copy_(torch.tensor(fit.pairs, dtype=torch.int64))
            self.idf.copy_(torch.tensor(fit.idf, dtype=torch.float32))
            self.coef.copy_(torch.tensor(fit.coef, dtype=torch.float32))
            self.bias.fill_(float(fit.bias))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) right-padded, lengths (B,) → logits (B,): one weight per occurrence,
        summed per row; no counting, sorting or scatter."""
        feats = features(ids, lengths, self.pairs, self.vocab_size)  # (B, L), none = -1
        index = feats.clamp(min=0)
        weight = torch.where(feats >= 0, self.idf[index], 0.0)
        norm = weight.square().sum(1).sqrt().clamp(min=1e-12)
        return (weight * self.coef[index]).sum(1) / norm + self.bias


def features(
    ids: torch.Tensor, lengths: torch.Tensor, pairs: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """(B, 2T - 1) feature ids of each position's word and of the pair it starts; -1 where
    there is none (padding, <unk>, a pair not kept)."""
    T = ids.shape[1]
    positions = torch.arange(T, device=ids.device).unsqueeze(0)
    lengths = lengths.to(ids.device).unsqueeze(1)
    words = torch.where((positions < lengths) & (ids >= FIRST_WORD), ids, -1)
    if T < 2 or not len(pairs):
        return words
    keys = ids[:, :-1] * vocab_size + ids[:, 1:]  # (B, T - 1)
    slot = torch.searchsorted(pairs, keys).clamp(max=len(pairs) - 1)
    found = (positions[:, :-1] < lengths - 1) & (pairs[slot] == keys)
    return torch.cat([words, torch.where(found, vocab_size + slot, -1)], 1)


def term_counts(
    ids: torch.Tensor, lengths: torch.Tensor, pairs: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's non-zero term counts as (row, feature, count) triples (for the fit)."""
    feats = features(ids, lengths, pairs, vocab_size)
    rows = torch.arange(len(feats)).unsqueeze(1).expand_as(feats)[feats >= 0]
    feats = feats[feats >= 0]
    n_feats = vocab_size + len(pairs)
    cells, tf = torch.unique(rows * n_feats + feats, return_counts=True)
    return cells // n_feats, cells % n_feats, tf.float()


def fit_ngram_head(
    reviews: Sequence[np.ndarray],
    labels: np.ndarray,
    vocab_size: int,
    c: float,
    min_df: int = 2,
    max_iter: int = 300,
) -> NgramFit:
    """Fit the head on encoded training reviews: pairs kept, idf, and logistic regression
    minimising C · Σ log-loss + ½ ‖coef‖² (liblinear's objective; bias unpenalised) by L-BFGS."""
    labels = np.asarray(labels, dtype=np.int64)
    keys = [r[:-1] * vocab_size + r[1:] for r in reviews if len(r) > 1]
    if keys:
        distinct = np.concatenate([np.unique(k) for k in keys])
        pair_keys, df = np.unique(distinct, return_counts=True)
        pairs = pair_keys[df >= min_df]
    else:
        pairs = np.zeros(0, dtype=np.int64)
    pairs_t = torch.from_numpy(np.ascontiguousarray(pairs, dtype=np.int64))
    n_feats = vocab_size + len(pairs)
    rows, feats, tfs = [], [], []
    for start in range(0, len(reviews), 1024):  # count in batches: padded tensors stay small
        chunk = reviews[start : start + 1024]
        ids, lengths = pad_batch(chunk)
        r, f, t = term_counts(torch.from_numpy(ids), torch.from_numpy(lengths), pairs_t, vocab_size)
        rows.append(r + start)
        feats.append(f)
        tfs.append(t)
    rows_t, feats_t, tf_t = torch.cat(rows), torch.cat(feats), torch.cat(tfs)
    n = len(reviews)
    df_t = torch.zeros(n_feats, dtype=torch.float64).index_add_(
        0, feats_t, torch.ones_like(feats_t, dtype=torch.float64)
    )
    idf = (torch.log((1.0 + n) / (1.0 + df_t)) + 1.0).float()
    squares = torch.zeros(n).index_add_(0, rows_t, tf_t * idf[feats_t].square())
    values = tf_t * idf[feats_t] / squares.sqrt().clamp(min=1e-12)[rows_t]
    x = torch.sparse_coo_tensor(
        torch.stack([rows_t, feats_t]), values, (n, n_feats), check_invariants=True
    ).coalesce()
    y = torch.from_numpy(labels).float() * 2 - 1  # ±1

    coef = torch.zeros(n_feats, requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [coef, bias],
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        margin = y * ((x @ coef.unsqueeze(1)).squeeze(1) + bias)
        loss = c * torch.nn.functional.softplus(-margin).sum() + 0.5 * (coef * coef).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        logits = (x @ coef.unsqueeze(1)).squeeze(1) + bias
        accuracy = float(((logits > 0).long() == torch.from_numpy(labels)).float().mean())
    log.info(
        "n-gram head: %d words + %d pairs, C %g, %d evaluations, train accuracy %.2f %%",
        vocab_size,
        len(pairs),
        c,
        evaluations,
        100 * accuracy,
    )
    return NgramFit(
        pairs=pairs,
        idf=idf.numpy(),
        coef=coef.detach().numpy(),
        bias=float(bias.detach()),
        train_accuracy=accuracy,
        iterations=evaluations,
    )
