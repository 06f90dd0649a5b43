"""OptInter (paper section II-B/II-C): original embeddings e^o, per-pair interaction embeddings e^b,
and an MLP classifier on [e^o, e^b] (eq. 9–12).

Registered models:

* ``optinter`` (search variant, :func:`optinter_search`): every pair goes through the
  :class:`~optinter.layers.combination.CombinationBlock` (Algorithm 1);
* ``optinter`` (re-train, needs an :class:`~optinter.architecture.Architecture`): each pair
  uses its argmax choice (eq. 19, Algorithm 2), no α, no noise;
* ``optinter_m`` / ``optinter_f``: the re-train model with every pair memorized / factorized.

The re-train model allocates a cross-product table only over the memorized pairs and reads only
their parquet columns (:meth:`OptInterNet.required_pairs`), so ``num_params()`` is the real size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from preprocess.feature_map import FeatureMap

from ..architecture import CHOICES, Architecture
from ..config import ModelConfig
from ..layers.combination import CombinationBlock
from ..layers.cross import FactorizationTable, HadamardPairs, MemorizedEmbedding
from ..layers.embedding import FieldBias, FieldEmbedding
from ..layers.mlp import MLP
from ..registry import register_model, register_search_model
from .base import Batch, CTRModel


#: |logit| given to a forced choice (:meth:`OptInterSearch.force_choice`): softmax ≈ one-hot even at τ = 1.
FORCED_LOGIT = 20.0


def categorical_pair_indices(fmap: FeatureMap) -> list[tuple[int, int]]:
    """Index of each pair's two fields among ``fmap.categorical`` (the column order of ``batch.cat``)."""
    pos = {f.name: k for k, f in enumerate(fmap.categorical)}
    out = []
    for p in fmap.pairs:
        a, b = p.fields
        if a not in pos or b not in pos:
            raise ValueError(f"pair {p.name!r}: both fields must be categorical fields of the feature map")
        out.append((pos[a], pos[b]))
    return out


