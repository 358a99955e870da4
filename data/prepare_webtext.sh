#!/usr/bin/env bash
# The seed README's ./prepare_webtext.sh: OpenWebText (the open re-creation of WebText) in data/webtext/
# {train,valid,test}.txt, the folder configs/roberta_baseline.json reads. It runs the same code as
#   python -m lorakit data prepare openwebtext --to data [--from PATH] [--holdout F] [--max-train-docs N]
# and passes its arguments through (a later --to wins). Offline: download the release archive
# https://zenodo.org/records/3834942/files/openwebtext.tar.xz (or the 21 shards subsets/urlsf_subsetNN.tar of
# the Hugging Face dataset Skylion007/openwebtext) elsewhere and pass --from PATH. PYTHON picks the
# interpreter (default: python).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"  # a checkout works without installing lorakit
exec "${PYTHON:-python}" -m lorakit data prepare openwebtext --to "$here" "$@"
