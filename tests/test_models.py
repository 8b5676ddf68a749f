"""The GRU variants: the equations of SPEC.md, nn.GRU equivalence, gradients, padding invariance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sentiment.config import ModelConfig, SentimentError
from sentiment.models import (
    HandGRU,
    PoorMansGRU,
    build_model,
    reverse_within_length,
)

VARIANTS = ("gru", "grub", "gruh", "pmgru")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_gru(x, w_ih, w_hh, b_ih, b_hh, reset_after=False):
    """SPEC.md's GRU, step by step in float64 numpy; gates [reset, update, candidate]."""
    H = w_hh.shape[1]
    W_r, W_z, W_h = np.split(w_ih, 3)
    U_r, U_z, U_h = np.split(w_hh, 3)
    bi_r, bi_z, bi_h = np.split(b_ih, 3)
    bh_r, bh_z, bh_h = np.split(b_hh, 3)
    h = np.zeros((x.shape[0], H))
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        z = _sigmoid(xt @ W_z.T + bi_z + h @ U_z.T + bh_z)
        r = _sigmoid(xt @ W_r.T + bi_r + h @ U_r.T + bh_r)
        if reset_after:
            cand = np.tanh(xt @ W_h.T + bi_h + r * (h @ U_h.T + bh_h))
        else:
            cand = np.tanh(xt @ W_h.T + bi_h + (r * h) @ U_h.T + bh_h)
        h = (1 - z) * h + z * cand
        out.append(h)
    return np.stack(out, 1)


def reference_pmgru(x, w_ih, w_hh, b_ih, b_hh):
    """SPEC.md's poor man's GRU in float64 numpy; gates [forget, candidate]."""
    H = w_hh.shape[1]
    W_f, W_h = np.split(w_ih, 2)
    U_f, U_h = np.split(w_hh, 2)
    h = np.zeros((x.shape[0], H))
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        f = _sigmoid(xt @ W_f.T + b_ih[:H] + h @ U_f.T + b_hh[:H])
        cand = np.tanh(xt @ W_h.T + b_ih[H:] + (f * h) @ U_h.T + b_hh[H:])
        h = (1 - f) * h + f * cand
        out.append(h)
    return np.stack(out, 1)


def _params(cell):
    return [
        p.detach().numpy() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    ]


@pytest.mark.parametrize("reset_after", [False, True])
def test_hand_gru_matches_float64_equations(reset_after):
    torch.manual_seed(0)
    cell = HandGRU(5, 4, reset_after=reset_after).double()
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    expected = reference_gru(x.numpy(), *_params(cell), reset_after=reset_after)
    np.testing.assert_allclose(cell(x).detach().numpy(), expected, rtol=0, atol=1e-12)


def test_poor_mans_gru_matches_float64_equations():
    torch.manual_seed(0)
    cell = PoorMansGRU(5, 4).double()
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    expected = reference_pmgru(x.numpy(), *_params(cell))
    np.testing.assert_allclose(cell(x).detach().numpy(), expected, rtol=0, atol=1e-12)


def test_hand_gru_with_reset_after_equals_nn_gru_given_copied_weights():
    torch.manual_seed(0)
    H = 6
    native = torch.nn.GRU(5, H, batch_first=True).double()
    cell = HandGRU(5, H, reset_after=True).double()
    # nn.GRU: h = (1 - z) n + z h_prev; SPEC.md: h = (1 - z) h_prev + z n.
    # So z_spec = 1 - z_torch = sigmoid(-a): copy with the update rows negated.
    sign = torch.ones(3 * H, 1, dtype=torch.float64)
    sign[H : 2 * H] = -1
    with torch.no_grad():
        cell.weight_ih.copy_(native.weight_ih_l0 * sign)
        cell.weight_hh.copy_(native.weight_hh_l0 * sign)
        cell.bias_ih.copy_(native.bias_ih_l0 * sign[:, 0])
        cell.bias_hh.copy_(native.bias_hh_l0 * sign[:, 0])
    x = torch.randn(4, 9, 5, dtype=torch.float64)
    torch.testing.assert_close(cell(x), native(x)[0], rtol=0, atol=1e-12)


