#!/usr/bin/env bash
# The GPU check: the course on a CUDA machine with PyTorch and no network, in under 8 minutes.
#
# It installs the wheels carried beside it (build/gpu-wheels) that the machine lacks, then runs,
# printing one line per step with its time:
#   1. the GPU-marked tests (tests/test_gpu.py: one device per call, every trainer on CUDA);
#   2. `mmlib zoo prepare` into a fresh MMLIB_HOME: what the first notebook 05 costs on Colab;
#   3. `mmlib generate` in the tiny profile, and in the full profile with fixture weights
#      (random ViT-B-32 and official-size f16 VQGAN in their real formats) at 256x256, cutn 32;
#   4. `mmlib bench generate` and `mmlib bench embed` on the GPU (quick forms);
#   5. notebooks 00-07 in the tiny profile on CUDA (`mmlib course`), time permitting.
#
# Make the wheels here first (this machine has the package index; the GPU machine does not).
# PY is the GPU machine's Python (3.12 on this workplace's H200 image):
#   PY=3.12; mkdir -p build/gpu-wheels && .venv/bin/pip download -d build/gpu-wheels \
#     --only-binary=:all: --python-version $PY --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --no-deps \
#     open_clip_torch==3.3.0 ftfy wcwidth taming-transformers==0.0.1 faiss-cpu imageio-ffmpeg \
#     ipywidgets widgetsnbextension jupyterlab_widgets comm papermill nbclient nbformat \
#     jupyter_client jupyter_core ipykernel ipython traitlets entrypoints ansicolors tenacity \
#     fastjsonschema jsonschema debugpy nest_asyncio pyzmq tornado matplotlib-inline \
#     prompt_toolkit jedi parso pexpect ptyprocess decorator stack_data asttokens executing \
#     pure_eval pygments
# then run it there with the device tool: command `bash scripts/gpu_check.sh`,
# carry ["build/gpu-wheels"], timeout_s 560.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg MMLIB_PROFILE=tiny
export MMLIB_HOME=${MMLIB_HOME:-/tmp/mmlib_gpu_home}
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
t0=$(date +%s)
step() {  # step NAME COMMAND...: run it, print one line, keep its log in $OUT
  local name=$1; shift
  local start=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf "gpu check: %-28s rc=%d %4d s  %s\n" "$name" "$rc" "$(( $(date +%s) - start ))" \
    "$(grep -v '^\s*$' "$OUT/$name.log" | tail -n 1 | cut -c1-150)"
  return $rc
}

step machine "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA';
print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
if [ -d build/gpu-wheels ]; then
  step wheels "$PY" -m pip install -q --no-index --find-links build/gpu-wheels --no-deps \
    build/gpu-wheels/*.whl
fi
# An editable install needs the build backend there; without it, the checkout on the path will do.
step mmlib "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . ||
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
step gpu-tests "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
rm -rf "$MMLIB_HOME"
step zoo-prepare "$PY" -m mmlib zoo prepare
step generate-tiny "$PY" -m mmlib generate "a red star" --steps 100 --out "$OUT/tiny.png"
step full-fixtures "$PY" - <<'EOF'
import open_clip, torch, yaml
from safetensors.torch import save_file
from mmlib import vqgan as vq
from mmlib.store.downloads import FULL_FILES
clip_item, ckpt_item, config_item = FULL_FILES[:3]
for item in (clip_item, ckpt_item):
    item.local_path().parent.mkdir(parents=True, exist_ok=True)
model = open_clip.create_model("ViT-B-32", pretrained=None)
save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(clip_item.local_path()))
config_item.local_path().write_text(yaml.safe_dump(vq.F16_16384_CONFIG))
torch.save({"state_dict": vq.vqgan_from_config(vq.F16_16384_CONFIG).state_dict()}, ckpt_item.local_path())
print("fixture weights of the full profile written (random, real formats)")
EOF
step generate-full "$PY" -m mmlib generate "a red star" --profile full --size 256 --cutn 32 \
  --steps 50 --out "$OUT/full.png"
step bench-generate "$PY" -m mmlib bench generate --quick
step bench-embed "$PY" -m mmlib bench embed --quick
left=$(( 480 - ($(date +%s) - t0) ))
if [ "$left" -gt 120 ]; then
  step course timeout "$left" "$PY" -m mmlib course --out "$OUT/course"
fi
echo "gpu check: done in $(( $(date +%s) - t0 )) s; logs in $OUT"
