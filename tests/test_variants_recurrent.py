"""Recurrent variants: locked (variational) dropout, embedding dropout, weight-dropped RNNs.

Statistical tolerances. Every Monte-Carlo check compares a sample mean of N i.i.d. draws with
its exact expectation. For a quantity with per-draw variance σ² (known in closed form from
the Bernoulli mask: an inverted-dropout output x·m/(1−p) has variance x²·p/(1−p); a 0/1 drop
indicator has variance p(1−p)), the mean's standard error is σ/√N, and we allow
z·σ/√N with z the two-sided normal quantile for a family-wise false-alarm rate α = 1e-4
Bonferroni-split over the k comparisons of the test (z ≈ 4.1 for k = 1, ≈ 5.0 for k = 48).
N ≥ 2000 with p ∈ [0.2, 0.5] keeps the normal approximation of the binomial accurate. Seeds
are fixed, so the tests are deterministic; the tolerance says how surprising a failure
would be, not how lucky the seed is.
"""

from __future__ import annotations

import copy
import math
import warnings
from statistics import NormalDist

import pytest
import torch
from torch import nn

from dropoutlab.variants import get_variant, make_dropout
from dropoutlab.variants.recurrent import (
    EmbeddingDropout,
    LockedDropout,
    WeightDrop,
    embedding_dropout,
    locked_dropout,
    weight_dropout,
)


def z_crit(k: int = 1, alpha: float = 1e-4) -> float:
    """Two-sided normal quantile with a Bonferroni split of ``alpha`` over ``k`` comparisons."""
    return NormalDist().inv_cdf(1.0 - alpha / (2 * k))


def seq(batch_first: bool, b: int, t: int, f: int) -> torch.Tensor:
    return torch.randn(b, t, f) if batch_first else torch.randn(t, b, f)


# =========================================================================== locked


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_locked_eval_is_identity_and_p0_train_is_identity(batch_first, p):
    torch.manual_seed(0)
    m = LockedDropout(p, batch_first=batch_first)
    x = seq(batch_first, 4, 5, 3)
    m.eval()
    assert torch.equal(m(x), x) and torch.equal(m(x), m(x))
    m.train()
    if p == 0.0:
        assert torch.equal(m(x), x)
    if p == 1.0:
        assert torch.equal(m(x), torch.zeros_like(x))


@pytest.mark.parametrize("batch_first", [True, False])
def test_locked_mask_equal_over_time_and_different_across_batch(batch_first):
    torch.manual_seed(1)
    b, t, f, p = 32, 7, 6, 0.5
    m = LockedDropout(p, batch_first=batch_first).train()
    x = torch.ones(b, t, f) if batch_first else torch.ones(t, b, f)
    mask = m(x) * (1 - p)  # exactly 0 or 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    if not batch_first:
        mask = mask.transpose(0, 1)  # -> (B, T, F)
    # the same mask at every time step ...
    assert torch.equal(mask, mask[:, :1, :].expand_as(mask))
    # ... but not the same for every sample (P(all 32 rows equal) = 2^-(6·31))
    assert not torch.equal(mask, mask[:1].expand_as(mask))


def test_locked_wrong_layout_is_not_silently_batch_shared():
    """The awd-lstm-lm bug: feeding (B, T, F) to a (T, B, F) module shares masks over the batch."""
    torch.manual_seed(2)
    x = torch.ones(16, 5, 4)  # batch-first data
    right = LockedDropout(0.5, batch_first=True).train()(x)
    assert not torch.equal(right, right[:1].expand_as(right))  # masks differ across samples


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_locked_preserves_expectation_and_drop_rate(batch_first, p):
    # N = 20000 sequences of the same (T, F) = (3, 4) input: per element, mean of x·m/(1−p)
    # has sd |x|·sqrt(p/(1−p)/N); k = 12 elements. Drop rate of the N·F masks: sd sqrt(p(1−p)/(N·F)).
    torch.manual_seed(3)
    n, t, f = 20000, 3, 4
    base = torch.randn(t, f)
    x = base.expand(n, t, f).contiguous()
    if not batch_first:
        x = x.transpose(0, 1).contiguous()
    y = locked_dropout(x, p, training=True, batch_first=batch_first)
    if not batch_first:
        y = y.transpose(0, 1)
    mean = y.mean(0)
    tol = z_crit(t * f) * base.abs() * math.sqrt(p / (1 - p) / n)
    assert torch.all((mean - base).abs() <= tol)
    drop = (y[:, 0, :] == 0).double().mean().item()
    assert abs(drop - p) <= z_crit() * math.sqrt(p * (1 - p) / (n * f))


