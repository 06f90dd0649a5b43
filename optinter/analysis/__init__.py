"""The ``analyze`` stage and its parts, one concern per module:

* :mod:`optinter.analysis.counts` — joint (id, label) counts of a split's columns, with Dask;
* :mod:`optinter.analysis.mi` — mutual information with the label (paper eq. 21) and the
  statistics over pairs;
* :mod:`optinter.analysis.figures` — the figures (Fig. 5, 6a, 6b, MI vs memorize probability);
* :mod:`optinter.analysis.stage` — :func:`run_analyze`: ``mi.csv``, figures and ``report.html``.
"""

from __future__ import annotations

from .counts import Counts, joint_counts
from .figures import METHOD_COLORS, plot_field_mi, plot_mi_by_method, plot_mi_heatmap, plot_mi_vs_memorize
from .mi import METHODS, mean_mi_by_method, mi_from_counts, mutual_information, spearman
from .stage import MI_CSV, MI_FIELDS_CSV, ArchInfo, load_arch_info, load_truth_pairs, run_analyze

__all__ = [
    "Counts", "joint_counts", "METHODS", "mi_from_counts", "mutual_information", "spearman", "mean_mi_by_method",
    "METHOD_COLORS", "plot_mi_heatmap", "plot_mi_by_method", "plot_mi_vs_memorize", "plot_field_mi",
    "MI_CSV", "MI_FIELDS_CSV", "ArchInfo", "load_arch_info", "load_truth_pairs", "run_analyze",
]
