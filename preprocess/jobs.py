"""The Dask jobs of the preprocessing stage, each a plain function of a ``distributed.Client``.

Every job maps a small, top-level task function over partitions (line-aligned blocks of the raw
files, then the scratch parts they produced); rows never travel through the scheduler: each task
reads its partition from disk, works on it with numpy / pyarrow and writes its result back to the
scratch folder, returning only small statistics.  Counting is per partition (value → count tables,
cross key → count tables written as flat binary files, grouped by key range) and reduced per field /
per (pair, key range), reading only the slices a task needs, so memory depends on the partition
size, :data:`SLOT_ENTRIES` and the vocabulary sizes, not on the number of rows.

1. :func:`ingest`      raw text → typed Arrow IPC (scratch) per split (bad-row checks, the seeded split,
                        bucketized / derived fields, train value counts — token counts and the
                        tokens-per-row histogram for multivalent fields — and min/max statistics)
2. split               done inside ingest by :func:`preprocess.split.assign_split`
3. :func:`fit_oov`     per-field reduce of the count tables → :class:`OOVThresholder`
4. :func:`fit_minmax`  reduce of the min/max statistics → :class:`MinMaxScaler`
5. :func:`encode_fields` + :func:`fit_cross` field ids per split, cross counts on train →
                        :class:`CrossVocab`
6. :func:`encode_pairs` final parquet: field ids (``list<int32>`` for multivalent fields, see
                        :mod:`preprocess.multivalent`), pair ids, continuous values, label

What happens to a row in 1, 5 and 6 is :mod:`preprocess.encoder` (field columns, field ids, pair
ids): the same functions encode new raw rows at scoring time.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from preprocess.cross_vocab import CrossVocab, bucket_width, count_pair, merge_buckets, reduce_pair, split_buckets
from preprocess.encoder import encode_field_columns, field_columns, pair_columns
from preprocess.errors import PreprocessError
from preprocess.feature_map import pair_column
from preprocess.io import Block, parse_block, read_range
from preprocess.minmax import MinMaxScaler
from preprocess.multivalent import count_tokens
from preprocess.oov import OOVThresholder, count_values, reduce_counts
from preprocess.split import SPLIT_NAMES, assign_split

log = logging.getLogger(__name__)
MAX_BAD_EXAMPLES = 20
#: Target number of count-table entries (over all train partitions) reduced at once by one task: a pair
#: whose tables may hold more is reduced in ``ceil(bound / SLOT_ENTRIES)`` key ranges (about 12 bytes
#: an entry on disk, ~5x that while reducing).
SLOT_ENTRIES = 1 << 20
#: Most count-table entries one reduce task reads at once: neighbouring key ranges are read together, one
#: read per train part and file for up to this many entries (12 bytes each: ~48 MiB).
READ_ENTRIES = 4 * SLOT_ENTRIES


def run_tasks(client: Any, fn: Callable, items: list, what: str, count: Callable[[Any], int] | None = None,
              **kwargs: Any) -> list:
    """Map ``fn`` over ``items`` on the cluster, log progress, return results in item order.

    ``client=None`` runs the items one after the other in this process (same progress log).
    ``count(result)``: rows of a result, added to the progress line (``N rows, R rows/s``).
    """
    t0 = time.perf_counter()
    call = functools.partial(fn, **kwargs) if kwargs else fn
    out: list = [None] * len(items)
    step = max(1, len(items) // 10)
    rows = 0

    def progress(done: int, result: Any) -> None:
        nonlocal rows
        rows += count(result) if count is not None else 0
        if done % step == 0 or done == len(items):
            dt = time.perf_counter() - t0
            extra = f", {rows:,} rows, {rows / dt:,.0f} rows/s" if count is not None and dt > 0 else ""
            log.info("%s: %d/%d partitions (%.1fs%s)", what, done, len(items), dt, extra)

    if client is None:
        for i, item in enumerate(items):
            out[i] = call(item)
            progress(i + 1, out[i])
        return out
    from distributed import as_completed

    futs: list = client.map(call, items, pure=False)
    pos = {f.key: i for i, f in enumerate(futs)}
    done = 0
    try:
        for fut in as_completed(futs):
            i = pos[fut.key]
            out[i] = fut.result()
            futs[i] = None  # the last reference: the worker drops its copy of the result now, not at the job's end
            del fut
            done += 1
            progress(done, out[i])
    except BaseException:
        client.cancel([f for f in futs if f is not None])
        raise
    return out


def _trim_heap() -> None:
    """Hand the free heap back to the OS (glibc ``malloc_trim``) after a task whose transient arrays are large
    and of varying sizes (the cross reduce): the workers keep freed buffers in the heap between tasks
    (:data:`preprocess.cluster.QUIET_CONFIG`), which must not let fragmentation grow with the number of slots."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# ---- 1. ingest ------------------------------------------------------------------------------------
