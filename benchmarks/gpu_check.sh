#!/usr/bin/env bash
# One prepared GPU check for a session that is lent a device machine (README, "Speed and memory"):
# the CUDA tests, then the training benchmark on CUDA in fp32 and with bf16 autocast, then the parquet
# loader's rows/s (can the CPU side feed the GPU step? docs/scale.md).
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
# Needs only python3 with torch, numpy, pyarrow and pytest (the device image has them; the CUDA
# tests and benchmarks/train.py import neither dask, prefect nor mlflow). Logs go to $OUT (the
# device tool's output folder) or ./gpu_check_out.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/optinter/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
tests=$?
for amp in "" "--amp"; do
  python3 benchmarks/train.py --device cuda --steps 30 --warmup 5 --loader-rows 0 $amp 2>&1 \
    | tee "$out/train_cuda${amp:+_amp}.log"
done
# the parquet loader on this machine's cores (CPU side of feeding the GPU; rows/s per epoch)
python3 benchmarks/train.py --loader-only --loader-rows 600000 --loader-epochs 3 2>&1 | tee "$out/loader.log"
exit $tests