def test_hand_gru_default_form_differs_from_nn_gru():
    """The two reset placements are different functions (SPEC.md), so the switch matters."""
    torch.manual_seed(0)
    cell = HandGRU(5, 4, reset_after=False).double()
    other = HandGRU(5, 4, reset_after=True).double()
    other.load_state_dict(cell.state_dict())
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    assert (cell(x) - other(x)).abs().max() > 1e-6


@pytest.mark.parametrize(
    "cell",
    [HandGRU(3, 2), HandGRU(3, 2, reset_after=True), PoorMansGRU(3, 2)],
    ids=["gruh", "gruh-reset-after", "pmgru"],
)
def test_hand_written_cells_pass_gradcheck(cell):
    torch.manual_seed(0)
    cell = cell.double()
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    params = tuple(cell.parameters())

    # gradcheck perturbs its own inputs: run the cell on them through functional_call.
    names = [n for n, _ in cell.named_parameters()]

    def g(x, *ps):
        return torch.func.functional_call(cell, dict(zip(names, ps, strict=True)), (x,))

    inputs = (x, *(p.detach().clone().requires_grad_(True) for p in params))
    assert torch.autograd.gradcheck(g, inputs, eps=1e-6, atol=1e-6)


def test_reverse_within_length_keeps_padding_at_the_end():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]).unsqueeze(-1)
    out = reverse_within_length(x, torch.tensor([3, 2, 4])).squeeze(-1)
    assert out.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [9, 8, 7, 6]]


def _batch(lengths, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(2, vocab, (n,), generator=g)
    return ids, torch.tensor(lengths)


def small_model(variant: str, vocab: int = 40, layers: int = 2, **kw) -> torch.nn.Module:
    """A seeded model with hidden 5 over random 6-d embeddings of `vocab` words."""
    torch.manual_seed(0)
    emb = np.random.default_rng(0).normal(size=(vocab, 6)).astype(np.float32)
    cfg = ModelConfig(
        variant=variant, vocab_size=vocab, embed_dim=6, hidden_size=5, layers=layers, **kw
    )
    return build_model(cfg, emb)


@pytest.mark.parametrize(
    ("variant", "bidirectional", "readout"),
    list(itertools.product(VARIANTS, [False, True], ["last", "max", "mean"])),
)
def test_padding_never_changes_a_result(variant, bidirectional, readout):
    """A review alone and inside a padded batch (2 layers, dropout off) gives the same output."""
    V = 40
    model = small_model(variant, vocab=40, bidirectional=bidirectional, readout=readout).eval()
    ids, lengths = _batch([5, 1, 9, 3], V)
    with torch.no_grad():
        batched = model(ids, lengths)
        alone = torch.cat(
            [model(ids[i : i + 1, :n], lengths[i : i + 1]) for i, n in enumerate(lengths)]
        )
        # more padding than any review needs changes nothing either
        wider = model(torch.nn.functional.pad(ids, (0, 7)), lengths)
    torch.testing.assert_close(batched, alone, rtol=0, atol=2e-6)
    torch.testing.assert_close(wider, alone, rtol=0, atol=2e-6)


@pytest.mark.parametrize("variant", ["gru", "grub"])
def test_packed_and_padded_nn_gru_agree(variant):
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, vocab_size=30, embed_dim=4, hidden_size=5, layers=2)
    model = build_model(cfg).eval()
    ids, lengths = _batch([4, 8, 1, 6], 30)
    with torch.no_grad():
        padded = model(ids, lengths)
        model.set_packed(True)
        packed = model(ids, lengths)
    torch.testing.assert_close(padded, packed, rtol=0, atol=2e-6)