class _OptInterBase(CTRModel):
    """Shared parts: field embeddings e^o (B × F × s1) and the factorized-embedding source."""

    def __init__(self, fmap: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(fmap)
        self.cfg = cfg
        self.embed = FieldEmbedding.from_feature_map(fmap, cfg.embed_dim)
        self.pair_idx = categorical_pair_indices(fmap)
        self.fac_dim = cfg.embed_dim if cfg.factorize_source == "orig" else cfg.cross_embed_dim
        # Optional first-order term (model.first_order; not in the paper): logit += LR(x^o).
        self.linear = (
            FieldBias.from_feature_map(fmap) if cfg.first_order else None
        )

    def _logit(self, mlp_in: torch.Tensor, batch: Batch) -> torch.Tensor:
        """MLP(mlp_in) (B) plus the first-order term when ``model.first_order``."""
        out = self.mlp(mlp_in)
        return out + self.linear(batch.cat, batch.cont, batch.multi) if self.linear is not None else out

    def _factorizer(self, idx: list[int]) -> nn.Module | None:
        """Hadamard products for the pairs at positions ``idx`` (None if ``idx`` is empty)."""
        if not idx:
            return None
        pairs = [self.pair_idx[k] for k in idx]
        if self.cfg.factorize_source == "orig":
            return HadamardPairs(pairs)
        return FactorizationTable(
            [f.vocab_size for f in self.feature_map.categorical], self.cfg.cross_embed_dim, pairs, self.cfg.sparse_cross
        )

    def _factorized(self, fac: nn.Module, e_o: torch.Tensor, batch: Batch) -> torch.Tensor:
        """B × K × fac_dim."""
        if isinstance(fac, FactorizationTable):
            return fac(batch.cat)
        return fac(e_o[:, : self.embed.num_cat])

    def named_param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``orig``: e^o + MLP (lr_o, l2_o); ``cross``: cross-product and factorization tables (lr_c, l2_c); ``first``: the optional
        first-order weights (lr_first); ``arch``: α."""
        cross_mods = [m for m in self.modules() if isinstance(m, (MemorizedEmbedding, FactorizationTable))]
        cross = {id(p) for m in cross_mods for p in m.parameters()}
        arch = {id(p) for p in self.arch_parameters()}
        first = {id(p) for p in self.linear.parameters()} if self.linear is not None else set()
        groups: dict[str, list[nn.Parameter]] = {
            "orig": [p for p in self.parameters() if id(p) not in cross and id(p) not in arch and id(p) not in first],
            "cross": [p for m in cross_mods for p in m.parameters()],
        }
        if first:
            groups["first"] = list(self.linear.parameters())
        if arch:
            groups["arch"] = self.arch_parameters()
        return groups


class OptInterSearch(_OptInterBase):
    """Search-stage OptInter (Algorithm 1): e^b = combination of e^m, e^f, 0 for every pair.

    forward: batch (cat B × Fc, cont B × Fn, pairs B × P) → logits B.
    MLP input: F·s1 + P·W with W = max(s2, fac_dim) (see :mod:`optinter.layers.combination`).
    """

    uses_pairs = True

    def __init__(self, fmap: FeatureMap, cfg: ModelConfig) -> None:
        super().__init__(fmap, cfg)
        if fmap.num_pairs == 0:
            raise ValueError("OptInter search needs at least one pair in the feature map")
        self.cross = MemorizedEmbedding([p.vocab_size for p in fmap.pairs], cfg.cross_embed_dim, cfg.sparse_cross)
        self.factorize = self._factorizer(list(range(fmap.num_pairs)))
        # Seed of the Gumbel noise generator from the global RNG (deterministic after manual_seed).
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.block = CombinationBlock(
            fmap.num_pairs, cfg.cross_embed_dim, self.fac_dim, cfg.relaxation, tau=cfg.tau_start, seed=seed
        )
        in_dim = self.embed.num_fields * cfg.embed_dim + fmap.num_pairs * self.block.width
        self.mlp = MLP(in_dim, cfg.mlp_dims, layer_norm=cfg.layer_norm, dropout=cfg.dropout,
                       zero_output=cfg.zero_init_output)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._logit(self.mlp_input(batch), batch)

    def mlp_input(self, batch: Batch) -> torch.Tensor:
        """The MLP's input [e^o, e^b]: B × (F·s1 + P·W); pair k fills :meth:`pair_slot` (k)."""
        e_o = self.embed(batch.cat, batch.cont, batch.multi)  # B × F × s1
        e_m = self.cross(batch.pairs)  # B × P × s2
        # e^f (eq. 14) and the mixing (eq. 18) in one fused op: B × P × W
        if isinstance(self.factorize, FactorizationTable):
            fac_emb, had = self.factorize.table(batch.cat), self.factorize.hadamard  # B × Fc × s2
        else:
            fac_emb, had = e_o, self.factorize  # categorical fields come first in e^o
        return self.block.forward_factorized(e_m, fac_emb, had.left, had.right, prefix=e_o.flatten(1))

    def pair_slot(self, k: int) -> slice:
        """Columns of pair ``k``'s combined embedding e^b_k in :meth:`mlp_input` (width W)."""
        start = self.embed.num_fields * self.cfg.embed_dim + k * self.block.width
        return slice(start, start + self.block.width)

    def first_order_logit(self, batch: Batch) -> torch.Tensor | float:
        """The first-order term's logit (B), or 0.0 without ``model.first_order``."""
        return self.linear(batch.cat, batch.cont, batch.multi) if self.linear is not None else 0.0

    def force_choice(self, indices: list[int], choice: str) -> None:
        """Set α of the pairs at ``indices`` so that ``choice`` wins by a wide margin (used once the
        search is over, when a pair's choice is overruled, e.g. pruned on validation)."""
        col = CHOICES.index(choice)
        with torch.no_grad():
            for k in indices:
                row = torch.full((3,), -FORCED_LOGIT, dtype=self.block.alpha.dtype, device=self.block.alpha.device)
                row[col] = FORCED_LOGIT
                self.block.alpha[k] = row

    # ---- search-model protocol -------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.block.alpha]

    def set_temperature(self, tau: float) -> None:
        self.block.set_temperature(tau)

    def set_eval_weights(self, mode: str) -> None:
        """``"expected"`` (softmax(α/τ)) or ``"argmax"`` (one-hot, eq. 19) weights in eval mode."""
        self.block.set_eval_weights(mode)

    def derive_architecture(self) -> Architecture:
        arch = Architecture.from_probs(self.feature_map, self.block.probabilities().cpu().numpy(), model="optinter")
        arch.meta.update({"relaxation": self.cfg.relaxation, "factorize_source": self.cfg.factorize_source})
        return arch

    def extra_metrics(self) -> dict[str, Any]:
        return self.derive_architecture().count_dict()


class OptInterNet(_OptInterBase):
    """Re-trained OptInter with a fixed architecture (Algorithm 2, eq. 19).

    Memorized pairs: e^m from a table over those pairs only (B × M × s2); factorized pairs:
    Hadamard products (B × K × fac_dim); naive pairs: nothing. forward → logits B.
    MLP input: F·s1 + M·s2 + K·fac_dim.
    """

    def __init__(self, fmap: FeatureMap, cfg: ModelConfig, arch: Architecture) -> None:
        super().__init__(fmap, cfg)
        arch.validate(fmap)
        self.arch = arch
        self.mem_idx = arch.indices("memorize")
        self.fac_idx = arch.indices("factorize")
        self.uses_pairs = bool(self.mem_idx)
        self._mem_names = [fmap.pairs[k].name for k in self.mem_idx]
        self.cross = (
            MemorizedEmbedding([fmap.pairs[k].vocab_size for k in self.mem_idx], cfg.cross_embed_dim, cfg.sparse_cross)
            if self.mem_idx
            else None
        )
        self.factorize = self._factorizer(self.fac_idx)
        in_dim = (
            self.embed.num_fields * cfg.embed_dim
            + len(self.mem_idx) * cfg.cross_embed_dim
            + len(self.fac_idx) * self.fac_dim
        )
        self.mlp = MLP(in_dim, cfg.mlp_dims, layer_norm=cfg.layer_norm, dropout=cfg.dropout,
                       zero_output=cfg.zero_init_output)

    def required_pairs(self) -> list[str]:
        """Only the memorized pairs' columns (``batch.pairs`` is B × M)."""
        return list(self._mem_names)

    def forward(self, batch: Batch) -> torch.Tensor:
        e_o = self.embed(batch.cat, batch.cont, batch.multi)  # B × F × s1
        parts = [e_o.flatten(1)]
        if self.cross is not None:
            parts.append(self.cross(batch.pairs).flatten(1))  # B × M·s2
        if self.factorize is not None:
            parts.append(self._factorized(self.factorize, e_o, batch).flatten(1))  # B × K·fac_dim
        return self._logit(torch.cat(parts, dim=1), batch)

    def extra_metrics(self) -> dict[str, Any]:
        return self.arch.count_dict()


@register_search_model("optinter")
def optinter_search(fmap: FeatureMap, cfg: ModelConfig) -> OptInterSearch:
    return OptInterSearch(fmap, cfg)


@register_model("optinter", needs_arch=True)
def optinter(fmap: FeatureMap, cfg: ModelConfig, arch: Architecture) -> OptInterNet:
    return OptInterNet(fmap, cfg, arch)


@register_model("optinter_m")
def optinter_m(fmap: FeatureMap, cfg: ModelConfig) -> OptInterNet:
    return OptInterNet(fmap, cfg, Architecture.uniform(fmap, "memorize"))


@register_model("optinter_f")
def optinter_f(fmap: FeatureMap, cfg: ModelConfig) -> OptInterNet:
    return OptInterNet(fmap, cfg, Architecture.uniform(fmap, "factorize"))
