"""Models used by the notebooks; dropout layers are chosen by registry name and rate.

* :class:`MLP`: widths, activation, input dropout and per-layer dropout (Srivastava 2014).
* :class:`ConvNet`: blocks built from an order string such as ``"conv-bn-act-drop-pool"``
  (the BN/Dropout ordering table of a Stack Overflow answer, Q39691902).
* :class:`Autoencoder`: one hidden layer (Srivastava 2014, Fig. 7–8).
* :class:`KingmaMLP` (learned Gaussian dropout on units, :class:`VariationalGaussianDropout`),
  :class:`LeNet300100`, :class:`LeNet5Caffe` (sparse variational dropout): Kingma et al. 2015,
  Molchanov et al. 2017.
* :class:`RowLSTM`: an LSTM reading an image row by row (sequence model for RNN dropout).

Where a layer gets dropout depends on the variant's ``kind`` in the registry: an
``activation`` variant is inserted before the Linear layer it feeds, a ``wrapper`` variant
wraps that Linear layer (Concrete dropout), a ``layer`` variant replaces it (DropConnect,
variational dropout). ``p = 0`` or the name ``"none"`` inserts nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .variants import get_variant, make_dropout
from .variants.bayesian import (
    ALPHA_INIT_MAX,
    SparseVariationalConv2d,
    SparseVariationalLinear,
    kingma_kl,
)
from .variants.structured import depth_linear_rates

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "selu": nn.SELU, "gelu": nn.GELU,
    "identity": nn.Identity,
}
BLOCK_TOKENS = ("conv", "bn", "act", "drop", "pool")


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def _per_layer(value: float | Sequence[float], n: int, what: str) -> list[float]:
    values = [float(value)] * n if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{what}: expected one rate per layer ({n}), got {len(values)}")
    return values


def dropout_then_linear(dropout: str, p: float, in_features: int, out_features: int,
                        **dropout_kwargs: Any) -> list[nn.Module]:
    """The modules for "dropout on the input of a Linear layer", by the variant's kind."""
    if dropout == "none" or p == 0.0:
        return [nn.Linear(in_features, out_features)]
    kind = get_variant(dropout).kind
    if kind == "activation":
        return [make_dropout(dropout, p=p, **dropout_kwargs), nn.Linear(in_features, out_features)]
    if kind == "wrapper":
        return [make_dropout(dropout, nn.Linear(in_features, out_features), p=p, **dropout_kwargs)]
    return [make_dropout(dropout, in_features, out_features, p=p, **dropout_kwargs)]


class MLP(nn.Sequential):
    """Fully connected net ``in → widths… → out`` with dropout on the input and hidden layers.

    ``p_input`` is the drop probability on the input, ``p_hidden`` one rate or one per hidden
    layer. Srivastava et al. (2014) use keep rates 0.8 and 0.5, i.e. ``p_input=0.2,
    p_hidden=0.5``. Input: any shape ``(N, ...)``, flattened. Output: ``(N, out_features)``.
    """

    def __init__(self, in_features: int, widths: Sequence[int], out_features: int, *,
                 activation: str = "relu", dropout: str = "inverted", p_input: float = 0.0,
                 p_hidden: float | Sequence[float] = 0.5, dropout_kwargs: dict | None = None) -> None:
        widths = list(widths)
        rates = [float(p_input)] + _per_layer(p_hidden, len(widths), "MLP p_hidden")
        sizes = [in_features, *widths, out_features]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers += dropout_then_linear(dropout, rates[i], fan_in, fan_out, **(dropout_kwargs or {}))
            if i < len(widths):
                layers.append(make_activation(activation))
        super().__init__(*layers)
        self.config = dict(in_features=in_features, widths=widths, out_features=out_features,
                           activation=activation, dropout=dropout, p_input=p_input, p_hidden=p_hidden)


def parse_order(order: str) -> list[str]:
    """Validate a block order string like ``"conv-bn-act-drop-pool"``.

    Tokens: conv (required), bn, act (required), drop, pool, each at most once, in any order.
    """
    tokens = [t.strip().lower() for t in order.replace("→", "-").replace(">", "-").split("-") if t.strip()]
    unknown = [t for t in tokens if t not in BLOCK_TOKENS]
    if unknown:
        raise ValueError(f"order {order!r}: unknown token(s) {unknown}; allowed: {', '.join(BLOCK_TOKENS)}")
    repeated = sorted({t for t in tokens if tokens.count(t) > 1})
    if repeated:
        raise ValueError(f"order {order!r}: each token may appear once, repeated: {repeated}")
    missing = [t for t in ("conv", "act") if t not in tokens]
    if missing:
        raise ValueError(f"order {order!r}: missing required token(s) {missing}")
    return tokens