def test_locked_fresh_mask_each_call_and_gradient():
    torch.manual_seed(4)
    m = LockedDropout(0.5).train()
    x = torch.randn(8, 5, 6, requires_grad=True)
    y1, y2 = m(x), m(x)
    assert not torch.equal(y1, y2)
    y1.sum().backward()
    # d(sum y)/dx = m/(1−p): the mask itself
    assert torch.equal(x.grad, (y1.detach() != 0).float() * 2.0)


def test_locked_inplace_matches_out_of_place():
    x = torch.randn(4, 5, 3)
    torch.manual_seed(5)
    ref = LockedDropout(0.4)(x)
    torch.manual_seed(5)
    xi = x.clone()
    out = LockedDropout(0.4, inplace=True)(xi)
    assert out.data_ptr() == xi.data_ptr() and torch.allclose(out, ref)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 5), (5,)])
def test_locked_rejects_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"locked_dropout: input \(B, T, F\) must have rank 3"):
        LockedDropout(0.5)(torch.randn(shape))
    with pytest.raises(ValueError, match=r"\(T, B, F\)"):
        LockedDropout(0.5, batch_first=False)(torch.randn(shape))


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_locked_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"locked.*\[0, 1\]"):
        LockedDropout(p)
    with pytest.raises(ValueError, match="locked_dropout"):
        locked_dropout(torch.randn(2, 3, 4), p, training=True, batch_first=True)


def test_locked_batch_first_must_be_bool_and_repr_and_state_dict():
    with pytest.raises(ValueError, match="batch_first must be a bool"):
        LockedDropout(0.5, batch_first="auto")
    m = LockedDropout(0.3, batch_first=False)
    assert "batch_first=False" in repr(m) and "p=0.3" in repr(m)
    other = LockedDropout(0.7, batch_first=False)
    other.load_state_dict(m.state_dict())
    assert other.rate == pytest.approx(0.3)
    m.set_p(0.25)
    assert m.rate == pytest.approx(0.25)
    assert not LockedDropout.batch_shared_mask
    built = make_dropout("locked", p=0.2, batch_first=False)
    assert isinstance(built, LockedDropout) and built.batch_first is False
    assert get_variant("locked").kind == "activation"


# =========================================================================== embedding


def make_emb(v: int = 10, d: int = 4, **kw) -> nn.Embedding:
    torch.manual_seed(10)
    return nn.Embedding(v, d, **kw)


def test_embedding_eval_and_p0_are_the_wrapped_embedding():
    emb = make_emb()
    m = EmbeddingDropout(emb, p=0.4)
    idx = torch.randint(0, 10, (3, 7))
    m.eval()
    assert torch.equal(m(idx), emb(idx))
    m.train().set_p(0.0)
    assert torch.equal(m(idx), emb(idx))


def test_embedding_drops_whole_word_types_for_the_whole_batch():
    torch.manual_seed(11)
    v, p = 6, 0.5
    emb = make_emb(v, 5)
    m = EmbeddingDropout(emb, p=p).train()
    idx = torch.arange(v).repeat(4, 3)  # every word occurs 12 times, in every sample
    for _ in range(5):
        out = m(idx)
        factor = out / emb(idx)  # 0 or 1/(1−p) for every entry
        assert torch.all((factor == 0) | torch.isclose(factor, torch.tensor(1 / (1 - p))))
        for w in range(v):
            f = factor[idx == w]  # (occurrences, D)
            assert torch.equal(f, f[:1].expand_as(f))  # same decision for every occurrence


