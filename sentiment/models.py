"""The GRU sentiment classifiers: `gru`, `grub`, `gruh`, `pmgru` (no I/O, no Ray).

All variants read right-padded batches of token ids. Padding always sits after
a review's last real token and every recurrence here runs forward in time, so
no real position ever sees a padded one; the backward direction of a
bidirectional model runs forward over each review *reversed within its own
length*. A review therefore gets the same output alone and inside any padded
batch, without packing (which is pathologically slow to train on CPU,
pytorch/pytorch#149194) and without masks inside the cells.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sentiment.config import ModelConfig
from sentiment.ngrams import NgramHead
from sentiment.text import PAD, UNK


class _Cell(nn.Module):
    """Weights of a recurrent cell with `gates` gates, in torch.nn.GRU's names and layout."""

    def __init__(self, input_size: int, hidden_size: int, gates: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden_size))
        _init_uniform(self, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, I) -> (B, T, H)
        return self.recur(self.project(x))


class HandGRU(_Cell):
    """One direction of one layer of the GRU of Cho et al. (2014), looped over time:

        r_t = σ(W_r x_t + U_r h_{t-1} + b_r)          reset gate
        z_t = σ(W_z x_t + U_z h_{t-1} + b_z)          update gate
        h~_t = tanh(W_h x_t + U_h (r_t ⊙ h_{t-1}) + b_h)
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t

    Parameters use torch.nn.GRU's names and gate order (reset, update, candidate),
    but the update gate follows Cho et al.: h_t = (1 - z) h_{t-1} + z h~_t, where
    nn.GRU writes h_t = (1 - z) h~_t + z h_{t-1}; copying nn.GRU's weights
    therefore negates the update rows (see tests). `reset_after` puts the reset
    gate after the recurrent product, r ⊙ (U_h h + b), as nn.GRU does.
    """

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = False):
        super().__init__(input_size, hidden_size, gates=3)
        self.reset_after = reset_after

    def project(self, x: torch.Tensor) -> torch.Tensor:  # (..., I) -> (..., 3H)
        """The input's part of every gate, for all time steps at once: one big matmul
        instead of T small ones. The recurrent biases that are constants outside the
        reset product are folded in here (the candidate's too, without `reset_after`)."""
        return F.linear(
            x, self.weight_ih, self.bias_ih + _outer_bias(self.bias_hh, self.reset_after)
        )

    def recur(self, gates_x: torch.Tensor) -> torch.Tensor:  # (B, T, 3H) -> (B, T, H)
        inner = self.bias_hh.chunk(3)[2] if self.reset_after else None
        return gru_steps(gates_x, self.weight_hh, inner, update_keeps=False)


class PoorMansGRU(_Cell):
    """One direction of one layer of the one-gate "poor man's" GRU (a minimal GRU).

    A single forget gate f_t replaces both the update and the reset gate:
    h~_t = tanh(W_h x_t + U_h (f_t ⊙ h_{t-1})), h_t = (1 - f_t) h_{t-1} + f_t h~_t.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size, gates=2)  # forget, candidate

    def project(self, x: torch.Tensor) -> torch.Tensor:  # (..., I) -> (..., 2H)
        return F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)

    def recur(self, gates_x: torch.Tensor) -> torch.Tensor:  # (B, T, 2H) -> (B, T, H)
        # Split once, outside the loop: slicing inside it costs a zero-filled copy per
        # step in the backward pass.
        x_forget, x_candidate = (g.unbind(1) for g in gates_x.chunk(2, dim=2))
        u_forget, u_candidate = (w.t() for w in self.weight_hh.chunk(2))
        h = gates_x.new_zeros(gates_x.shape[0], self.hidden_size)
        outputs = []
        for xf, xn in zip(x_forget, x_candidate, strict=True):
            forget = torch.sigmoid(torch.addmm(xf, h, u_forget))
            candidate = torch.tanh(torch.addmm(xn, forget * h, u_candidate))
            h = torch.lerp(h, candidate, forget)
            outputs.append(h)
        return torch.stack(outputs, 1)


class TorchGRU(nn.Module):
    """One direction of one layer of `torch.nn.GRU`, run padded or packed."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.packed = False  # set per device by the caller; both give the same outputs

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.packed:
            return self.gru(x)[0]  # (B, T, H)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])
        return out

    def project(self, x: torch.Tensor) -> torch.Tensor:  # (..., I) -> (..., 3H)
        """nn.GRU's input part of each gate (r, z, n), with the r and z recurrent biases."""
        g = self.gru
        return F.linear(x, g.weight_ih_l0, g.bias_ih_l0 + _outer_bias(g.bias_hh_l0, True))

    def recur(self, gates_x: torch.Tensor) -> torch.Tensor:  # (B, T, 3H) -> (B, T, H)
        """nn.GRU's equations step by step from precomputed input gates, with its weights."""
        g = self.gru
        return gru_steps(gates_x, g.weight_hh_l0, g.bias_hh_l0.chunk(3)[2], update_keeps=True)