class ConvNet(nn.Module):
    """Conv blocks built from an order string, then ``Flatten → Linear(hidden) → act → Linear(classes)``.

    ``order`` is one string for every block or one per block; ``p`` one rate or one per block;
    ``padding=0`` is Keras' default "valid". The seed table's net is
    ``ConvNet((1, 28, 28), channels=(32, 64), order=..., activation="elu", p=(0.2, 0.3), hidden=512)``.
    Input ``(N, C, H, W)``; output ``(N, num_classes)`` logits.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), channels: Sequence[int] = (32, 64), *,
                 order: str | Sequence[str] = "conv-bn-act-drop-pool", kernel_size: int = 3, padding: int = 0,
                 activation: str = "relu", dropout: str = "inverted", p: float | Sequence[float] = 0.2,
                 hidden: int = 512, p_hidden: float = 0.0, num_classes: int = 10, pool: int = 2,
                 dropout_kwargs: dict | None = None) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ConvNet: input_shape must be (C, H, W), got {tuple(input_shape)}")
        channels = list(channels)
        orders = [order] * len(channels) if isinstance(order, str) else list(order)
        if len(orders) != len(channels):
            raise ValueError(f"ConvNet: {len(orders)} order strings for {len(channels)} blocks")
        rates = _per_layer(p, len(channels), "ConvNet p")
        blocks = []
        in_ch = input_shape[0]
        for out_ch, block_order, rate in zip(channels, orders, rates, strict=True):
            layers: list[nn.Module] = []
            for token in parse_order(block_order):
                if token == "conv":
                    layers.append(nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding))
                elif token == "bn":
                    layers.append(nn.BatchNorm2d(out_ch))
                elif token == "act":
                    layers.append(make_activation(activation))
                elif token == "pool":
                    layers.append(nn.MaxPool2d(pool))
                elif rate > 0 and dropout != "none":
                    layers.append(make_dropout(dropout, p=rate, **(dropout_kwargs or {})))
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():
            flat = self.features.eval()(torch.zeros(1, *input_shape)).numel()
        self.features.train()
        self.head = nn.Sequential(nn.Flatten(), *dropout_then_linear("none", 0.0, flat, hidden),
                                  make_activation(activation),
                                  *dropout_then_linear(dropout, p_hidden, hidden, num_classes))
        self.config = dict(input_shape=tuple(input_shape), channels=channels, order=orders, activation=activation,
                           dropout=dropout, p=rates, hidden=hidden, num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class Autoencoder(nn.Module):
    """One-hidden-layer autoencoder ``in → hidden → in`` with dropout on the hidden code.

    Srivastava et al. (2014) §7.1: 256 ReLU units, p = 0.5 on the hidden layer. The decoder
    ends in a sigmoid (pixels in [0, 1]). ``encode`` returns the hidden activations
    (before dropout); input ``(N, ...)`` flattened, output ``(N, in_features)``.
    """

    def __init__(self, in_features: int = 784, hidden: int = 256, *, activation: str = "relu",
                 dropout: str = "inverted", p: float = 0.5, p_input: float = 0.0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), *dropout_then_linear(dropout, p_input, in_features, hidden),
                                     make_activation(activation))
        self.decoder = nn.Sequential(*dropout_then_linear(dropout, p, hidden, in_features), nn.Sigmoid())

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class VariationalGaussianDropout(nn.Module):
    """Gaussian dropout on units with a learned rate: Kingma et al. (2015) variational dropout, variant A.

    Kingma, Salimans, Welling, NeurIPS 2015, §3.2/§4: multiplicative noise on a layer's *inputs*,
    ``y = x ⊙ ξ``, ``ξ ~ N(1, α)`` per sample and unit (correlated noise on the weights of the next
    layer), with ``α = p/(1−p)`` learned. ``α = σ(alpha_logit) < 1`` (the KL fit holds for α ≤ 1).
    ``granularity="layer"`` learns one α, ``"unit"`` one per unit. :meth:`kl` is Kingma's polynomial
    KL (:func:`~dropoutlab.variants.bayesian.kingma_kl`, constant dropped) counted once per weight of
    the layer the units feed (``fan_out`` weights per unit), as for independent weight noise;
    :meth:`regularizer` is ``kl_weight · kl()`` (``kl_weight = 1/N`` for a mean loss over N points).
    Eval: identity. Shape: ``(N, features)`` in and out.
    """

    def __init__(self, features: int, fan_out: int, p: float = 0.5, granularity: str = "unit",
                 kl_weight: float = 1.0) -> None:
        super().__init__()
        for what, value in (("features", features), ("fan_out", fan_out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VariationalGaussianDropout: {what} must be a positive int, got {value!r}")
        if granularity not in ("layer", "unit"):
            raise ValueError(f"VariationalGaussianDropout: granularity must be 'layer' or 'unit', got {granularity!r}")
        if not 0.0 < float(p) <= 0.5:
            raise ValueError(f"VariationalGaussianDropout: initial drop probability p must be in (0, 0.5] "
                             f"(α = p/(1−p) ≤ 1), got {p!r}")
        if not (float(kl_weight) >= 0.0 and math.isfinite(float(kl_weight))):
            raise ValueError(f"VariationalGaussianDropout: kl_weight must be a finite number >= 0, got {kl_weight!r}")
        self.features, self.fan_out, self.granularity = features, fan_out, granularity
        alpha = min(float(p) / (1.0 - float(p)), ALPHA_INIT_MAX)
        shape = () if granularity == "layer" else (features,)
        self.alpha_logit = nn.Parameter(torch.full(shape, math.log(alpha) - math.log1p(-alpha)))
        self.register_buffer("kl_weight", torch.tensor(float(kl_weight)))

    @property
    def log_alpha(self) -> Tensor:
        return F.logsigmoid(self.alpha_logit)

    @property
    def p(self) -> Tensor:
        """Equivalent drop probabilities ``α/(1+α)`` (graph-connected)."""
        alpha = torch.sigmoid(self.alpha_logit)
        return alpha / (1.0 + alpha)

    @property
    def rate(self) -> float:
        return float(self.p.detach().mean())

    def kl(self) -> Tensor:
        per_alpha = kingma_kl(self.log_alpha)
        return per_alpha.sum() * (self.features * self.fan_out // per_alpha.numel())

    def regularizer(self) -> Tensor:
        return self.kl_weight * self.kl()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"VariationalGaussianDropout: input must have shape (N, {self.features}), "
                             f"got {tuple(x.shape)}")
        if not self.training:
            return x
        return x * (1.0 + self.log_alpha.mul(0.5).exp() * torch.randn_like(x))

    def extra_repr(self) -> str:
        return f"features={self.features}, granularity={self.granularity}, p={self.rate:.4g}"


class KingmaMLP(nn.Sequential):
    """MLP ``in → widths… → out`` (ReLU) with :class:`VariationalGaussianDropout` on every hidden layer.

    Kingma et al. (2015) variational dropout, variant A, on the hidden units (not on the input). The
    layers are built in the same order as :class:`MLP` with ``p_input=0``, and the noise modules draw
    no random numbers, so under the same seed the Linear layers start with :class:`MLP`'s weights
    (the arms of a comparison are paired by initialisation). ``kl_weight``: ``1/N`` for a mean loss.
    """

    def __init__(self, in_features: int, widths: Sequence[int], out_features: int, *, p: float = 0.5,
                 granularity: str = "unit", kl_weight: float = 1.0) -> None:
        widths = list(widths)
        if not widths:
            raise ValueError("KingmaMLP: widths must name at least one hidden layer")
        sizes = [in_features, *widths, out_features]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if i > 0:
                layers.append(VariationalGaussianDropout(fan_in, fan_out, p=p, granularity=granularity,
                                                         kl_weight=kl_weight))
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(widths):
                layers.append(nn.ReLU())
        super().__init__(*layers)


class LeNet300100(nn.Sequential):
    """LeNet-300-100 with sparse variational dropout on every layer (Molchanov et al., ICML 2017, Table 1).

    ``Flatten → SVLinear(in, 300) → ReLU → SVLinear(300, 100) → ReLU → SVLinear(100, out)`` with
    :class:`~dropoutlab.variants.bayesian.SparseVariationalLinear` (weights with ``log α ≥ threshold``
    are zero at eval). Input ``(N, ...)`` flattened to ``in_features``; output ``(N, out_features)``.
    """

    def __init__(self, in_features: int = 784, out_features: int = 10, *, widths: Sequence[int] = (300, 100),
                 threshold: float = 3.0, kl_weight: float = 1.0) -> None:
        sizes = [in_features, *widths, out_features]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(SparseVariationalLinear(fan_in, fan_out, threshold=threshold, kl_weight=kl_weight))
            if i < len(widths):
                layers.append(nn.ReLU())
        super().__init__(*layers)


class LeNet5Caffe(nn.Module):
    """LeNet-5-Caffe with sparse variational dropout on every layer (Molchanov et al., ICML 2017, Table 1).

    ``conv 20@5×5 → maxpool 2 → conv 50@5×5 → maxpool 2 → fc 500 → ReLU → fc 10`` as in Caffe's
    ``lenet_train_test.prototxt`` (no nonlinearity after the convolutions), every layer a sparse-VD
    layer (:class:`~dropoutlab.variants.bayesian.SparseVariationalConv2d` / ``SparseVariationalLinear``).
    On 28×28 inputs the first fc layer is 800 → 500. ``padding`` (0 in the paper) lets the net run on
    small images (8×8 digits: ``padding=2``). Input ``(N, C, H, W)``; output ``(N, num_classes)``.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, *,
                 channels: Sequence[int] = (20, 50), hidden: int = 500, padding: int = 0, threshold: float = 3.0,
                 kl_weight: float = 1.0) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"LeNet5Caffe: input_shape must be (C, H, W), got {tuple(input_shape)}")
        c1, c2 = channels
        kw = dict(threshold=threshold, kl_weight=kl_weight)
        self.features = nn.Sequential(
            SparseVariationalConv2d(input_shape[0], c1, 5, padding=padding, **kw), nn.MaxPool2d(2),
            SparseVariationalConv2d(c1, c2, 5, padding=padding, **kw), nn.MaxPool2d(2))
        h, w = input_shape[1:]
        for _ in range(2):
            h, w = (h + 2 * padding - 4) // 2, (w + 2 * padding - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f"LeNet5Caffe: input {tuple(input_shape)} is too small for two 5×5 convolutions "
                             f"and poolings with padding={padding}")
        self.classifier = nn.Sequential(nn.Flatten(), SparseVariationalLinear(c2 * h * w, hidden, **kw), nn.ReLU(),
                                        SparseVariationalLinear(hidden, num_classes, **kw))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class RowLSTM(nn.Module):
    """LSTM over the rows of an image ``(N, 1, H, W)`` → ``(N, num_classes)``.

    Dropout on the LSTM inputs and on its last output. With ``dropout="locked"`` the input
    mask is the same at every time step (Gal & Ghahramani 2016); ``p_recurrent`` > 0 wraps the
    LSTM in ``weight_drop`` (DropConnect on the hidden-to-hidden weights, Merity et al. 2018).
    """

    def __init__(self, row_size: int = 28, hidden: int = 128, num_classes: int = 10, *,
                 dropout: str = "inverted", p: float = 0.0, p_recurrent: float = 0.0) -> None:
        super().__init__()
        kwargs = {"batch_first": True} if dropout == "locked" else {}
        self.input_dropout = make_dropout(dropout, p=p, **kwargs) if p > 0 and dropout != "none" else nn.Identity()
        lstm = nn.LSTM(row_size, hidden, batch_first=True)
        self.lstm = make_dropout("weight_drop", lstm, p=p_recurrent) if p_recurrent > 0 else lstm
        self.output_dropout = make_dropout(dropout, p=p) if p > 0 and dropout not in ("none", "locked") else (
            make_dropout("inverted", p=p) if p > 0 and dropout == "locked" else nn.Identity())
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            x = x.flatten(1, 2)  # (N, 1, H, W) → (N, H, W): rows are time steps
        out, _ = self.lstm(self.input_dropout(x))
        return self.classifier(self.output_dropout(out[:, -1]))


