#!/usr/bin/env bash
# The GPU measurements guard owes, in parts that each fit the lent machine's 10-minute command limit.
# Run from the repository root on the GPU machine, with the wheels it lacks carried in .whl/
# (../shared/device-wheels.sh, plus gradio, gradio_client and spaces for part "space"), and $OUT set:
#
#   bash benchmarks/gpu_session.sh svd        # SVD-XT: every method's fast preset at 25 frames, a 12 MP photo, videos
#   bash benchmarks/gpu_session.sh cogvideox  # CogVideoX-5B-I2V: the same at its 49 frames
#   bash benchmarks/gpu_session.sh ltx        # LTX-Video 2B
#   bash benchmarks/gpu_session.sh wan5b      # Wan 2.2 TI2V-5B
#   bash benchmarks/gpu_session.sh wan14b     # Wan 2.1 I2V 14B (protection at the app's length and at 81 frames)
#   bash benchmarks/gpu_session.sh a14b       # Wan 2.2 I2V A14B
#   bash benchmarks/gpu_session.sh space      # the app end to end through gradio_client, per default GPU model
#
# Each part writes $OUT/<part>.txt. Protection rows run every method's fast preset through guard.jobs;
# "--frames MODEL=N" sets the video length the protection attacks (the tables: the model's own).
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
OUT=${OUT:?set OUT to the folder results go to}
methods=vidfreeze,medusa,freeze,i2vguard,photoguard,noise
bench() { python3 benchmarks/bench_gpu.py --methods "$methods" --timed-steps 3 "$@"; }
case "${1:?name a part}" in
  svd) bench --models random-svd-xt --frames random-svd-xt=25 --photo-size 4000x3000 >"$OUT/svd.txt" 2>&1 ;;
  cogvideox) bench --models random-cogvideox --photo-size 4000x3000 >"$OUT/cogvideox.txt" 2>&1 ;;
  ltx) bench --models random-ltx-video --frames random-ltx-video=161 --photo-size 4000x3000 >"$OUT/ltx.txt" 2>&1 ;;
  wan5b) bench --models random-wan2.2-ti2v-5b --photo-size 4000x3000 >"$OUT/wan5b.txt" 2>&1 ;;
  wan14b) bench --models random-wan2.1-i2v-14b --frames random-wan2.1-i2v-14b=81 --skip-generation \
            --methods vidfreeze,medusa,noise >"$OUT/wan14b.txt" 2>&1
          bench --models random-wan2.1-i2v-14b --skip-protection >>"$OUT/wan14b.txt" 2>&1 ;;
  a14b) bench --models random-wan2.2-i2v-a14b --photo-size 4000x3000 >"$OUT/a14b.txt" 2>&1 ;;
  space) python3 benchmarks/bench_space.py --models random-svd-xt,random-ltx-video,random-wan2.2-ti2v-5b \
           --out "$OUT/space.md" --log-dir "$OUT/logs" >"$OUT/space.txt" 2>&1 ;;
  *) echo "unknown part $1" >&2; exit 2 ;;
esac