def gru_steps(
    gates_x: torch.Tensor,
    weight_hh: torch.Tensor,
    inner_bias: torch.Tensor | None,
    update_keeps: bool,
) -> torch.Tensor:
    """The GRU recurrence over (B, T, 3H) input gates [reset, update, candidate].

    `inner_bias` given: the reset gate applies after the recurrent product,
    r ⊙ (U_h h + b) (nn.GRU); None: before it, U_h (r ⊙ h) (Cho et al.). `update_keeps`:
    z weighs the old state (nn.GRU: h = (1 - z) h~ + z h) instead of the new one.
    Gates and weights are split once, outside the loop: slicing inside it costs a
    zero-filled copy per step in the backward pass.
    """
    if inner_bias is not None and not torch.is_grad_enabled():
        return _gru_steps_fused(gates_x, weight_hh, inner_bias, update_keeps)
    x_reset, x_update, x_candidate = (g.unbind(1) for g in gates_x.chunk(3, dim=2))
    u_reset, u_update, u_candidate = (w.t() for w in weight_hh.chunk(3))
    h = gates_x.new_zeros(gates_x.shape[0], weight_hh.shape[1])
    outputs = []
    for xr, xz, xn in zip(x_reset, x_update, x_candidate, strict=True):
        reset = torch.sigmoid(torch.addmm(xr, h, u_reset))
        update = torch.sigmoid(torch.addmm(xz, h, u_update))
        if inner_bias is None:
            candidate = torch.tanh(torch.addmm(xn, reset * h, u_candidate))
        else:
            candidate = torch.tanh(
                torch.addcmul(xn, reset, torch.addmm(inner_bias, h, u_candidate))
            )
        h = torch.lerp(candidate, h, update) if update_keeps else torch.lerp(h, candidate, update)
        outputs.append(h)
    return torch.stack(outputs, 1)


def _gru_steps_fused(
    gates_x: torch.Tensor, weight_hh: torch.Tensor, inner_bias: torch.Tensor, update_keeps: bool
) -> torch.Tensor:
    """`gru_steps` with the reset gate after U_h, without gradients (scoring, evaluation):
    one product h·U^T for all three gates per step, and one sigmoid for reset and update."""
    H = weight_hh.shape[1]
    bias = torch.cat([inner_bias.new_zeros(2 * H), inner_bias])
    u = weight_hh.t()
    x_steps = gates_x.unbind(1)
    h = gates_x.new_zeros(gates_x.shape[0], H)
    outputs = []
    for x in x_steps:
        gh = torch.addmm(bias, h, u)  # (B, 3H)
        reset_update = torch.sigmoid(x[:, : 2 * H] + gh[:, : 2 * H])
        reset, update = reset_update[:, :H], reset_update[:, H:]
        # tanh(a) = 2 σ(2a) - 1: on CPU torch's sigmoid is several times faster than its tanh
        a = torch.addcmul(x[:, 2 * H :], reset, gh[:, 2 * H :])
        candidate = torch.sigmoid(a.mul_(2)).mul_(2).sub_(1)
        h = torch.lerp(candidate, h, update) if update_keeps else torch.lerp(h, candidate, update)
        outputs.append(h)
    return torch.stack(outputs, 1)


