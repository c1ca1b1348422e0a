#!/bin/bash
# The GPU check, as run on a borrowed GPU machine that has python3 with torch, onnx and onnxruntime
# but no package registry and no TVM (how the H100 figures in the README were made).
#
# Here, before: the TVM package as an xz tarball (site-packages/tvm without 3rdparty/, include/, src/,
# about 61 MiB) in .dev/, and the cp312 wheels of apache-tvm-ffi==0.1.14.post1 and xgboost-cpu in .whl/
# (pip download --only-binary=:all: --python-version 3.12 ...); both folders git-ignored.
# There, call 1 (carrying .dev): mkdir -p /tmp/tvmsite && tar -xJf .dev/tvm.tar.xz -C /tmp/tvmsite
# There, call 2 (carrying .whl, within the machine's idle window): bash scripts/device_check.sh
# Outputs land in $OUT: tests.log, bench.log, cuda.json. T1/T2 bound the tests and the benchmark
# (seconds), TUNE is the benchmark's tuning budget, MODELS its models.
R=$PWD
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . 2>&1 | tail -2
CUDART=$(dirname "$(ls /usr/local/cuda*/lib*/libcudart.so.13 /usr/local/cuda*/targets/x86_64-linux/lib/libcudart.so.13 2>/dev/null | head -1)")
export PYTHONPATH=/tmp/site:/tmp/tvmsite LD_LIBRARY_PATH=$CUDART:$LD_LIBRARY_PATH PATH=/tmp/site/bin:$PATH
cd /tmp || exit 1  # not the checkout: its ember/ folder would shadow the installed package
python3 -c "import tvm, ember; print('tvm', tvm.__version__, tvm.cuda(0).exist, tvm.cuda(0).compute_version)" || exit 1
timeout "${T1:-200}" python3 -m pytest -q -p no:warnings -p no:cacheprovider --rootdir="$R" -c "$R/pyproject.toml" \
  "$R/tests/compiler/test_dp4a.py" "$R/tests/targets/test_targets.py" -k "gpu or cuda" 2>&1 | tee "$OUT/tests.log" | tail -30
timeout "${T2:-420}" python3 "$R/benchmarks/cuda.py" --repeat 100 --tune-time "${TUNE:-60}" \
  --models "${MODELS:-resnet50,mobilenet_v2,bert,squeezenet}" --out "$OUT/cuda.json" 2>&1 \
  | grep -v "Warning\|^W11\|cls.__new__\|warnings.warn" | tee "$OUT/bench.log"
