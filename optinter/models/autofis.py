"""AutoFIS (Liu et al., KDD 2020) on DeepFM ("AutoDeepFM"): gated factorized interactions,
searched with GRDA, then re-trained on the kept interactions.

Model (both stages)::

    logit = FieldBias(x) + Σ_{p kept} α_p · BN(⟨e_i, e_j⟩)_p + MLP(flatten(e))       (B)

* e: B × F × D field embeddings (``model.embed_dim``; continuous fields as value × vector);
* the gated pairs are the cross-product pairs of ``feature_map.pairs`` — the OptInter search
  space (Table III: AutoFIS searches {naive, factorize} over the same pairs OptInter searches
  {naive, memorize, factorize}), so an AutoFIS architecture is an ordinary ``architecture.json``
  with choices "factorize" (gate kept) / "naive" (gate zero);
* BN: batch normalization without scale or shift over the P inner products (momentum 0.01,
  eps 1e-3, as the AutoFIS code), which decouples the gate's scale from the embeddings';
* α starts at 0.6 ± 0.001 (AutoFIS's ``weight_base``).

Search (``build_search_model("autofis")``, :class:`AutoFISSearch`): α is the ``"arch"`` group,
updated by :class:`~optinter.optim.GRDA` (lr ``model.grda_lr`` — 1.0 as in the AutoFIS code
when the config has no such key —, c = ``model.grda_c``, μ = ``model.grda_mu``) on the same
mini-batch as the Adam step of Θ. GRDA drives unimportant gates to exactly 0;
:meth:`AutoFISSearch.derive_architecture` keeps the pairs with α ≠ 0.

Re-train (``build_model("autofis", fmap, cfg, arch=arch)``, :class:`AutoFISNet`): a new model
with only the kept pairs (no BN statistics, gates or products allocated for the others); its
gates α start again at 0.6 and are trained by Adam with everything else (``"orig"`` group), as
in the AutoFIS code's re-train stage.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
from torch import nn

from preprocess.feature_map import FeatureMap

from ..architecture import Architecture
from ..config import ModelConfig, TrainConfig
from ..layers.embedding import FieldBias, FieldEmbedding
from ..layers.interactions import InnerProduct, feature_map_pair_positions
from ..layers.mlp import MLP
from ..optim.grda import GRDA
from ..registry import register_model, register_search_model
from .base import Batch, CTRModel

log = logging.getLogger(__name__)

ALPHA_INIT = 0.6  # AutoFIS's weight_base
ALPHA_INIT_RADIUS = 1e-3
BN_MOMENTUM = 0.01  # torch convention (TensorFlow's decay 0.99)
BN_EPS = 1e-3


class GatedInnerProducts(nn.Module):
    """Σ_p α_p · BN(⟨e_i, e_j⟩)_p over the given pairs: B × F × D → B.

    BN has no affine parameters; its running statistics (P) are used in eval mode and when a
    training batch has a single row.
    """

    def __init__(self, pairs: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.product = InnerProduct(pairs)
        p = self.product.num_pairs
        self.alpha = nn.Parameter(torch.empty(p).uniform_(ALPHA_INIT - ALPHA_INIT_RADIUS, ALPHA_INIT + ALPHA_INIT_RADIUS))
        self.register_buffer("running_mean", torch.zeros(p))
        self.register_buffer("running_var", torch.ones(p))

    @property
    def num_pairs(self) -> int:
        return self.product.num_pairs

    def normalized(self, e: torch.Tensor) -> torch.Tensor:
        """e: B × F × D → BN(⟨e_i, e_j⟩): B × P."""
        ip = self.product(e)
        if not (self.training and ip.shape[0] > 1):
            return (ip - self.running_mean) * torch.rsqrt(self.running_var + BN_EPS)
        # F.batch_norm's semantics (biased variance to normalize, unbiased in the running average), written
        # with column reductions: its fused CPU backward sums per thread, so gradients would change with the
        # number of threads (see optinter.layers.norm)
        mean = ip.mean(0)
        centred = ip - mean
        var = (centred * centred).mean(0)
        with torch.no_grad():
            n = ip.shape[0]
            self.running_mean.lerp_(mean.detach(), BN_MOMENTUM)
            self.running_var.lerp_(var.detach() * (n / (n - 1)), BN_MOMENTUM)
        return centred * torch.rsqrt(var + BN_EPS)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if self.num_pairs == 0:
            return e.new_zeros(e.shape[0])
        return self.normalized(e) @ self.alpha


class AutoFISBase(CTRModel):
    """AutoDeepFM over the feature-map pairs ``gated`` (indices into ``feature_map.pairs``)."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig, gated: Sequence[int]) -> None:
        super().__init__(feature_map)
        if not feature_map.pairs:
            raise ValueError("model autofis gates the feature map's cross-product pairs; the feature map has none")
        self.cfg = cfg
        self.linear = FieldBias.from_feature_map(feature_map)
        self.embedding = FieldEmbedding.from_feature_map(feature_map, cfg.embed_dim)
        positions = feature_map_pair_positions(feature_map)
        self.gated = list(gated)
        self.gates = GatedInnerProducts([positions[k] for k in self.gated])
        self.mlp = MLP(self.embedding.num_fields * cfg.embed_dim, cfg.mlp_dims, layer_norm=cfg.layer_norm,
                       dropout=cfg.dropout)

    def forward(self, batch: Batch) -> torch.Tensor:
        """→ B logits."""
        e = self.embedding(batch.cat, batch.cont, batch.multi)
        return self.linear(batch.cat, batch.cont, batch.multi) + self.gates(e) + self.mlp(e.flatten(1))

    def gate_values(self) -> dict[str, float]:
        """``{"A|B": α}`` for the gated pairs."""
        names = [self.feature_map.pairs[k].name for k in self.gated]
        return dict(zip(names, self.gates.alpha.detach().cpu().tolist()))