def test_embedding_preserves_expectation_and_drop_rate():
    # N = 4000 forward calls (one (V,) mask each): per weight entry the mean of W·m/(1−p) has sd
    # |W|·sqrt(p/(1−p)/N); k = V·D = 24. Drop rate over N·V word draws: sd sqrt(p(1−p)/(N·V)).
    torch.manual_seed(12)
    v, d, p, n = 8, 3, 0.3, 4000
    emb = make_emb(v, d)
    m = EmbeddingDropout(emb, p=p).train()
    idx = torch.arange(v)
    with torch.no_grad():
        outs = torch.stack([m(idx) for _ in range(n)])
    w = emb.weight.detach()
    tol = z_crit(v * d) * w.abs() * math.sqrt(p / (1 - p) / n)
    assert torch.all((outs.mean(0) - w).abs() <= tol)
    drop = (outs[..., 0] == 0).double().mean().item()
    assert abs(drop - p) <= z_crit() * math.sqrt(p * (1 - p) / (n * v))


def test_embedding_gradient_reaches_raw_weight_with_the_mask():
    torch.manual_seed(13)
    v, p = 7, 0.5
    emb = make_emb(v, 3, padding_idx=0)
    m = EmbeddingDropout(emb, p=p).train()
    idx = torch.tensor([[0, 1, 2, 3], [3, 4, 5, 6]])
    out = m(idx)
    out.sum().backward()
    g = emb.weight.grad
    kept = torch.zeros(v, dtype=torch.bool)
    kept[idx.flatten()] = out.detach().ne(0).any(-1).flatten()
    counts = torch.bincount(idx.flatten(), minlength=v).float()
    expected = (counts * kept / (1 - p)).unsqueeze(1).expand(v, 3).clone()
    expected[0] = 0.0  # padding_idx gets no gradient
    assert torch.allclose(g, expected)
    assert m.weight is emb.weight


def test_embedding_sparse_and_max_norm_are_honoured():
    torch.manual_seed(14)
    emb = nn.Embedding(9, 4, sparse=True, max_norm=1.0)
    with torch.no_grad():
        emb.weight.mul_(5.0)
    m = EmbeddingDropout(emb, p=0.2).train()
    idx = torch.tensor([1, 2, 3])
    m(idx).sum().backward()
    assert emb.weight.grad.is_sparse
    assert torch.all(emb.weight.detach()[idx].norm(dim=1) <= 1.0 + 1e-5)  # renormalised like nn.Embedding


def test_embedding_fresh_mask_state_dict_registry_and_errors():
    torch.manual_seed(15)
    m = EmbeddingDropout(make_emb(50, 4), p=0.5).train()
    idx = torch.arange(50)
    assert not torch.equal(m(idx), m(idx))
    assert EmbeddingDropout.batch_shared_mask is True
    assert set(m.state_dict()) == {"p", "embedding.weight"}
    other = EmbeddingDropout(nn.Embedding(50, 4), p=0.1)
    other.load_state_dict(m.state_dict())
    assert other.rate == pytest.approx(0.5) and torch.equal(other.weight, m.weight)
    with pytest.raises(ValueError, match="embedding: expected an nn.Embedding"):
        EmbeddingDropout(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"embedding.*\[0, 1\]"):
        EmbeddingDropout(make_emb(), p=1.2)
    with pytest.raises(ValueError, match="embedding_dropout: weight"):
        embedding_dropout(torch.tensor([0]), torch.randn(3), 0.1, training=True)
    assert get_variant("embedding").kind == "wrapper"
    assert isinstance(make_dropout("embedding", make_emb(), p=0.1), EmbeddingDropout)
    assert "mask=(V, 1)" in repr(m)


# =========================================================================== weight drop

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def make_rnn(kind: str, batch_first: bool = True, **kw) -> nn.Module:
    torch.manual_seed(20)
    return RNNS[kind](4, 6, batch_first=batch_first, **kw)


