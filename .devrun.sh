#!/usr/bin/env bash
tools/device_unpack.sh
export LD_LIBRARY_PATH=$PWD/.device/lib:/usr/local/cuda/lib64 ARBOR_SOURCE_DIR=$PWD
( timeout 150 .device/tests/kernels_gpu_test 2>&1 | tail -30 ) > $OUT/test.txt
( timeout 100 compute-sanitizer --print-limit 5 .device/tests/kernels_gpu_test --gtest_filter='*Cascade*:*Prefill*' 2>&1 | tail -8 ) > $OUT/sanitizer.txt
( timeout 200 .device/bin/kernels_bench --only=shared_prefix,prefill 2>&1 | grep -v '^|' ) > $OUT/bench.txt
OUT=$OUT/model BATCHES=1 timeout 300 bench/model/run.sh > $OUT/model.txt 2>&1