def _outer_bias(bias_hh: torch.Tensor, reset_after: bool) -> torch.Tensor:
    """The recurrent biases that add outside the reset product: r and z always, the
    candidate's only when the reset gate applies before U_h."""
    if not reset_after:
        return bias_hh
    H = bias_hh.shape[0] // 3
    return torch.cat([bias_hh[: 2 * H], bias_hh.new_zeros(H)])


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `length` steps, leaving its padding at the end. (B, T, ...)"""
    T = x.shape[1]
    t = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    last = (lengths.to(x.device) - 1).unsqueeze(1)  # (B, 1)
    index = torch.where(t <= last, last - t, t)  # (B, T)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


class RecurrentEncoder(nn.Module):
    """Stacked, optionally bidirectional recurrence built from single-direction layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        directions = 2 if cfg.bidirectional else 1
        layers = []
        for layer in range(cfg.layers):
            size_in = cfg.embed_dim if layer == 0 else cfg.hidden_size * directions
            layers.append(nn.ModuleList(_make_cell(cfg, size_in) for _ in range(directions)))
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor | None,
        lengths: torch.Tensor,
        first_gates: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """(B, T, E) -> one (B, T, H) output per direction, each in its own time order.

        `first_gates`: the first layer's input gates per direction, already computed
        (from `SentimentGRU.precompute_input_gates`); `x` is then unused.
        """
        outs: list[torch.Tensor] = []
        for i, cells in enumerate(self.layers):
            if i == 0 and first_gates is not None:
                outs = [cell.recur(gates) for cell, gates in zip(cells, first_gates, strict=True)]
                continue
            if i > 0:  # dropout between layers, as nn.GRU(dropout=...) does
                x = self.dropout(torch.cat([outs[0], *map(_unreverse(lengths), outs[1:])], -1))
            outs = [_run(cells[0], x, lengths)]
            if len(cells) == 2:
                outs.append(_run(cells[1], reverse_within_length(x, lengths), lengths))
        return outs


