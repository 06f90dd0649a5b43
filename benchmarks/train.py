"""Training speed and memory of OptInter's search and re-train steps beside DeepFM.

    python benchmarks/train.py [--device auto|cpu|cuda] [--steps 20] [--threads 2] [--repeat 1]
                               [--models search,retrain,deepfm,optinter_f] [--pair-vocab 20000]
                               [--loader-rows 600000] [--loader-epochs 3] [--loader-only]

Criteo-shaped random data: 39 fields (13 continuous + 26 categorical), 325 pairs, batch 2000,
Table IV dimensions for Criteo (s1=20, s2=10, MLP 700×5, LayerNorm). Categorical vocabularies are
drawn log-uniformly in [4, 60 000] (seeded), each pair's vocabulary is min(v_a·v_b, --pair-vocab);
ids are uniform. Each model runs in its own child process, so the peak RSS printed is that
model's. ``retrain`` uses a random architecture (≈ 1/3 memorize / factorize / naive, like
Table VI's [117, 98, 110] on Criteo). A step = forward + backward + optimizer steps (search: Θ
and α together, Algorithm 1). The last lines give search/DeepFM and re-train/DeepFM step-time
ratios (median step time; best of ``--repeat`` runs per model), and the parquet loader's rows/s on Criteo-shaped files (all pair columns, a re-train's memorized
ones, none; first epoch and steady state; ``--loader-only`` for just that).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]  # benchmarks/preprocess.py shadows preprocess

import numpy as np  # noqa: E402
import torch  # noqa: E402

from preprocess.feature_map import FeatureMap, FieldSpec, PairSpec, SplitInfo, pair_column  # noqa: E402

N_CONT, N_CAT = 13, 26


def criteo_like_map(pair_vocab: int, seed: int = 0, rows: int = 0) -> FeatureMap:
    rng = np.random.default_rng(seed)
    vocab = np.exp(rng.uniform(np.log(4), np.log(60_000), N_CAT)).astype(int)
    fields = [FieldSpec(name=f"I{k + 1}", kind="continuous", column=f"I{k + 1}", source=f"I{k + 1}", min=0.0, max=1.0)
              for k in range(N_CONT)]
    fields += [FieldSpec(name=f"C{k + 1}", kind="categorical", column=f"C{k + 1}", source=f"C{k + 1}",
                         vocab_size=int(v)) for k, v in enumerate(vocab)]
    pairs = []
    for a in range(N_CAT):
        for b in range(a + 1, N_CAT):
            fa, fb = f"C{a + 1}", f"C{b + 1}"
            pairs.append(PairSpec(name=pair_column(fa, fb), fields=(fa, fb), column=pair_column(fa, fb),
                                  vocab_size=int(min(vocab[a] * vocab[b], pair_vocab)), threshold=20))
    splits = {s: SplitInfo(rows=rows, positives=0, path=s) for s in ("train", "valid", "test")}
    return FeatureMap(dataset="criteo_like", label="label", fields=fields, pairs=pairs, splits=splits)


def random_batches(fmap: FeatureMap, pair_names: list[str], n: int, batch: int, device: torch.device, seed: int = 1):
    from optinter.models.base import Batch

    g = torch.Generator().manual_seed(seed)
    pv = {p.name: p.vocab_size for p in fmap.pairs}
    out = []
    for _ in range(n):
        cat = torch.stack([torch.randint(0, f.vocab_size, (batch,), generator=g) for f in fmap.categorical], 1)
        pairs = (torch.stack([torch.randint(0, pv[p], (batch,), generator=g) for p in pair_names], 1)
                 if pair_names else torch.zeros(batch, 0, dtype=torch.long))
        out.append(Batch(cat, torch.rand(batch, N_CONT, generator=g), pairs,
                         (torch.rand(batch, generator=g) < 0.25).float()).to(device))
    return out


def child(args: argparse.Namespace) -> None:
    from optinter.architecture import random_architecture
    from optinter.config import paper_config
    from optinter.registry import available_models, build_model, build_search_model
    from optinter.train import make_optimizers, resolve_device, train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    fmap = criteo_like_map(args.pair_vocab)
    name = args.child
    cfg = paper_config("criteo", "optinter" if name in ("search", "retrain") else name)  # Table IV sizes
    cfg.train.batch_size = args.batch_size
    cfg.model.factorize_source = args.factorize_source
    torch.manual_seed(0)
    if name == "search":
        model = build_search_model("optinter", fmap, cfg.model)
    elif name == "retrain":
        model = build_model("optinter", fmap, cfg.model, arch=random_architecture(fmap, seed=0))
    elif name in available_models():
        model = build_model(name, fmap, cfg.model)
    else:
        print(json.dumps({"model": name, "error": f"not registered (known: {', '.join(available_models())})"}))
        return
    model.to(device)
    opts = make_optimizers(model, cfg.train)
    batches = random_batches(fmap, model.required_pairs(), 8, args.batch_size, device)
    amp = bool(args.amp and device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(args.warmup):
        if name == "search":
            model.set_temperature(1.0)
        train_step(model, batches[i % len(batches)], opts, amp)
    sync()
    times = []
    for i in range(args.steps):
        if name == "search":
            model.set_temperature(1.0 - 0.5 * i / args.steps)
        t0 = time.perf_counter()
        train_step(model, batches[i % len(batches)], opts, amp)
        sync()
        times.append(time.perf_counter() - t0)
    secs = float(np.median(times))  # median step: robust to a noisy neighbour on a shared machine
    rec = {"model": name, "params": model.num_params(), "ms_per_step": secs * 1000,
           "samples_per_s": args.batch_size / secs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "device": str(device)}
    if device.type == "cuda":
        rec["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(rec))


def loader_speed(rows: int, pair_vocab: int, epochs: int = 3, part_rows: int = 200_000) -> list[tuple[str, list[float]]]:
    """Rows/s of the shuffled parquet loader (batch 2000, default shuffle buffer) over ``rows`` Criteo-shaped
    rows written as parts of ``part_rows`` rows (one row group each, as the preprocessing stage writes them),
    per epoch, for three column sets: all 325 pair columns, the memorized pairs of a random re-train
    architecture (~1/3), none. The first epoch of a fresh process also pays the first touch of the staging
    buffer's pages (slow in a VM that hands memory to the guest lazily); later epochs are the steady state.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optinter.architecture import random_architecture
    from optinter.data import ParquetBatches

    out = []
    with tempfile.TemporaryDirectory() as d:
        fmap = criteo_like_map(pair_vocab, rows=rows)
        rng = np.random.default_rng(0)
        os.makedirs(f"{d}/train")
        for k, start in enumerate(range(0, rows, part_rows)):
            m = min(part_rows, rows - start)
            cols = {f.column: rng.integers(0, f.vocab_size, m, dtype=np.int32) for f in fmap.categorical}
            cols.update({f.column: rng.random(m, dtype=np.float32) for f in fmap.continuous})
            cols.update({p.column: rng.integers(0, p.vocab_size, m, dtype=np.int32) for p in fmap.pairs})
            cols["label"] = (rng.random(m) < 0.25).astype(np.float32)
            pq.write_table(pa.table(cols), f"{d}/train/part-{k:05d}.parquet", compression="snappy")
            del cols
        fmap.save(d)
        arch = random_architecture(fmap, seed=0)
        memorized = [p for p, c in zip(arch.pairs, arch.choices) if c == "memorize"]
        for label, pairs in ((f"all {fmap.num_pairs} pair columns", [p.name for p in fmap.pairs]),
                             (f"{len(memorized)} memorized pair columns (re-train)", memorized),
                             ("no pair columns", [])):
            dl = ParquetBatches(d, fmap, "train", 2000, pairs, shuffle=True, seed=0)
            per_epoch = []
            for epoch in range(epochs):
                dl.set_epoch(epoch)
                t0 = time.perf_counter()
                n = sum(len(b) for b in dl)
                per_epoch.append(n / (time.perf_counter() - t0))
            out.append((label, per_epoch))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="run the model list N times, keep each model's best")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--pair-vocab", type=int, default=20_000, help="cap of each pair's vocabulary")
    ap.add_argument("--models", default="search,retrain,deepfm,optinter_f")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    ap.add_argument("--factorize-source", default="orig", choices=("orig", "table"),
                    help="OptInter's factorized embedding: field embeddings (s1 wide) or a separate s2 table")
    ap.add_argument("--loader-rows", type=int, default=600_000, help="0 = skip the loader benchmark")
    ap.add_argument("--loader-epochs", type=int, default=3, help="epochs per loader measurement")
    ap.add_argument("--loader-only", action="store_true", help="only the loader benchmark (no model steps)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.loader_only:
        print_loader(args)
        return
    fmap = criteo_like_map(args.pair_vocab)
    print(f"Criteo-shaped: {N_CONT} continuous + {N_CAT} categorical fields, {fmap.num_pairs} pairs, "
          f"{sum(f.vocab_size for f in fmap.categorical):,} field values, {sum(p.vocab_size for p in fmap.pairs):,} "
          f"cross values; batch {args.batch_size}, s1=20, s2=10, MLP 700x5, factorize from "
          f"{args.factorize_source}; device {args.device}, "
          f"threads {args.threads or torch.get_num_threads()}")
    results = {}
    base = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
            "--pair-vocab", str(args.pair_vocab), "--factorize-source", args.factorize_source]
    base += ["--amp"] if args.amp else []
    print(f"{'model':12s} {'params':>12s} {'ms/step':>9s} {'samples/s':>10s} {'peak RSS MB':>12s}")
    for rep in range(args.repeat):
        for name in args.models.split(","):
            proc = subprocess.run(base + ["--child", name], capture_output=True, text=True)
            if proc.returncode:
                print(f"{name:12s} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
                continue
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            if "error" in rec:
                print(f"{name:12s} {rec['error']}")
                continue
            if name not in results or rec["ms_per_step"] < results[name]["ms_per_step"]:
                results[name] = rec  # best of --repeat runs
    for name, rec in results.items():
        extra = f"  (peak CUDA {rec['peak_cuda_mb']:.0f} MB)" if "peak_cuda_mb" in rec else ""
        print(f"{name:12s} {rec['params']:>12,} {rec['ms_per_step']:>9.1f} {rec['samples_per_s']:>10.0f} "
              f"{rec['peak_rss_mb']:>12.0f}{extra}")
    if "deepfm" in results:
        d = results["deepfm"]["ms_per_step"]
        for name in ("search", "retrain", "optinter_f"):
            if name in results:
                print(f"step time {name} / deepfm: {results[name]['ms_per_step'] / d:.2f}x")
    else:
        print("deepfm not measured (not registered yet?): no ratio")
    print_loader(args)


def print_loader(args: argparse.Namespace) -> None:
    if not args.loader_rows:
        return
    print(f"parquet loader, shuffled, batch 2000, {args.loader_rows:,} rows, 1-minute load "
          f"{os.getloadavg()[0]:.1f} before:")
    for label, per_epoch in loader_speed(args.loader_rows, args.pair_vocab, args.loader_epochs):
        steady = f", steady state (best later epoch) {max(per_epoch[1:]):,.0f} rows/s" if len(per_epoch) > 1 else ""
        print(f"  {label}: first epoch {per_epoch[0]:,.0f} rows/s{steady}  "
              f"[per epoch: {', '.join(f'{x:,.0f}' for x in per_epoch)}]", flush=True)


if __name__ == "__main__":
    main()
