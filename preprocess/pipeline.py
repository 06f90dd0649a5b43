"""``run_preprocess``: raw CTR logs → encoded parquet splits + ``feature_map.json`` on Dask.

The output folder (``cfg.out``) receives::

    feature_map.json            the contract read by the models (preprocess.feature_map)
    summary.json                rows read / rejected per reason / per split, vocab sizes, seconds per job
    {train,valid,test}/part-NNNNN.parquet   (multivalent fields: list<int32> columns)
    vocab/fields.json           OOVThresholder (kept values and counts per field)
    vocab/cross.json, .npz      CrossVocab (kept pair keys and counts)
    vocab/minmax.json           MinMaxScaler

Everything is written to a temporary folder beside ``out`` and renamed into place at the end, so a
failure never leaves a half-written ``out``.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from preprocess import jobs
from preprocess.atomic import atomic_output_dir
from preprocess.cluster import dask_client
from preprocess.cross_vocab import CrossVocab
from preprocess.encoder import CROSS_STEM, FIELDS_FILE, MINMAX_FILE, VOCAB_DIR
from preprocess.errors import BAD_REASONS, PreprocessError
from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo, fingerprint, pair_column
from preprocess.io import Block, decompress, expand_inputs, file_signature, is_gzip, plan_blocks, read_header
from preprocess.multivalent import resolve_max_len
from preprocess.oov import OOVThresholder
from preprocess.schema import CONTINUOUS_MODES, MAX_LEN_CAP, DatasetSchema, get_schema
from preprocess.split import SPLIT_NAMES, check_ratios

log = logging.getLogger(__name__)


@dataclass
class PreprocessConfig:
    """Settings of the preprocessing stage.

    Give either ``raw`` (files / globs split by ``ratios`` with ``seed``) or all of ``train``,
    ``valid``, ``test`` (pre-split files).  ``None`` thresholds / mode / cross fields take the
    schema's defaults.  ``field_thresholds`` / ``pair_thresholds`` override per field (``"C3"``)
    or per pair (``"C1|C2"``).
    """

    dataset: str = "criteo"
    out: str = "data/processed"
    raw: list[str] | None = None
    train: list[str] | None = None
    valid: list[str] | None = None
    test: list[str] | None = None
    oov_threshold: int | None = None
    cross_threshold: int | None = None
    field_thresholds: dict[str, int] = field(default_factory=dict)
    pair_thresholds: dict[str, int] = field(default_factory=dict)
    seed: int = 2026
    ratios: tuple[float, float, float] = (8.0, 1.0, 1.0)
    on_bad_rows: str = "error"
    scheduler: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    processes: bool = True
    blocksize: int = 32 * 1024 * 1024
    continuous_mode: str | None = None
    cross_fields: list[str] | None = None


def _as_list(v: Any) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, (str, Path)):
        return [str(v)]
    return [str(x) for x in v]


def _check_config(cfg: PreprocessConfig) -> None:
    if cfg.on_bad_rows not in ("error", "skip"):
        raise PreprocessError(f"parameter 'on_bad_rows' must be 'error' or 'skip', got {cfg.on_bad_rows!r}",
                              reason="settings")
    if cfg.continuous_mode is not None and cfg.continuous_mode not in CONTINUOUS_MODES:
        raise PreprocessError(f"parameter 'continuous_mode' must be one of {CONTINUOUS_MODES}, got "
                              f"{cfg.continuous_mode!r}", reason="settings")
    for key in ("oov_threshold", "cross_threshold"):
        v = getattr(cfg, key)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise PreprocessError(f"parameter {key!r} must be an integer >= 1, got {v!r}", reason="settings")
    for key, flag in (("field_thresholds", "--field-threshold"), ("pair_thresholds", "--pair-threshold")):
        given_map = getattr(cfg, key)
        if not isinstance(given_map, dict):
            raise PreprocessError(f"parameter {key!r} ({flag}) must be a mapping NAME -> N, got {given_map!r}",
                                  reason="settings")
        for name, v in given_map.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PreprocessError(f"parameter {key!r} ({flag} {name}={v}): the threshold must be an integer "
                                      f">= 1, got {v!r}", reason="settings")
    if cfg.blocksize < 1024:
        raise PreprocessError(f"parameter 'blocksize' must be >= 1024 bytes, got {cfg.blocksize}", reason="settings")
    check_ratios(cfg.ratios)
    given = [x is not None for x in (cfg.train, cfg.valid, cfg.test)]
    if cfg.raw is not None and any(given):
        raise PreprocessError("give either raw files (--raw) or pre-split files (--train/--valid/--test), not both",
                              reason="settings")
    if cfg.raw is None and not all(given):
        raise PreprocessError("give raw files (--raw PATH...) or all three of --train, --valid, --test",
                              reason="settings")


def check_threshold_names(cfg: PreprocessConfig, cat_fields: list[str], pairs: list[tuple[str, str]]) -> None:
    """Every per-field / per-pair threshold must name a field that gets a vocabulary / a pair that is crossed.

    Called once the schema is resolved against the files' columns (before any heavy work); an unknown
    name is an error naming the parameter, never silently ignored.
    """
    fields = set(cat_fields)
    for name in cfg.field_thresholds:
        if name not in fields:
            shown = ", ".join(cat_fields[:8]) + (", ..." if len(cat_fields) > 8 else "")
            raise PreprocessError(f"parameter 'field_thresholds' (--field-threshold {name}=...): {name!r} is not a "
                                  f"categorical field of this dataset (fields with a vocabulary: {shown})",
                                  reason="settings")
    names = [pair_column(a, b) for a, b in pairs]
    known = set(names)
    for name in cfg.pair_thresholds:
        if name in known:
            continue
        parts = name.split("|")
        hint = ""
        if len(parts) == 2 and pair_column(parts[1], parts[0]) in known:
            hint = f"; did you mean {pair_column(parts[1], parts[0])!r}?"
        elif len(parts) == 2:
            unknown = [f for f in parts if f not in fields]
            hint = f"; {', '.join(map(repr, unknown))} is not a categorical field" if unknown else \
                "; both fields exist but this pair is not crossed (see --cross-fields)"
        else:
            hint = "; a pair is written 'A|B'"
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise PreprocessError(f"parameter 'pair_thresholds' (--pair-threshold {name}=...): {name!r} is not a pair of "
                              f"this dataset{hint} (pairs: {shown or 'none'})", reason="settings")


def _check_names_early(cfg: PreprocessConfig, schema: DatasetSchema, first: Path) -> None:
    """Resolve the schema against the first file's columns (its header line, read through gzip where
    needed) and check the per-field / per-pair thresholds, before a cluster is started."""
    if not (cfg.field_thresholds or cfg.pair_thresholds):
        return
    if schema.header:
        opener = gzip.open if is_gzip(first) else open
        try:
            with opener(first, "rb") as fh:
                line = fh.readline()
        except (OSError, EOFError) as e:
            raise PreprocessError(f"cannot read the header line ({e})", file=str(first), reason="bad_file") from e
        columns = [c.strip() for c in line.decode("utf-8", errors="replace").rstrip("\r\n").split(schema.sep)]
    else:
        columns = list(schema.columns or [])
    rs = schema.resolve(columns, where=f"dataset {cfg.dataset!r}")
    check_threshold_names(cfg, rs.cat_fields, rs.pairs)


def effective_schema(cfg: PreprocessConfig) -> DatasetSchema:
    schema = get_schema(cfg.dataset)
    changes: dict[str, Any] = {}
    if cfg.continuous_mode is not None:
        changes["continuous_mode"] = cfg.continuous_mode
    if cfg.cross_fields is not None:
        changes["cross_fields"] = list(cfg.cross_fields)
    if cfg.oov_threshold is not None:
        changes["oov_threshold"] = cfg.oov_threshold
    if cfg.cross_threshold is not None:
        changes["cross_threshold"] = cfg.cross_threshold
    return dataclasses.replace(schema, **changes) if changes else schema


def run_preprocess(cfg: PreprocessConfig) -> dict[str, Any]:
    """Run the whole stage; returns the summary (also written to ``<out>/summary.json``)."""
    t_start = time.perf_counter()
    _check_config(cfg)
    schema = effective_schema(cfg)
    if cfg.raw is not None:
        groups = [(None, expand_inputs(_as_list(cfg.raw) or [], "--raw"))]
    else:
        groups = [(i, expand_inputs(_as_list(getattr(cfg, s)) or [], f"--{s}")) for i, s in enumerate(SPLIT_NAMES)]
    inputs: list[tuple[int | None, Path]] = [(sp, p) for sp, files in groups for p in files]
    for _, p in inputs:
        if p.stat().st_size == 0:
            raise PreprocessError("empty file", file=str(p), reason="empty_file")
    _check_names_early(cfg, schema, inputs[0][1])
    out = Path(cfg.out).resolve()
    seconds: dict[str, float] = {}
    with atomic_output_dir(out) as tmp:
        work = tmp / "_work"
        (work / "raw").mkdir(parents=True)
        with dask_client(cfg.scheduler, cfg.n_workers, cfg.threads_per_worker, cfg.processes) as client:
            summary = _run(cfg, schema, inputs, client, tmp, work, seconds)
        shutil.rmtree(work, ignore_errors=True)
        seconds["total"] = round(time.perf_counter() - t_start, 3)
        summary["seconds"] = seconds
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    summary["out"] = str(out)
    log.info("preprocess done in %.1fs: %s rows -> %s", seconds["total"],
             {s: summary["rows"][s] for s in SPLIT_NAMES}, out)
    return summary


def _drop_scratch(path: Path) -> None:
    """Remove a scratch folder as soon as no later job reads it: the stage's peak disk use is then the
    largest set of folders alive at once (at full size the cross count tables alone are tens of GB)."""
    shutil.rmtree(path, ignore_errors=True)


def _timed(seconds: dict[str, float], name: str, t0: float) -> float:
    t1 = time.perf_counter()
    seconds[name] = round(seconds.get(name, 0.0) + t1 - t0, 3)
    return t1


def _run(cfg: PreprocessConfig, schema: DatasetSchema, inputs: list[tuple[int | None, Path]], client: Any,
         tmp: Path, work: Path, seconds: dict[str, float]) -> dict[str, Any]:
    t0 = time.perf_counter()
    # -- gzip → scratch plain files (in parallel) ------------------------------------------------------
    gz = [i for i, (_, p) in enumerate(inputs) if is_gzip(p)]
    plain = {i: str(p) for i, (_, p) in enumerate(inputs)}
    if gz:
        futs = [client.submit(decompress, str(inputs[i][1]), str(work / "raw" / f"{i:04d}.txt"), pure=False) for i in gz]
        for i, path in zip(gz, client.gather(futs)):
            plain[i] = path
    t0 = _timed(seconds, "decompress", t0)
    # -- header / schema resolution, block plan ------------------------------------------------------------
    header_cols: list[str] | None = None
    first_byte: dict[int, int] = {}
    for i, (_, p) in enumerate(inputs):
        if schema.header:
            cols, nbytes = read_header(plain[i], schema.sep, shown=str(p))
            if header_cols is None:
                header_cols = cols
            elif cols != header_cols:
                raise PreprocessError(f"header {cols} differs from the first file's header {header_cols}",
                                      file=str(p), line=1, reason="schema")
            first_byte[i] = nbytes
        else:
            first_byte[i] = 0
    columns = header_cols if schema.header else list(schema.columns or [])
    rs = schema.resolve(columns, where=f"dataset {cfg.dataset!r}")
    blocks: list[Block] = []
    for i, (sp, p) in enumerate(inputs):
        size = os.path.getsize(plain[i])
        if size <= first_byte[i]:
            raise PreprocessError("empty file (no data rows)", file=str(p), reason="empty_file")
        for a, b in plan_blocks(plain[i], size, first_byte[i], cfg.blocksize):
            blocks.append(Block(len(blocks), i, plain[i], str(p), a, b, sp))
    derived = {d.name: d.fn for d in schema.derived}
    keep = [c for c in columns if c in rs.categorical or c in {d.source for d in schema.derived}]
    pairs = rs.pairs
    spec: dict[str, Any] = {
        "work": str(work), "tmp_out": str(tmp), "columns": columns, "sep": schema.sep, "label": rs.label,
        "keep": keep, "continuous": rs.continuous, "fields": rs.fields, "derived": derived,
        "cat_fields": rs.cat_fields, "cont_fields": rs.cont_fields, "cross_fields": rs.cross_fields,
        "pairs": pairs, "seed": cfg.seed, "ratios": check_ratios(cfg.ratios), "on_bad_rows": cfg.on_bad_rows,
        "n_workers": cfg.n_workers, "multivalent": dict(rs.multivalent),
    }
    log.info("%d input file(s), %d partitions, %d fields (%d categorical), %d pairs", len(inputs), len(blocks),
             len(rs.fields), len(rs.cat_fields), len(pairs))
    t0 = _timed(seconds, "plan", t0)
    # -- 1+2. ingest + split --------------------------------------------------------------------------------
    results = jobs.ingest(client, blocks, spec)
    rows_read = sum(r["n_lines"] for r in results)
    rejected = {k: sum(r["bad_counts"].get(k, 0) for r in results) for k in BAD_REASONS}
    if cfg.on_bad_rows == "error":
        jobs.raise_first_bad(results, blocks, {i: (1 if schema.header else 0) for i in range(len(inputs))})
    rows = {s: sum(r["rows"][k] for r in results) for k, s in enumerate(SPLIT_NAMES)}
    positives = {s: sum(r["positives"][k] for r in results) for k, s in enumerate(SPLIT_NAMES)}
    for s in SPLIT_NAMES:
        if rows[s] == 0:
            raise PreprocessError(f"split {s!r} has no rows (rows read {rows_read}, rejected {rejected})",
                                  reason="empty_split")
    t0 = _timed(seconds, "ingest", t0)
    log.info("ingest: %d rows read, %d rejected %s, rows per split %s (%.1fs)", rows_read, sum(rejected.values()),
             rejected, rows, seconds["ingest"])
    multi_stats = _multivalent_stats(rs.multivalent, rs.max_len, results)
    spec["max_len"] = {name: st["max_len"] for name, st in multi_stats.items()}
    # -- 3. OOV / 4. min-max --------------------------------------------------------------------------------------
    oov = OOVThresholder(schema.oov_threshold, cfg.field_thresholds)
    jobs.fit_oov(client, spec, oov)
    oov.save(work / "oov.json")
    _drop_scratch(work / "counts")
    t0 = _timed(seconds, "fit_oov", t0)
    log.info("OOV vocabularies: %s", {f: oov.vocab_size(f) for f in rs.cat_fields})
    mm = jobs.fit_minmax(results, rs.cont_fields)
    mm.save(work / "minmax.json")
    t0 = _timed(seconds, "fit_minmax", t0)
    # -- 5. field encoding + cross vocabulary ------------------------------------------------------------------------
    parts = [(s, r["index"]) for k, s in enumerate(SPLIT_NAMES) for r in results if r["rows"][k]]
    spec["cross_buckets"] = jobs.plan_cross_buckets(spec, oov, [r["rows"][0] for r in results if r["rows"][0]])
    jobs.encode_fields(client, spec, parts)
    _drop_scratch(work / "typed")
    t0 = _timed(seconds, "encode_fields", t0)
    cv = CrossVocab(schema.cross_threshold, cfg.pair_thresholds)
    jobs.fit_cross(client, spec, oov, cv)
    cv.save(work / "cross")
    # the workers read the vocabulary from disk; this process keeps only the sizes (the kept keys and counts
    # of every pair are the largest state of the stage at full size: not held here while the pairs are encoded)
    cross_sizes = {n: cv.vocab_size(n) for n in cv.keys_}
    cv.keys_, cv.counts_ = {}, {}
    _drop_scratch(work / "xcounts")
    t0 = _timed(seconds, "fit_cross", t0)
    # -- 6. final encoding --------------------------------------------------------------------------------------------
    final: list[tuple[str, int, int]] = []
    for k, s in enumerate(SPLIT_NAMES):
        idx = [r["index"] for r in results if r["rows"][k]]
        final += [(s, b, j) for j, b in enumerate(idx)]
    jobs.encode_pairs(client, spec, final)
    _drop_scratch(work / "enc")
    t0 = _timed(seconds, "encode_pairs", t0)
    # -- 7. feature map, vocabularies, summary ------------------------------------------------------------------------
    (tmp / VOCAB_DIR).mkdir()
    oov.save(tmp / VOCAB_DIR / FIELDS_FILE)
    for suffix in (".json", ".npz"):  # the saved vocabulary, byte for byte
        shutil.copyfile((work / "cross").with_suffix(suffix), (tmp / VOCAB_DIR / CROSS_STEM).with_suffix(suffix))
    mm.save(tmp / VOCAB_DIR / MINMAX_FILE)
    fields = []
    for name, kind, source, bucketized in rs.fields:
        if name in rs.multivalent:
            fields.append(FieldSpec(name=name, kind=kind, column=name, source=source, vocab_size=oov.vocab_size(name),
                                    oov_threshold=oov.thresholds_[name], multivalent=True,
                                    max_len=spec["max_len"][name]))
        elif kind == "categorical":
            fields.append(FieldSpec(name=name, kind=kind, column=name, source=source, vocab_size=oov.vocab_size(name),
                                    oov_threshold=oov.thresholds_[name], bucketized=bucketized))
        else:
            fields.append(FieldSpec(name=name, kind=kind, column=name, source=source, min=mm.min_[name],
                                    max=mm.max_[name], missing_train=int(mm.missing_.get(name, 0))))
    pair_specs = [PairSpec(name=pair_column(a, b), fields=(a, b), column=pair_column(a, b),
                           vocab_size=cross_sizes[pair_column(a, b)], threshold=cv.thresholds_[pair_column(a, b)],
                           distinct_train=cv.distinct_[pair_column(a, b)]) for a, b in pairs]
    settings = {"oov_threshold": schema.oov_threshold, "cross_threshold": schema.cross_threshold,
                "field_thresholds": dict(cfg.field_thresholds), "pair_thresholds": dict(cfg.pair_thresholds),
                "seed": cfg.seed, "ratios": list(check_ratios(cfg.ratios)) if cfg.raw is not None else None,
                "split_mode": "hash" if cfg.raw is not None else "files", "on_bad_rows": cfg.on_bad_rows,
                "continuous_mode": schema.continuous_mode, "cross_fields": rs.cross_fields,
                "missing_continuous_value": mm.missing_value}
    input_sigs = [{"split": SPLIT_NAMES[sp] if sp is not None else "raw", **file_signature(p)} for sp, p in inputs]
    content_hash = fingerprint([input_sigs, settings, schema.to_dict()])
    fmap = FeatureMap(dataset=schema.name, label=rs.label, fields=fields, pairs=pair_specs,
                      splits={s: SplitInfo(rows=rows[s], positives=positives[s], path=s) for s in SPLIT_NAMES},
                      schema=schema.to_dict(), settings={**settings, "inputs": input_sigs}, content_hash=content_hash)
    fmap.save(tmp / "feature_map.json")
    _timed(seconds, "write_feature_map", t0)
    summary = {
        "dataset": schema.name, "rows_read": rows_read, "rows_rejected": rejected, "rows": rows,
        "positives": positives, "partitions": len(blocks), "n_fields": len(fields), "n_pairs": len(pair_specs),
        "vocab_sizes": {f: oov.vocab_size(f) for f in rs.cat_fields},
        "pair_vocab_sizes": {p.name: p.vocab_size for p in pair_specs}, "content_hash": content_hash,
    }
    if multi_stats:
        summary["multivalent"] = multi_stats
    return summary


def _multivalent_stats(multivalent: dict[str, str], configured: dict[str, int | None],
                       results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per multivalent field: ``max_len`` (configured, or from train capped at MAX_LEN_CAP) and train
    figures (most / mean distinct tokens of a row, rows without tokens, rows truncated)."""
    out: dict[str, dict[str, Any]] = {}
    for name, sep in multivalent.items():
        hist = np.zeros(1, dtype=np.int64)
        for r in results:
            h = np.asarray(r.get("multi_hist", {}).get(name, []), dtype=np.int64)
            hist = np.pad(hist, (0, max(0, len(h) - len(hist))))
            hist[: len(h)] += h
        max_len = resolve_max_len(configured.get(name), hist, MAX_LEN_CAP)
        n = int(hist.sum())
        st = {"separator": sep, "max_len": max_len, "max_tokens_train": int(np.flatnonzero(hist)[-1]) if n else 0,
              "mean_tokens_train": round(float(np.arange(len(hist)) @ hist) / n, 4) if n else 0.0,
              "empty_rows_train": int(hist[0]), "truncated_rows_train": int(hist[max_len + 1:].sum())}
        if st["truncated_rows_train"]:
            log.warning("multivalent field %r: %d train rows have more than max_len=%d tokens (max %d); their first "
                        "%d tokens are kept", name, st["truncated_rows_train"], max_len, st["max_tokens_train"],
                        max_len)
        log.info("multivalent field %r: %s", name, st)
        out[name] = st
    return out