class DropConnectMLP(nn.Sequential):
    """``in → widths… → out`` ReLU MLP with DropConnect (Wan et al., ICML 2013) on chosen layers.

    The noise sits on the weights of the layers that read each hidden layer (``800 → 800`` and
    ``800 → 10`` for Wan et al.'s 784-800-800-10 net), i.e. the same layers whose inputs an
    :class:`MLP` with ``p_input=0, p_hidden=p`` drops: DropConnect drops single connections
    where dropout drops a whole column of the weight matrix. Each DropConnect layer owns the
    activation after it (ReLU on hidden layers, none on the logits), because the paper's Gaussian
    inference averages the *activation* over samples of the pre-activation; ``inference`` and
    ``n_samples`` set the eval rule (see :class:`~dropoutlab.variants.structured.DropConnectLinear`).
    ``p = 0`` gives plain ``nn.Linear`` layers. Input ``(N, ...)`` flattened, output ``(N, out)``.
    """

    def __init__(self, in_features: int, widths: Sequence[int], out_features: int, *, p: float = 0.5,
                 inference: str = "gaussian", n_samples: int = 100, per_sample: bool = False,
                 eval_seed: int | None = 0) -> None:
        widths = list(widths)
        if not widths:
            raise ValueError("DropConnectMLP: widths must name at least one hidden layer")
        sizes = [in_features, *widths, out_features]
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(sizes[0], sizes[1]), nn.ReLU()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[1:-1], sizes[2:], strict=True)):
            last = i == len(widths) - 1
            if p == 0.0:
                layers.append(nn.Linear(fan_in, fan_out))
                if not last:
                    layers.append(nn.ReLU())
                continue
            layers.append(make_dropout("dropconnect", fan_in, fan_out, p=p, inference=inference, n_samples=n_samples,
                                       activation=None if last else torch.relu, per_sample=per_sample,
                                       eval_seed=eval_seed))
            if not last:
                layers.append(nn.Identity())  # keeps the indices of the p = 0 net (the activation is inside)
        super().__init__(*layers)
        self.config = dict(in_features=in_features, widths=widths, out_features=out_features, p=p,
                           inference=inference, n_samples=n_samples, per_sample=per_sample)

    def set_inference(self, inference: str) -> None:
        """Switch every DropConnect layer's eval rule (``"scale"``, ``"gaussian"`` or ``"sample"``)."""
        cls = get_variant("dropconnect").cls
        for module in self.modules():
            if isinstance(module, cls):
                module.inference = inference