def test_grub_reads_forward_last_and_backward_first_state():
    """SPEC.md: bidirectional `last` read-out = forward state at the last real token
    concatenated with the backward state at the first token."""
    torch.manual_seed(0)
    cfg = ModelConfig(variant="grub", vocab_size=20, embed_dim=4, hidden_size=3, readout="last")
    model = build_model(cfg).eval()
    ids, lengths = _batch([5], 20)
    fwd = model.encoder.layers[0][0].gru
    bwd = model.encoder.layers[0][1].gru
    native = torch.nn.GRU(4, 3, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for suffix, src in (("", fwd), ("_reverse", bwd)):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(native, f"{name}_l0{suffix}").copy_(getattr(src, f"{name}_l0"))
        out, _ = native(model.embedding(ids))
        expected = torch.cat([out[0, 4, :3], out[0, 0, 3:]])
        feats = torch.cat([o[0, 4] for o in model.encoder(model.embedding(ids), lengths)])
    torch.testing.assert_close(feats, expected, rtol=0, atol=1e-6)


def test_output_is_log_probabilities_and_embeddings_frozen_by_default():
    emb = np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32)
    model = build_model(ModelConfig(vocab_size=12, embed_dim=4, hidden_size=3), emb)
    ids, lengths = _batch([3, 2], 12)
    out = model(ids, lengths)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(2))
    assert not model.embedding.weight.requires_grad
    np.testing.assert_array_equal(model.embedding.weight.detach().numpy(), emb)
    trainable = build_model(ModelConfig(vocab_size=12, embed_dim=4, freeze_embeddings=False), emb)
    assert trainable.embedding.weight.requires_grad


def test_wrong_embedding_shape_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        build_model(ModelConfig(vocab_size=12, embed_dim=4), np.zeros((11, 4), np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "lstm"}, "unknown model variant 'lstm'"),
        ({"readout": "first"}, "unknown readout"),
        ({"dropout": 1.0}, "dropout"),
        ({"hidden_size": 0}, "hidden_size"),
    ],
)
def test_bad_model_settings(kwargs, message):
    with pytest.raises(SentimentError, match=message):
        ModelConfig(**kwargs)


def test_grub_is_always_bidirectional():
    assert ModelConfig(variant="grub").bidirectional
    assert not ModelConfig(variant="gru").bidirectional


@pytest.mark.parametrize(
    ("variant", "bidirectional", "layers"),
    [(v, b, n) for v in VARIANTS for b in (False, True) for n in (1, 2)],
)
def test_precomputed_input_gates_give_the_same_outputs(variant, bidirectional, layers):
    """The inference table (W_ih·e_w + b per word) replaces the first layer's projection exactly;
    for `gru`/`grub` the step loop re-implements nn.GRU's equations."""
    V = 40
    model = (
        small_model(variant, vocab=40, layers=layers, bidirectional=bidirectional, readout="last")
        .double()
        .eval()
    )
    ids, lengths = _batch([5, 1, 9, 3], V)
    with torch.no_grad():
        full = model(ids, lengths)
        model.precompute_input_gates()
        fast = model(ids, lengths)
        model.train()  # drops the tables: training always computes the full graph
        assert model._gate_tables is None
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("variant", "bidirectional"), [(v, b) for v in VARIANTS for b in (False, True)]
)
def test_training_with_per_word_gates_gives_the_same_loss_and_gradients(variant, bidirectional):
    """CPU training steps the equations and projects each distinct word once; the loss and
    every gradient equal those of the native computation (nn.GRU for gru/grub)."""
    V = 30
    model = small_model(variant, vocab=30, bidirectional=bidirectional).double().train()
    ids, lengths = _batch([5, 1, 9, 3, 9], V)
    labels = torch.tensor([0, 1, 1, 0, 1])

    def loss_and_grads(steps: bool):
        model.set_steps(steps)
        model.zero_grad()
        loss = torch.nn.functional.nll_loss(model(ids, lengths), labels)
        loss.backward()
        return loss.item(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad
        }

    native_loss, native = loss_and_grads(False)
    steps_loss, stepped = loss_and_grads(True)
    assert model.word_gates
    assert steps_loss == pytest.approx(native_loss, abs=1e-12)
    assert native.keys() == stepped.keys()
    for name in native:
        torch.testing.assert_close(stepped[name], native[name], rtol=0, atol=1e-10, msg=name)