def ingest_block(block: Block, spec: dict[str, Any]) -> dict[str, Any]:
    """Task: parse one block, split its rows, write typed Arrow IPC per split and train statistics."""
    data = read_range(block.path, block.start, block.end)
    parsed = parse_block(data, spec["columns"], spec["sep"], spec["label"], spec["keep"], spec["continuous"])
    bad = parsed["bad"]
    res: dict[str, Any] = {"index": block.index, "n_lines": parsed["n_lines"],
                           "bad_counts": dict(Counter(r for _, r, _ in bad)), "bad": bad[:MAX_BAD_EXAMPLES],
                           "rows": [0, 0, 0], "positives": [0, 0, 0], "minmax": None, "multi_hist": {}}
    if bad and spec["on_bad_rows"] == "error":
        return res
    t = parsed["table"]
    n = t.num_rows
    if block.split is None:
        sp = assign_split(spec["seed"], block.file_index, parsed["offsets"] + block.start, spec["ratios"])
    else:
        sp = np.full(n, block.split, dtype=np.int8)
    cols: dict[str, Any] = {spec["label"]: t[spec["label"]]}
    cols.update(field_columns(t, spec["fields"], spec["derived"]))
    typed = pa.table(cols)
    work = Path(spec["work"])
    label_np = t[spec["label"]].to_numpy()
    for s, sname in enumerate(SPLIT_NAMES):
        mask = sp == s
        k = int(mask.sum())
        if not k:
            continue
        sub = typed.filter(pa.array(mask)) if k < n else typed
        feather.write_feather(sub, work / "typed" / sname / f"b{block.index:05d}.arrow", compression="uncompressed")
        res["rows"][s] = k
        res["positives"][s] = int(label_np[mask].sum())
        if s == 0:
            multi = spec.get("multivalent", {})
            for fi, name in enumerate(spec["cat_fields"]):
                if name in multi:
                    counts, hist = count_tokens(sub[name], multi[name])
                    res["multi_hist"][name] = hist.tolist()
                else:
                    counts = count_values(sub[name])
                feather.write_feather(counts, work / "counts" / f"f{fi:03d}" / f"b{block.index:05d}.arrow",
                                      compression="uncompressed")
            res["minmax"] = MinMaxScaler.partial_stats({f: sub[f].to_numpy() for f in spec["cont_fields"]})
    return res