class _ResidualBlock(nn.Module):
    """CIFAR-style basic block: conv3×3-BN-ReLU-conv3×3-BN on the branch, DropPath, add, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, drop: float, mode: str) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:  # option B: 1×1 projection
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))
        # the paper's rule: no scaling in training, the branch times its survival probability at test
        self.drop_path = make_dropout("droppath", p=drop, scale_by_keep=False, mode=mode)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.shortcut(x) + self.drop_path(self.branch(x)))


class ResNetSD(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, §4.2) for small images with stochastic depth (Huang et al. 2016).

    A 3×3 stem conv with ``widths[0]`` channels, three stages of ``blocks_per_stage`` basic blocks
    (``widths``; stride 2 at the start of stages 2 and 3, 1×1 projection shortcuts there), global
    average pooling and a linear classifier: depth ``6·blocks_per_stage + 2`` (3 → ResNet-20).
    Block ``l = 1..L`` (``L = 3·blocks_per_stage``) has a :class:`~dropoutlab.variants.structured.DropPath`
    on its residual branch with drop rate ``(l/L)·p_last`` (:func:`~dropoutlab.variants.structured.depth_linear_rates`,
    Huang's linear rule; survival ``1 − (l/L)(1 − p_L)`` with ``p_L = 1 − p_last``), applied in
    the paper's form: identity shortcut only when dropped, no scaling in training, the branch
    multiplied by its survival probability at test. ``mode="batch"`` drops a block for the whole
    mini-batch (the paper), ``"row"`` per sample (timm). ``p_last = 0`` is the plain ResNet.
    Input ``(N, C, H, W)``; output ``(N, num_classes)``.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), *, blocks_per_stage: int = 3,
                 widths: Sequence[int] = (16, 32, 64), p_last: float = 0.5, mode: str = "batch",
                 num_classes: int = 10) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ResNetSD: input_shape must be (C, H, W), got {tuple(input_shape)}")
        if isinstance(blocks_per_stage, bool) or not isinstance(blocks_per_stage, int) or blocks_per_stage < 1:
            raise ValueError(f"ResNetSD: blocks_per_stage must be an integer ≥ 1, got {blocks_per_stage!r}")
        if isinstance(p_last, bool) or not isinstance(p_last, (int, float)) or not 0 <= p_last <= 1:
            raise ValueError(f"ResNetSD: p_last must be a drop probability in [0, 1], got {p_last!r}")
        widths = list(widths)
        if len(widths) != 3:
            raise ValueError(f"ResNetSD: widths must name the 3 stages' channels, got {widths}")
        n_blocks = 3 * blocks_per_stage
        self.drop_rates = depth_linear_rates(p_last, n_blocks)
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, in_ch = [], widths[0]
        for i in range(n_blocks):
            stage = i // blocks_per_stage
            stride = 2 if stage > 0 and i % blocks_per_stage == 0 else 1
            blocks.append(_ResidualBlock(in_ch, widths[stage], stride, self.drop_rates[i], mode))
            in_ch = widths[stage]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes))
        self.config = dict(input_shape=tuple(input_shape), blocks_per_stage=blocks_per_stage, widths=widths,
                           p_last=p_last, mode=mode, num_classes=num_classes, depth=6 * blocks_per_stage + 2)

    @property
    def survival(self) -> list[float]:
        """Survival probability ``1 − p_l`` of each block's residual branch."""
        return [1.0 - p for p in self.drop_rates]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