class AutoFISSearch(AutoFISBase):
    """Search stage: every feature-map pair gated; α (``"arch"``) trained by GRDA."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(feature_map, cfg, range(feature_map.num_pairs))
        self.grda_lr = float(cfg.grda_lr)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.gates.alpha]

    def make_arch_optimizer(self, train_cfg: TrainConfig) -> torch.optim.Optimizer:
        """GRDA over α with (lr, c, μ) = (``model.grda_lr``, ``model.grda_c``, ``model.grda_mu``)."""
        return GRDA([self.gates.alpha], lr=self.grda_lr, c=self.cfg.grda_c, mu=self.cfg.grda_mu)

    def derive_architecture(self) -> Architecture:
        """Pairs with α ≠ 0 → "factorize", α = 0 → "naive"; α values in ``meta["alpha"]``."""
        alpha = self.gates.alpha.detach().cpu()
        fmap = self.feature_map
        arch = Architecture(
            pairs=[p.name for p in fmap.pairs],
            choices=["factorize" if a != 0 else "naive" for a in alpha.tolist()],
            model="autofis",
            source="search",
            feature_map_hash=fmap.content_hash,
            meta={"alpha": [float(a) for a in alpha.tolist()], "grda_lr": self.grda_lr,
                  "grda_c": self.cfg.grda_c, "grda_mu": self.cfg.grda_mu},
        )
        m, f, n = arch.counts()
        log.info("autofis search: %d of %d interactions kept (%d pruned)", f, len(arch.pairs), n)
        return arch

    def extra_metrics(self) -> dict[str, Any]:
        return self.derive_architecture().count_dict()


class AutoFISNet(AutoFISBase):
    """Re-train stage: only the pairs the architecture keeps ("factorize"); α trained by Adam."""

    def __init__(self, feature_map: FeatureMap, cfg: ModelConfig, arch: Architecture) -> None:
        arch.validate(feature_map, where="autofis architecture")
        bad = [p for p, c in zip(arch.pairs, arch.choices) if c == "memorize"]
        if bad:
            raise ValueError(
                f"autofis architecture: AutoFIS chooses only factorize / naive, but {len(bad)} pairs are "
                f"'memorize' (first: {bad[0]!r}); was this file searched by another model ({arch.model!r})?"
            )
        super().__init__(feature_map, cfg, arch.indices("factorize"))
        self.arch = arch

    def extra_metrics(self) -> dict[str, Any]:
        return self.arch.count_dict()


@register_search_model("autofis")
def autofis_search(feature_map: FeatureMap, cfg: ModelConfig) -> AutoFISSearch:
    return AutoFISSearch(feature_map, cfg)


@register_model("autofis", needs_arch=True)
def autofis(feature_map: FeatureMap, cfg: ModelConfig, arch: Architecture) -> AutoFISNet:
    return AutoFISNet(feature_map, cfg, arch)
