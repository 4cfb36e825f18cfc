"""Rate schedules and DropoutScheduler (src/dropoutlab/schedules.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dropoutlab.schedules import (
    AnnealedSchedule,
    ConstantSchedule,
    CosineSchedule,
    CurriculumSchedule,
    DropoutScheduler,
    ExponentialSchedule,
    KeepRampSchedule,
    KLWarmup,
    LinearSchedule,
    StepSchedule,
    curriculum_from_keep,
    depth_linear_rates,
    keep_ramp_from_keep,
    list_schedules,
    make_schedule,
)
from dropoutlab.variants import DropoutBase, make_dropout


def values(s, ts):
    return [s(t) for t in ts]


def is_monotone(xs, increasing=True):
    pairs = list(zip(xs, xs[1:]))
    return all(b >= a for a, b in pairs) if increasing else all(b <= a for a, b in pairs)


# ----------------------------------------------------------------------------- schedules


def test_constant():
    s = ConstantSchedule(0.3)
    assert values(s, [0, 1, 10**6]) == [0.3, 0.3, 0.3]


def test_linear_endpoints_and_monotone():
    s = LinearSchedule(0.1, 0.5, steps=10)
    assert s(0) == 0.1
    assert s(5) == pytest.approx(0.3)
    assert s(10) == pytest.approx(0.5) and s(1000) == pytest.approx(0.5)
    assert is_monotone(values(s, range(20)))
    assert is_monotone(values(LinearSchedule(0.5, 0.0, 7), range(20)), increasing=False)


def test_exponential():
    s = ExponentialSchedule(0.5, end=0.1, gamma=0.1)
    assert s(0) == 0.5
    assert s(10) == pytest.approx(0.1 + 0.4 * math.exp(-1.0))
    assert s(10**5) == pytest.approx(0.1)
    assert is_monotone(values(s, range(100)), increasing=False)


def test_cosine():
    s = CosineSchedule(0.0, 0.4, steps=8)
    assert s(0) == 0.0
    assert s(4) == pytest.approx(0.2)
    assert s(8) == pytest.approx(0.4) and s(100) == pytest.approx(0.4)
    assert is_monotone(values(s, range(12)))


def test_step():
    s = StepSchedule([0.0, 0.2, 0.5], milestones=[3, 6])
    assert values(s, range(8)) == [0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.5, 0.5]
    with pytest.raises(ValueError, match="len\\(values\\) == len\\(milestones\\) \\+ 1"):
        StepSchedule([0.1, 0.2], [3, 6])
    with pytest.raises(ValueError, match="strictly increasing"):
        StepSchedule([0.1, 0.2, 0.3], [6, 3])


def test_annealed_reaches_zero():
    """Rennie et al. 2014: from the initial rate linearly to 0 over N units, then 0."""
    s = AnnealedSchedule(0.5, steps=10)
    assert s(0) == 0.5
    assert s(5) == pytest.approx(0.25)
    assert s(10) == 0.0 and s(50) == 0.0
    assert is_monotone(values(s, range(15)), increasing=False)


def test_curriculum_keep_endpoints():
    """Morerio et al. 2017: θ(0) = 1, θ(∞) = θ̄; exposed as drop p = 1 − θ."""
    theta_bar, gamma = 0.5, 1e-3
    s = curriculum_from_keep(theta_bar, gamma=gamma)
    assert isinstance(s, CurriculumSchedule)
    assert s.keep(0) == 1.0 and s(0) == 0.0
    assert s.keep(10**6) == pytest.approx(theta_bar, abs=1e-12)
    assert s(10**6) == pytest.approx(1 - theta_bar, abs=1e-12)
    t = 1234
    assert s.keep(t) == pytest.approx((1 - theta_bar) * math.exp(-gamma * t) + theta_bar, rel=1e-12)
    assert s(t) == pytest.approx(1 - s.keep(t), rel=1e-12)
    ps = values(s, range(0, 10_000, 100))
    assert is_monotone(ps) and all(0.0 <= p <= 1 - theta_bar for p in ps)


def test_anti_curriculum():
    s = curriculum_from_keep(0.75, gamma=0.01, anti=True)
    assert s.keep(0) == pytest.approx(0.75) and s(0) == pytest.approx(0.25)
    assert s.keep(10**5) == pytest.approx(1.0) and s(10**5) == pytest.approx(0.0)
    t = 50
    assert s.keep(t) == pytest.approx(1 - 0.25 * math.exp(-0.01 * t))
    assert is_monotone(values(s, range(0, 500, 10)), increasing=False)


def test_dropblock_keep_ramp():
    """Ghiasi et al. 2018: kp(t) = 1 − (t/T)(1 − kp_target)."""
    s = keep_ramp_from_keep(0.9, steps=100)
    assert isinstance(s, KeepRampSchedule)
    assert s.keep(0) == 1.0 and s(0) == 0.0
    assert s.keep(30) == pytest.approx(1 - 0.3 * 0.1)
    assert s.keep(100) == pytest.approx(0.9) and s(100) == pytest.approx(0.1)
    assert s(10_000) == pytest.approx(0.1)
    assert is_monotone(values(s, range(120)))


def test_kl_warmup_sparse_vd():
    """Molchanov et al. 2017: KL weight 0 before epoch 5, linear to 1 by epoch 20."""
    w = KLWarmup(5, 20)
    assert values(w, [0, 4, 5]) == [0.0, 0.0, 0.0]
    assert w(10) == pytest.approx(1 / 3) and w(20) == 1.0 and w(100) == 1.0
    assert is_monotone(values(w, range(30)))
    with pytest.raises(ValueError, match="end must be > start"):
        KLWarmup(5, 5)


def test_depth_linear_rates():
    rates = depth_linear_rates(0.5, 54)
    assert rates[-1] == pytest.approx(0.5) and rates[0] == pytest.approx(0.5 / 54)
    # Huang et al. 2016: E[active blocks] = Σ p_l = (3L − 1)/4 for p_L = 0.5
    assert sum(1 - r for r in rates) == pytest.approx((3 * 54 - 1) / 4)
    timm = depth_linear_rates(0.1, 5, rule="timm")
    assert timm == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    with pytest.raises(ValueError, match="rule"):
        depth_linear_rates(0.1, 5, rule="other")


@pytest.mark.parametrize("bad", [
    lambda: ConstantSchedule(1.5),
    lambda: LinearSchedule(0.1, -0.1, 10),
    lambda: LinearSchedule(0.1, 0.2, 0),
    lambda: LinearSchedule(0.1, 0.2, 2.5),
    lambda: ExponentialSchedule(0.5, gamma=-1.0),
    lambda: CurriculumSchedule(float("nan")),
    lambda: curriculum_from_keep(1.2),
])
def test_invalid_arguments(bad):
    with pytest.raises(ValueError):
        bad()


def test_negative_t_rejected():
    with pytest.raises(ValueError, match="t must be an integer >= 0"):
        ConstantSchedule(0.1)(-1)


def test_make_schedule_and_config_round_trip():
    assert set(list_schedules()) >= {"constant", "linear", "exponential", "cosine", "step", "annealed",
                                     "curriculum", "keep_ramp", "kl_warmup"}
    built = [
        make_schedule("constant", p=0.2),
        make_schedule("linear", start=0.0, end=0.5, steps=10),
        make_schedule("exponential", start=0.5, gamma=0.1),
        make_schedule("cosine", start=0.5, end=0.0, steps=10),
        make_schedule("step", values=[0.1, 0.2], milestones=[4]),
        make_schedule("annealed", start=0.5, steps=10),
        make_schedule("curriculum", keep_target=0.5, gamma=1e-3),
        make_schedule("keep_ramp", p_target=0.1, steps=10),
        make_schedule("kl_warmup", start=5, end=20),
    ]
    for s in built:
        again = make_schedule(s.name, **s.config())
        assert again == s and values(again, range(30)) == values(s, range(30))
        assert type(s).__name__ in repr(s)
        assert s.state_dict() == {}
    assert make_schedule("dropblock", keep_target=0.9, steps=10) == keep_ramp_from_keep(0.9, 10)
    assert make_schedule("anti_curriculum", keep_target=0.5) == curriculum_from_keep(0.5, anti=True)
    assert make_schedule("curriculum", keep_target=0.5)(10**7) == pytest.approx(0.5)


def test_make_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule 'nope'; known:"):
        make_schedule("nope")
    with pytest.raises(ValueError, match="bad arguments"):
        make_schedule("linear", start=0.1)
    with pytest.raises(ValueError, match="bad arguments"):
        make_schedule("constant", p=0.1, q=2)
    with pytest.raises(ValueError, match="not both"):
        make_schedule("curriculum", keep_target=0.5, p_target=0.5)


# ----------------------------------------------------------------------------- scheduler


class LearnedRate(DropoutBase):
    """A stand-in for a learned-rate variant (no ``p`` buffer)."""

    learned = True

    def __init__(self) -> None:
        super().__init__(p=None)
        self.logit = nn.Parameter(torch.zeros(()))

    @property
    def rate(self) -> float:
        return float(torch.sigmoid(self.logit))

    def forward(self, x):
        return x


def net() -> nn.Sequential:
    return nn.Sequential(
        make_dropout("inverted", p=0.2),  # "0"
        nn.Linear(4, 8),                   # "1"
        nn.ReLU(),                         # "2"
        make_dropout("standard", p=0.5),   # "3"
        nn.Linear(8, 8),                   # "4"
        nn.Dropout(0.5),                   # "5"
        LearnedRate(),                     # "6"
        nn.Linear(8, 2),                   # "7"
    )


def test_scheduler_writes_rates_into_modules():
    model = net()
    sched = DropoutScheduler(model, LinearSchedule(0.0, 0.4, steps=4))
    assert list(sched.modules) == ["0", "3", "5"]  # learned module skipped by default
    assert sched.rates() == {"0": 0.0, "3": 0.0, "5": 0.0}  # t = 0 written at construction
    for t in range(1, 6):
        sched.step()
        expected = 0.4 * min(t, 4) / 4
        assert sched.t == t
        assert float(model[0].p) == pytest.approx(expected)
        assert float(model[3].p) == pytest.approx(expected)
        assert isinstance(model[5].p, float) and model[5].p == pytest.approx(expected)
    assert "DropoutScheduler(unit='step', t=5" in repr(sched)


@pytest.mark.parametrize("select, names", [
    (nn.Dropout, ["5"]),
    ((nn.Dropout, type(make_dropout("standard"))), ["3", "5"]),
    (["0", "5"], ["0", "5"]),
    (lambda name, m: name in ("3",), ["3"]),
])
def test_select_forms(select, names):
    model = net()
    sched = DropoutScheduler(model, ConstantSchedule(0.05), select=select)
    assert list(sched.modules) == names
    for n, m in model.named_children():
        if n in names:
            assert float(m.p) == pytest.approx(0.05)
        elif n in ("0", "3", "5"):
            assert float(m.p) != pytest.approx(0.05)


def test_select_errors():
    model = net()
    with pytest.raises(ValueError, match="matches no module"):
        DropoutScheduler(model, ConstantSchedule(0.1), select=nn.Dropout2d)
    with pytest.raises(ValueError, match="no module named"):
        DropoutScheduler(model, ConstantSchedule(0.1), select=["missing"])
    with pytest.raises(ValueError, match="the select callable matches no module"):
        DropoutScheduler(model, ConstantSchedule(0.1), select=lambda n, m: False)
    with pytest.raises(ValueError, match="no schedulable rate"):
        DropoutScheduler(model, ConstantSchedule(0.1), select=["6"])  # learned
    with pytest.raises(ValueError, match="no schedulable rate"):
        DropoutScheduler(model, ConstantSchedule(0.1), select=["1"])  # Linear
    with pytest.raises(ValueError, match="no dropout module found"):
        DropoutScheduler(nn.Linear(2, 2), ConstantSchedule(0.1))
    with pytest.raises(ValueError, match="unit"):
        DropoutScheduler(model, ConstantSchedule(0.1), unit="batch")


def test_per_layer_schedules():
    model = net()
    sched = DropoutScheduler(model, {"0": curriculum_from_keep(0.9, gamma=0.5), "3": 0.5,
                                     "5": AnnealedSchedule(0.5, 2)}, unit="epoch")
    sched.on_batch_end()  # unit is epoch: no-op
    assert sched.t == 0
    sched.on_epoch_end()
    r = sched.rates()
    assert r["0"] == pytest.approx(0.1 * (1 - math.exp(-0.5)), rel=1e-6)
    assert r["3"] == pytest.approx(0.5) and r["5"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="leave select=None"):
        DropoutScheduler(model, {"0": ConstantSchedule(0.1)}, select=nn.Dropout)


def test_state_dict_resumes_identically():
    schedule = make_schedule("curriculum", keep_target=0.5, gamma=0.2)
    ref_model = net()
    ref = DropoutScheduler(ref_model, schedule)
    for _ in range(7):
        ref.step()
    saved = ref.state_dict()
    saved_model = {k: v.clone() for k, v in ref_model.state_dict().items()}
    expected = []
    for _ in range(5):
        ref.step()
        expected.append(ref.rates())

    model = net()
    model.load_state_dict(saved_model)
    resumed = DropoutScheduler(model, schedule)
    assert resumed.t == 0
    resumed.load_state_dict(saved)
    assert resumed.t == 7 and resumed.rates() == pytest.approx(
        {n: schedule(7) for n in ("0", "3", "5")})
    got = []
    for _ in range(5):
        resumed.step()
        got.append(resumed.rates())
    assert got == expected
    with pytest.raises(ValueError, match="unit"):
        DropoutScheduler(net(), schedule, unit="epoch").load_state_dict(saved)


def test_p_buffer_is_checkpointed_with_the_model():
    model = net()
    DropoutScheduler(model, ConstantSchedule(0.33), select=["0"])
    assert float(model.state_dict()["0.p"]) == pytest.approx(0.33)