def first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("kind", list(RNNS))
def test_weight_drop_eval_and_p0_equal_bare_module(kind):
    rnn = make_rnn(kind)
    wd = WeightDrop(rnn, p=0.5)
    x = torch.randn(3, 5, 4)
    wd.eval()
    assert torch.equal(first(wd(x)), first(rnn(x)))
    assert torch.equal(first(wd(x)), first(wd(x)))
    wd.train().set_p(0.0)
    assert torch.equal(first(wd(x)), first(rnn(x)))


@pytest.mark.parametrize("kind", list(RNNS))
@pytest.mark.parametrize("batch_first", [True, False])
def test_weight_drop_uses_dropped_weights_and_gradient_reaches_raw_weight(kind, batch_first):
    """Train output = RNN run with W_hh' = W_hh·M/(1−p); dL/dW_hh = dL/dW_hh' · M/(1−p)."""
    p = 0.5
    rnn = make_rnn(kind, batch_first)
    raw = rnn.weight_hh_l0
    raw_before = raw.detach().clone()
    wd = WeightDrop(rnn, p=p).train()
    x = torch.randn(3, 5, 4) if batch_first else torch.randn(5, 3, 4)
    torch.manual_seed(21)
    out = first(wd(x))
    torch.manual_seed(21)
    dropped = wd.dropped_weights()["weight_hh_l0"].detach()  # the same draw
    mask = dropped != 0
    assert 0.3 < mask.float().mean() < 0.7
    # reference: an independent copy whose weight_hh *is* the dropped tensor (a leaf)
    ref = copy.deepcopy(rnn)
    with torch.no_grad():
        ref.weight_hh_l0.copy_(dropped)
    ref_out = first(ref(x))
    assert torch.allclose(out, ref_out, atol=1e-6)
    out.square().sum().backward()
    ref_out.square().sum().backward()
    assert wd.module.weight_hh_l0 is raw  # still the module's own parameter
    assert torch.equal(raw.detach(), raw_before)  # never modified in place
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    assert torch.allclose(raw.grad, ref.weight_hh_l0.grad * mask / (1 - p), atol=1e-5)
    assert torch.allclose(rnn.weight_ih_l0.grad, ref.weight_ih_l0.grad, atol=1e-5)


def test_weight_drop_optimizer_step_updates_raw_weights_and_masks_are_fresh():
    rnn = make_rnn("lstm")
    wd = WeightDrop(rnn, p=0.5).train()
    opt = torch.optim.SGD(wd.parameters(), lr=0.1)
    assert any(q is rnn.weight_hh_l0 for q in wd.parameters())
    x = torch.randn(3, 5, 4)
    before = rnn.weight_hh_l0.detach().clone()
    torch.manual_seed(22)
    y1 = first(wd(x))
    y2 = first(wd(x))
    assert not torch.equal(y1, y2)  # a new mask per forward call
    opt.zero_grad()
    y1.sum().backward()
    opt.step()
    assert not torch.equal(rnn.weight_hh_l0.detach(), before)


def test_weight_drop_p1_zeroes_recurrent_weights_and_hx_passes_through():
    rnn = make_rnn("lstm", batch_first=True)
    wd = WeightDrop(rnn, p=1.0).train()
    x = torch.randn(2, 4, 4)
    hx = (torch.randn(1, 2, 6), torch.randn(1, 2, 6))
    ref = copy.deepcopy(rnn)
    with torch.no_grad():
        ref.weight_hh_l0.zero_()
    out, (h, c) = wd(x, hx)
    ref_out, (rh, rc) = ref(x, hx)
    assert torch.allclose(out, ref_out) and torch.allclose(h, rh) and torch.allclose(c, rc)
    out2, _ = wd(x, hx=hx)  # keyword arguments pass through too
    assert torch.allclose(out2, ref_out)