class SentimentGRU(nn.Module):
    """Embedding → GRU variant → read-out → ReLU → Linear(D·H, 2) → LogSoftmax.

    With an n-gram head (`ModelConfig.ngrams`, sentiment.ngrams), fitted before the GRU
    trains, inference mixes the two in log-odds: logit P = (1 - w) logit P_gru + w logit
    P_ngrams (a normalised geometric mean); training reads the GRU alone.
    """

    def __init__(self, cfg: ModelConfig, embeddings: np.ndarray | None = None):
        super().__init__()
        self.config = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=0)
        if embeddings is not None:
            if embeddings.shape != (cfg.vocab_size, cfg.embed_dim):
                raise ValueError(
                    f"embedding matrix {embeddings.shape} does not match "
                    f"vocab_size x embed_dim {(cfg.vocab_size, cfg.embed_dim)}"
                )
            with torch.no_grad():
                self.embedding.weight.copy_(torch.as_tensor(np.array(embeddings, np.float32)))
        # Frozen by default: 6,400 reviews are too few to move 300-d vectors of a large vocabulary.
        self.embedding.weight.requires_grad_(not cfg.freeze_embeddings)
        self.encoder = RecurrentEncoder(cfg)
        directions = 2 if cfg.bidirectional else 1
        pools = 2 if cfg.readout == "max-mean" else 1
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(pools * directions * cfg.hidden_size, 2)
        if cfg.word_bias:  # starts at zero: the GRU alone, until training moves it
            self.word_bias = nn.Embedding(cfg.vocab_size, 1, padding_idx=0)
            nn.init.zeros_(self.word_bias.weight)
        else:
            self.word_bias = None
        # Fitted before the GRU trains (train_job), so training leaves it alone.
        self.ngram = NgramHead(cfg.vocab_size, cfg.ngram_pairs) if cfg.ngrams else None
        self._gate_tables: list[torch.Tensor] | None = None
        self.steps = False
        self.temperature = 1.0  # set from a model directory's calibration (`calibrate`)

    def precompute_input_gates(self) -> None:
        """For inference: the first layer's input gates of every vocabulary word, once.

        With the weights fixed, W_ih·e_w + b depends on the word alone, so a table
        look-up replaces the largest matmul of every time step (300 → 3H per token).
        Dropped again by `train()`; `forward` falls back to the full computation.
        """
        with torch.no_grad():
            table = self.embedding.weight
            self._gate_tables = [cell.project(table) for cell in self.encoder.layers[0]]

    @property
    def word_gates(self) -> bool:
        """Whether training may compute first-layer gates per distinct word (see forward)."""
        return self.config.freeze_embeddings and self.config.dropout == 0 and self.steps

    def set_steps(self, steps: bool) -> None:
        """Run nn.GRU layers as their equations step by step (CPU training: lets the first
        layer's input gates be computed once per distinct word), or natively."""
        self.steps = steps

    @staticmethod
    def _first_gates(
        index: torch.Tensor,
        lengths: torch.Tensor,
        tables: list[torch.Tensor],
        time_major: bool = False,
    ) -> list[torch.Tensor]:
        """(B, T, 3H) gates per direction, looked up; `time_major` lays them out step after
        step in memory (a (B, T, 3H) view of (T, B, 3H)), so each step's slice is contiguous."""
        indexes = [index]
        if len(tables) == 2:
            indexes.append(reverse_within_length(index, lengths))
        if time_major:
            return [
                F.embedding(i.t(), t).transpose(0, 1) for i, t in zip(indexes, tables, strict=True)
            ]
        return [F.embedding(i, t) for i, t in zip(indexes, tables, strict=True)]

    def forget_input_gates(self) -> None:
        """Back to computing the first layer's input gates from the embeddings."""
        self._gate_tables = None

    def train(self, mode: bool = True) -> SentimentGRU:
        if mode:
            self.forget_input_gates()  # the weights are about to change
        return super().train(mode)

    def set_packed(self, packed: bool) -> None:
        """Run nn.GRU layers on packed sequences (fast with cuDNN) or padded ones (fast on CPU)."""
        for module in self.modules():
            if isinstance(module, TorchGRU):
                module.packed = packed

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) right-padded, lengths (B,) ≥ 1 → log-probabilities (B, 2)."""
        lengths = lengths.clamp(min=1)
        if self.training and self.config.word_dropout > 0:
            # Dropped words become <unk>, a zero vector: the review keeps its length and
            # its padding stays after the last real token.
            drop = torch.rand(ids.shape, device=ids.device) < self.config.word_dropout
            ids = ids.masked_fill(drop & (ids != PAD), UNK)
        if self._gate_tables is not None and not self.training:
            gates = self._first_gates(ids, lengths, self._gate_tables, time_major=True)
            outs = self.encoder(None, lengths, gates)
        elif self.word_gates and self.training:
            # Frozen embeddings: the first layer's input gates depend on the word alone, so
            # project each distinct word of the batch once (about a third of its tokens)
            # and gather; autograd sums the gathered gradients back per word.
            words, index = torch.unique(ids, return_inverse=True)
            vectors = self.embedding(words)  # (U, E)
            tables = [cell.project(vectors) for cell in self.encoder.layers[0]]  # (U, 3H)
            outs = self.encoder(None, lengths, self._first_gates(index, lengths, tables))
        else:
            outs = self.encoder(self.dropout(self.embedding(ids)), lengths)  # D x (B, T, H)
        features = torch.cat([_read_out(o, lengths, self.config.readout) for o in outs], -1)
        logits = self.head(F.relu(self.dropout(features)))  # (B, 2)
        if self.word_bias is not None:
            valid = torch.arange(ids.shape[1], device=ids.device) < lengths.unsqueeze(1)
            score = (self.word_bias(ids).squeeze(-1) * valid).sum(1) / lengths  # (B,)
            logits = logits + torch.stack([-score, score], -1) / 2
        if self.ngram is not None and not self.training:
            logits = self._with_ngrams(logits, ids, lengths)
        return calibrate(logits, self.temperature)

    def _with_ngrams(
        self, logits: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """log P of the mixture, w the head's share: the log-odds (1 - w) logit P_gru +
        w logit P_ngrams. The same decisions as averaging the probabilities at w = 0.5, but
        calibrated: averaging probabilities pulls them to 0.5 (validation ECE 5.1 % → 3.5 %,
        tests/benchmarks/RESULTS.md)."""
        w = self.config.ngram_weight
        if w <= 0.0:
            return F.log_softmax(logits, dim=-1)
        score = self.ngram(ids, lengths)  # (B,) the head's logit
        margin = (1.0 - w) * (logits[:, 1] - logits[:, 0]) + w * score
        return F.logsigmoid(torch.stack([-margin, margin], -1))


class Ensemble(nn.Module):
    """Classifiers over one vocabulary: P(positive) is the mean of the members'.

    Every member reads the same token ids (one tokenization and look-up per review), so
    scoring costs one forward pass per member and nothing else.
    """

    def __init__(self, members: list[SentimentGRU]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperature = 1.0

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([m(ids, lengths) for m in self.members])  # (M, B, 2)
        mean = torch.logsumexp(log_probs, 0) - math.log(len(self.members))  # log of the mean
        return calibrate(mean, self.temperature)

    def precompute_input_gates(self) -> None:
        for m in self.members:
            m.precompute_input_gates()

    def set_packed(self, packed: bool) -> None:
        for m in self.members:
            m.set_packed(packed)

    def set_steps(self, steps: bool) -> None:
        for m in self.members:
            m.set_steps(steps)


def calibrate(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probabilities (B, 2) of logits (or log-probabilities) divided by a temperature:
    T > 1 softens over-confident probabilities and never changes the predicted class."""
    if temperature != 1.0:
        logits = logits / temperature
    return F.log_softmax(logits, dim=-1)