def ingest(client: Any, blocks: list[Block], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Job 1 (+2): every block → ``typed/{split}/bNNNNN.arrow``; returns per-block statistics."""
    work = Path(spec["work"])
    for s in SPLIT_NAMES:
        (work / "typed" / s).mkdir(parents=True, exist_ok=True)
    for fi in range(len(spec["cat_fields"])):
        (work / "counts" / f"f{fi:03d}").mkdir(parents=True, exist_ok=True)
    return run_tasks(client, ingest_block, blocks, "ingest", spec=spec)


# ---- 3. OOV ---------------------------------------------------------------------------------------
def reduce_field(item: tuple[str, int]) -> dict[str, Any]:
    """Task: sum one field's count tables (``(folder, threshold)``) over all train blocks, apply the threshold."""
    field_dir, threshold = item
    parts = [feather.read_table(p) for p in sorted(Path(field_dir).glob("b*.arrow"))]
    return reduce_counts(parts, threshold)


def fit_oov(client: Any, spec: dict[str, Any], oov: OOVThresholder) -> OOVThresholder:
    """Job 3: per-field vocabularies fitted on train."""
    work = Path(spec["work"])
    names = spec["cat_fields"]
    dirs = [str(work / "counts" / f"f{fi:03d}") for fi in range(len(names))]
    res = run_tasks(client, reduce_field, list(zip(dirs, [oov.threshold_for(n) for n in names])), "OOV vocabulary")
    for n, r in zip(names, res):
        oov.set_field(n, r)
    return oov


# ---- 4. min-max -----------------------------------------------------------------------------------
def fit_minmax(results: list[dict[str, Any]], cont_fields: list[str]) -> MinMaxScaler:
    parts = [r["minmax"] for r in results if r.get("minmax")]
    sc = MinMaxScaler().fit_stats(parts)
    for f in cont_fields:
        sc.min_.setdefault(f, 0.0)
        sc.max_.setdefault(f, 0.0)
        sc.missing_.setdefault(f, 0)
    return sc


# ---- 5. field encoding + cross vocabulary ------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_oov(path: str) -> OOVThresholder:
    return OOVThresholder.load(path)


@functools.lru_cache(maxsize=4)
def _load_minmax(path: str) -> MinMaxScaler:
    return MinMaxScaler.load(path)


@functools.lru_cache(maxsize=2)
def _load_cross(path: str) -> CrossVocab:
    """The cross vocabulary as encoding needs it: kept keys only (the counts are dropped)."""
    cv = CrossVocab.load(path)
    cv.counts_ = {}
    return cv


def plan_cross_buckets(spec: dict[str, Any], oov: OOVThresholder,
                       train_rows: list[int]) -> list[tuple[int, int, int]]:
    """``(n_buckets, width, bound)`` per pair: key ranges so that one range's tables hold <= ~SLOT_ENTRIES entries.

    A partition's table of a pair has at most ``min(rows, vocab_a * vocab_b)`` entries, so the bound
    (and the plan) depends only on the vocabulary sizes and the train partition sizes.
    """
    out = []
    for a, b in spec["pairs"]:
        space = oov.vocab_size(a) * oov.vocab_size(b)
        bound = sum(min(r, space) for r in train_rows)
        n = max(1, min(-(-bound // SLOT_ENTRIES), space))
        out.append((n, bucket_width(space, n), bound))
    return out


def _slot_bases(buckets: list[tuple[int, int, int]]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([n for n, _, _ in buckets])]).astype(np.int64)


def encode_fields_part(item: tuple[str, int], spec: dict[str, Any]) -> dict[str, Any]:
    """Task: typed part → field ids / scaled values (``enc/``); on train also cross count tables.

    Multivalent fields (``spec["multivalent"]``: name → token separator) become ``list<int32>``
    columns truncated to ``spec["max_len"][name]``.

    The count tables of a train part go to ``xcounts/bNNNNN.{keys,counts,offs}``: int64 keys and
    int32 counts of every (pair, key range) slot one after the other, ``offs`` the int64 slot starts.
    """
    sname, idx = item
    work = Path(spec["work"])
    t = feather.read_table(work / "typed" / sname / f"b{idx:05d}.arrow", memory_map=True)
    oov = _load_oov(str(work / "oov.json"))
    mm = _load_minmax(str(work / "minmax.json"))
    cols: dict[str, Any] = {spec["label"]: pa.array(t[spec["label"]].to_numpy().astype(np.float32))}
    fcols, ids = encode_field_columns(t, spec["fields"], spec.get("multivalent", {}), spec.get("max_len", {}), oov, mm)
    cols.update(fcols)
    del fcols
    n_rows = t.num_rows
    del t
    feather.write_feather(pa.table(cols), work / "enc" / sname / f"b{idx:05d}.arrow", compression="uncompressed")
    del cols
    if sname == "train" and spec["pairs"]:
        d = work / "xcounts"
        offs = [0]
        with open(d / f"b{idx:05d}.keys", "wb") as fk, open(d / f"b{idx:05d}.counts", "wb") as fc:
            for (a, b), (nb, width, _) in zip(spec["pairs"], spec["cross_buckets"]):
                k, c = count_pair(ids[a], ids[b], oov.vocab_size(a), oov.vocab_size(b))
                k, c, sizes = split_buckets(k, c, width, nb)
                k.tofile(fk)
                c.tofile(fc)
                offs.extend((offs[-1] + np.cumsum(sizes)).tolist())
        np.asarray(offs, dtype=np.int64).tofile(d / f"b{idx:05d}.offs")
    return {"rows": n_rows}


def encode_fields(client: Any, spec: dict[str, Any], parts: list[tuple[str, int]]) -> None:
    """Job 5a: field ids for every split; cross count tables of the train parts.

    ``spec["cross_buckets"]`` (from :func:`plan_cross_buckets`) must be set when there are pairs.
    """
    work = Path(spec["work"])
    for s in SPLIT_NAMES:
        (work / "enc" / s).mkdir(parents=True, exist_ok=True)
    (work / "xcounts").mkdir(parents=True, exist_ok=True)
    run_tasks(client, encode_fields_part, parts, "encode fields + count crosses", spec=spec)


def _read_slice(path: Path, dtype: Any, start: int, stop: int) -> np.ndarray:
    """Elements ``[start, stop)`` of a flat binary file (read, not memory-mapped: memory stays the slice)."""
    itemsize = np.dtype(dtype).itemsize
    return np.fromfile(path, dtype=dtype, count=stop - start, offset=start * itemsize)


def _slot_runs(group: list[tuple[int, int]], offs: list[np.ndarray]) -> list[list[tuple[int, int]]]:
    """Split ``group`` into runs of consecutive slots whose tables (over all parts) hold <= READ_ENTRIES.

    One run is read with one read per part and file instead of one per slot: the number of reads then
    stays ~ entries / READ_ENTRIES × parts instead of slots × parts (both factors grow with the rows).
    """
    sizes = np.diff(np.stack(offs), axis=1).sum(axis=0) if offs else None
    runs: list[list[tuple[int, int]]] = []
    size = 0
    for pi, slot in group:
        n = int(sizes[slot]) if sizes is not None else 0
        if runs and runs[-1][-1][1] + 1 == slot and size + n <= READ_ENTRIES:
            runs[-1].append((pi, slot))
            size += n
        else:
            runs.append([(pi, slot)])
            size = n
    return runs


def reduce_slots(group: list[tuple[int, int]], spec: dict[str, Any], thresholds: list[int]) -> list[dict[str, Any]]:
    """Task: reduce the count tables of a group of ``(pair, slot)`` key ranges, one range at a time.

    Consecutive slots are read together (:func:`_slot_runs`): a run's tables (<= READ_ENTRIES entries,
    12 bytes each) are in memory at once, then each slot of it is reduced from views into them.
    """
    d = Path(spec["work"]) / "xcounts"
    blocks = sorted(p.name[:-5] for p in d.glob("b*.offs"))
    offs = [np.fromfile(d / f"{b}.offs", dtype=np.int64) for b in blocks]
    bases = _slot_bases(spec["cross_buckets"])
    out = []
    for run in _slot_runs(sorted(group, key=lambda x: x[1]), offs):
        first, last = run[0][1], run[-1][1]
        tables = [(o, _read_slice(d / f"{b}.keys", np.int64, o[first], o[last + 1]),
                   _read_slice(d / f"{b}.counts", np.int32, o[first], o[last + 1])) for b, o in zip(blocks, offs)]
        for pi, slot in run:
            parts = [(k[o[slot] - o[first]:o[slot + 1] - o[first]], c[o[slot] - o[first]:o[slot + 1] - o[first]])
                     for o, k, c in tables]
            width = spec["cross_buckets"][pi][1]
            lo = (slot - int(bases[pi])) * width
            r = reduce_pair(parts, thresholds[pi], key_range=(lo, lo + width))
            del parts
            r["pair"], r["slot"] = pi, slot
            out.append(r)
        del tables
    _trim_heap()
    return out


def group_slots(buckets: list[tuple[int, int, int]], n_groups: int) -> list[list[tuple[int, int]]]:
    """The ``(pair, slot)`` key ranges in slot order, cut into <= ``n_groups`` contiguous groups of about
    equal weight (each slot's share of its pair's size bound, + a fixed cost per slot).

    Contiguous groups let a task read runs of neighbouring slots at once (:func:`reduce_slots`).
    """
    bases = _slot_bases(buckets)
    slots = [(pi, int(bases[pi]) + r) for pi in range(len(buckets)) for r in range(buckets[pi][0])]
    if not slots:
        return []
    weight = [buckets[pi][2] // buckets[pi][0] + 1000 for pi, _ in slots]
    n_groups = min(len(slots), max(1, n_groups))
    total = sum(weight)
    groups: list[list[tuple[int, int]]] = [[]]
    acc = 0
    for (pi, s), w in zip(slots, weight):
        if groups[-1] and acc >= total * len(groups) / n_groups and len(groups) < n_groups:
            groups.append([])
        groups[-1].append((pi, s))
        acc += w
    return groups


def fit_cross(client: Any, spec: dict[str, Any], oov: OOVThresholder, cv: CrossVocab) -> CrossVocab:
    """Job 5b: cross vocabulary of every pair from the train count tables (per pair and key range)."""
    pairs = spec["pairs"]
    if not pairs:
        cv._init_state()
        return cv
    names = [pair_column(a, b) for a, b in pairs]
    thresholds = [cv.threshold_for(n) for n in names]
    groups = group_slots(spec["cross_buckets"], 4 * spec.get("n_workers", 2))
    res = run_tasks(client, reduce_slots, groups, "cross vocabulary", spec=spec, thresholds=thresholds)
    cv._init_state()
    per_pair: dict[int, list[dict[str, Any]]] = {}
    for grp in res:
        for r in grp:
            per_pair.setdefault(r["pair"], []).append(r)
    for pi, (a, b) in enumerate(pairs):
        cv.set_pair(names[pi], oov.vocab_size(b), merge_buckets(sorted(per_pair[pi], key=lambda r: r["slot"])))
    return cv


# ---- 6. final encoding ----------------------------------------------------------------------------
def encode_pairs_part(item: tuple[str, int, int], spec: dict[str, Any]) -> dict[str, Any]:
    """Task: enc part + pair ids → ``<tmp_out>/{split}/part-NNNNN.parquet``."""
    sname, idx, k = item
    work = Path(spec["work"])
    t = feather.read_table(work / "enc" / sname / f"b{idx:05d}.arrow", memory_map=True)
    ids: dict[str, np.ndarray] = {}
    if spec["pairs"]:
        cv = _load_cross(str(work / "cross"))
        ids = {f: t[f].to_numpy() for f in spec["cross_fields"]}
        for name, arr in pair_columns(ids, spec["pairs"], cv).items():
            t = t.append_column(name, pa.array(arr))
    pq.write_table(t, Path(spec["tmp_out"]) / sname / f"part-{k:05d}.parquet", compression="snappy")
    n = t.num_rows
    del t, ids  # the part's Arrow buffers stay in the pool for the next task (re-faulting them cost more)
    return {"rows": n}


def encode_pairs(client: Any, spec: dict[str, Any], parts: list[tuple[str, int, int]]) -> None:
    for s in SPLIT_NAMES:
        (Path(spec["tmp_out"]) / s).mkdir(parents=True, exist_ok=True)
    run_tasks(client, encode_pairs_part, parts, "encode pairs + write", spec=spec)


def raise_first_bad(results: list[dict[str, Any]], blocks: list[Block], header_lines: dict[int, int]) -> None:
    """In ``on_bad_rows="error"`` mode: raise for the first bad row in input order, with its line."""
    lines_before: dict[int, int] = {}
    for blk, r in zip(blocks, results):
        base = lines_before.get(blk.file_index, header_lines.get(blk.file_index, 0))
        if r["bad"]:
            local, reason, detail = r["bad"][0]
            total = sum(sum(x["bad_counts"].values()) for x in results)
            more = f" ({total - 1} more bad rows; use --on-bad-rows skip to drop them)" if total > 1 else \
                " (use --on-bad-rows skip to drop such rows)"
            raise PreprocessError(detail + more, file=blk.shown, line=base + local + 1, reason=reason)
        lines_before[blk.file_index] = base + r["n_lines"]