def test_weight_drop_multilayer_bidirectional_and_other_modules():
    torch.manual_seed(23)
    lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True)
    names = ("weight_hh_l0", "weight_hh_l1", "weight_hh_l0_reverse", "weight_hh_l1_reverse")
    wd = WeightDrop(lstm, p=0.5, weights=names).train()
    out, _ = wd(torch.randn(5, 3, 4))
    out.sum().backward()
    assert all(getattr(lstm, n).grad.abs().sum() > 0 for n in names)
    lin = nn.Linear(5, 3)
    wl = WeightDrop(lin, p=0.5, weights="weight").train()
    x = torch.randn(4, 5)
    torch.manual_seed(24)
    y = wl(x)
    torch.manual_seed(24)
    w = wl.dropped_weights()["weight"]
    assert torch.allclose(y, x @ w.T + lin.bias)


def test_weight_drop_dropped_weight_is_unbiased():
    # mean over N = 2000 draws of W·M/(1−p) per entry: sd |W|·sqrt(p/(1−p)/N), k = 36 entries.
    torch.manual_seed(25)
    w = torch.randn(6, 6)
    p, n = 0.5, 2000
    draws = torch.stack([weight_dropout(w, p, training=True) for _ in range(n)])
    tol = z_crit(36) * w.abs() * math.sqrt(p / (1 - p) / n)
    assert torch.all((draws.mean(0) - w).abs() <= tol)
    assert weight_dropout(w, p, training=False) is w


def test_weight_drop_emits_no_warning():
    rnn = make_rnn("lstm")
    wd = WeightDrop(rnn, p=0.5)
    x = torch.randn(3, 5, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mode in (True, False, True):
            wd.train(mode)
            first(wd(x)).sum().backward()
        copy.deepcopy(wd)
    assert caught == []


def test_weight_drop_state_dict_round_trip_and_plain_lstm_compatibility():
    rnn = make_rnn("lstm")
    wd = WeightDrop(rnn, p=0.3)
    assert set(wd.state_dict()) == {"p"} | {f"module.{k}" for k in rnn.state_dict()}
    fresh = WeightDrop(nn.LSTM(4, 6, batch_first=True), p=0.5)
    fresh.load_state_dict(wd.state_dict())
    assert fresh.rate == pytest.approx(0.3)
    x = torch.randn(2, 3, 4)
    fresh.eval(), wd.eval()
    assert torch.equal(first(fresh(x)), first(wd(x)))
    plain = nn.LSTM(4, 6, batch_first=True)
    plain.load_state_dict(wd.module.state_dict(), strict=True)  # no *_raw names to translate
    assert torch.equal(first(plain(x)), first(wd(x)))


def test_weight_drop_errors_registry_and_repr():
    rnn = make_rnn("gru")
    with pytest.raises(ValueError, match=r"weight_drop: .*unknown \['weight_hh_l3'\].*available"):
        WeightDrop(rnn, weights=("weight_hh_l3",))
    with pytest.raises(ValueError, match="weight_drop: weights must be non-empty"):
        WeightDrop(rnn, weights=())
    with pytest.raises(ValueError, match="weight_drop: expected an nn.Module"):
        WeightDrop("lstm")
    with pytest.raises(ValueError, match=r"weight_drop.*\[0, 1\]"):
        WeightDrop(rnn, p=-0.5)
    wd = make_dropout("weight_drop", rnn, p=0.5)
    assert isinstance(wd, WeightDrop) and WeightDrop.batch_shared_mask is True
    assert get_variant("weight_drop").kind == "wrapper"
    assert "weights=['weight_hh_l0']" in repr(wd)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_weight_drop_cuda_cudnn_no_warning_and_gradient():
    rnn = make_rnn("lstm").cuda()
    wd = WeightDrop(rnn, p=0.5).train()
    x = torch.randn(3, 5, 4, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            first(wd(x)).sum().backward()
        # two forwards before one backward: each swap re-flattens the cuDNN buffer (set_ on the
        # parameters), which must not invalidate the first graph
        (first(wd(x)) + first(wd(x))).sum().backward()
        wd.eval()
        first(wd(x)).sum().backward()
    assert caught == []
    assert rnn.weight_hh_l0.grad is not None and rnn.weight_hh_l0.grad.abs().sum() > 0