def build_model(cfg: ModelConfig, embeddings: np.ndarray | None = None) -> SentimentGRU:
    """The classifier for `cfg`, with its embedding layer initialised from `embeddings`."""
    return SentimentGRU(cfg, embeddings)


def set_up_for(model: nn.Module, device: torch.device, inference: bool) -> None:
    """The one place a model (or ensemble) is configured for the device it runs on.

    GPU: nn.GRU layers (`gru`, `grub`) take packed sequences, cuDNN's fused kernels;
    `gruh` and `pmgru` step their equations in Python. CPU, the fast path of every
    variant: the first layer steps its equations in Python (`gru_steps`, nn.GRU's own
    for `gru`/`grub`) from input gates computed once per distinct word of a batch
    (training) or looked up in a per-vocabulary table (inference); exact either way
    (tests/test_models.py), and faster than nn.GRU on padded, length-bucketed batches.
    """
    model.set_packed(device.type == "cuda")
    model.set_steps(device.type == "cpu")
    if inference and device.type == "cpu":
        model.precompute_input_gates()


def _make_cell(cfg: ModelConfig, size_in: int) -> nn.Module:
    if cfg.variant in ("gru", "grub"):
        return TorchGRU(size_in, cfg.hidden_size)
    if cfg.variant == "gruh":
        return HandGRU(size_in, cfg.hidden_size, reset_after=cfg.reset_after)
    return PoorMansGRU(size_in, cfg.hidden_size)


def _run(cell: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return cell(x, lengths) if isinstance(cell, TorchGRU) else cell(x)


def _unreverse(lengths: torch.Tensor):
    return lambda out: reverse_within_length(out, lengths)


def _read_out(out: torch.Tensor, lengths: torch.Tensor, readout: str) -> torch.Tensor:
    """(B, T, H) states of one direction, in that direction's time order → (B, H).

    `last` reads the state after the last real token: for the backward direction,
    run over the reversed review, that is the state after its first word.
    """
    B, T, _ = out.shape
    if readout == "max-mean":
        return torch.cat([_read_out(out, lengths, r) for r in ("max", "mean")], -1)
    if readout == "last":
        return out[torch.arange(B, device=out.device), lengths.to(out.device) - 1]
    valid = torch.arange(T, device=out.device).unsqueeze(0) < lengths.to(out.device).unsqueeze(1)
    valid = valid.unsqueeze(-1)  # (B, T, 1)
    if readout == "max":
        return out.masked_fill(~valid, float("-inf")).amax(1)
    return (out * valid).sum(1) / lengths.to(out.device, out.dtype).unsqueeze(1)


def _init_uniform(module: nn.Module, hidden_size: int) -> None:
    # nn.GRU's initialisation, so the hand-written cells start where the native one does.
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)