# --- issue 11's options: max-mean read-out, per-word bias, word dropout, the optimizer ------


@pytest.mark.parametrize(
    ("variant", "kw"),
    [
        ("gru", {"readout": "max-mean"}),
        ("grub", {"readout": "max-mean", "word_bias": True}),
        ("gruh", {"word_bias": True}),
    ],
)
def test_new_options_keep_padding_and_gate_tables_exact(variant, kw):
    """Alone = in a padded batch, and the inference gate tables change nothing."""
    torch.manual_seed(0)
    model = small_model(variant, vocab=40, **kw).double().eval()
    if model.word_bias is not None:
        torch.nn.init.normal_(model.word_bias.weight)  # zero at the start: make it count
    ids, lengths = _batch([5, 1, 9, 3], 40)
    with torch.no_grad():
        batched = model(ids, lengths)
        alone = torch.cat(
            [model(ids[i : i + 1, :n], lengths[i : i + 1]) for i, n in enumerate(lengths)]
        )
        model.precompute_input_gates()
        fast = model(torch.nn.functional.pad(ids, (0, 4)), lengths)
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast, alone, rtol=0, atol=1e-12)
    assert model.head.in_features == 5 * (2 if kw.get("readout") == "max-mean" else 1) * (
        2 if variant == "grub" else 1
    )


def test_word_bias_adds_the_mean_word_score_to_the_logit():
    model = small_model("gru", vocab=40, layers=1, word_bias=True).double().eval()
    ids, lengths = _batch([5, 3], 40)
    with torch.no_grad():
        before = model(ids, lengths)
        model.word_bias.weight.fill_(0.8)
        model.word_bias.weight[0] = 0.0  # padding
        after = model(ids, lengths)
    margin = lambda lp: lp[:, 1] - lp[:, 0]  # noqa: E731
    torch.testing.assert_close(margin(after) - margin(before), torch.full((2,), 0.8).double())


def test_word_dropout_acts_in_training_only():
    model = small_model("gru", vocab=40, layers=1, word_dropout=0.5).eval()
    ids, lengths = _batch([30, 30], 40)
    with torch.no_grad():
        assert torch.equal(model(ids, lengths), model(ids, lengths))
        model.train()
        torch.manual_seed(1)
        dropped = model(ids, lengths)
        torch.manual_seed(2)
        assert not torch.allclose(dropped, model(ids, lengths))


def test_adamw_without_decay_steps_as_adam_and_embeddings_get_their_own_rate():
    from sentiment.config import TrainConfig
    from sentiment.training import make_optimizer

    ids, lengths = _batch([5, 1, 9], 40)
    labels = torch.tensor([0, 1, 1])
    models = [small_model("gru", vocab=40, layers=1) for _ in range(2)]
    optimizers = [
        torch.optim.Adam([p for p in models[0].parameters() if p.requires_grad], lr=4e-3),
        make_optimizer(models[1], TrainConfig()),
    ]
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.nll_loss(model(ids, lengths), labels).backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
    trainable = small_model("gru", vocab=40, layers=1, freeze_embeddings=False)
    groups = make_optimizer(trainable, TrainConfig(lr=4e-3, embedding_lr=1e-4)).param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, pytest.approx(0.025)]
    assert groups[1]["params"] == [trainable.embedding.weight]


@pytest.mark.parametrize(
    "settings",
    [
        {"variant": "gru"},
        {"variant": "grub", "layers": 2, "readout": "max-mean"},
        {"variant": "gruh", "word_bias": True},
        {"variant": "pmgru", "bidirectional": True, "layers": 3, "readout": "last"},
    ],
)
def test_parameter_count_matches_the_built_model(settings):
    """The limit checked before allocating (config.MAX_PARAMETERS) counts what is built."""
    cfg = ModelConfig(vocab_size=50, embed_dim=7, hidden_size=5, **settings)
    with torch.device("meta"):
        model = build_model(cfg)
    assert cfg.parameters() == sum(p.numel() for p in model.parameters())
