#!/usr/bin/env bash
# Fetches MOSES' training set (1 584 663 ZINC clean-lead molecules) for the JT-VAE
# pretraining config inputs/table1/zinc_moses.toml, and writes the JT-VAE's
# training and vocabulary file from it:
#
#   inputs/data/moses/moses_train.csv.gz   MOSES train.csv.gz as shipped (column SMILES)
#   inputs/data/moses/moses_zinc.csv.gz    smiles,origin: every molecule of
#                                          inputs/data/zinc_jtvae_29k.csv.gz (origin
#                                          "zinc"), then every MOSES one ("moses")
#
# Why both: MOSES keeps only neutral molecules of C, N, O, S, F, Cl, Br, while a third
# of the ZINC molecules the pipeline is evaluated on carry a charge or another
# element; a vocabulary and a training set of MOSES alone would leave those
# held-out molecules without a junction tree. `zo-hpc prepare` drops the held-out
# split's molecules from the training set (whatever their origin) and duplicates.
#
# Source: the PyPI package molsets 0.3.1 (the MOSES benchmark), which ships the file
# inside the wheel; the wheel's and the file's SHA-256 are checked. Only this config
# needs it: `make test` and `make demo` never fetch it. Quick when already there.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL=molsets-0.3.1-py3-none-any.whl
WHEEL_SHA=7f4450e3ebecebe79c3a2a55950c93daddee071120daf64a163d03481e811d34
TRAIN_SHA=786f0313aa6b9ba5514df685f885742a70ea8d86f1a4fa48115f7f80a634265c
OUT=inputs/data/moses
ZINC=inputs/data/zinc_jtvae_29k.csv.gz

mkdir -p "$OUT"
if ! { [[ -f "$OUT/moses_train.csv.gz" ]] \
  && echo "$TRAIN_SHA  $OUT/moses_train.csv.gz" | sha256sum -c --quiet; } >/dev/null 2>&1; then
  [[ -x .venv/bin/pip ]] || bash scripts/setup.sh
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "[moses] downloading $WHEEL from PyPI"
  .venv/bin/pip download -q --no-deps "molsets==0.3.1" -d "$tmp"
  echo "$WHEEL_SHA  $tmp/$WHEEL" | sha256sum -c --quiet
  .venv/bin/python - "$tmp/$WHEEL" "$OUT/moses_train.csv.gz.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("moses/dataset/data/train.csv.gz"))
PY
  echo "$TRAIN_SHA  $OUT/moses_train.csv.gz.tmp" | sha256sum -c --quiet
  mv "$OUT/moses_train.csv.gz.tmp" "$OUT/moses_train.csv.gz"
fi

# The combined file, rebuilt when missing or older than either input. ZINC first, so
# that a config's jtvae.train_limit (the first N molecules) keeps all of them.
if [[ ! -s "$OUT/moses_zinc.csv.gz" || "$OUT/moses_zinc.csv.gz" -ot "$OUT/moses_train.csv.gz" \
  || "$OUT/moses_zinc.csv.gz" -ot "$ZINC" ]]; then
  echo "[moses] writing $OUT/moses_zinc.csv.gz"
  {
    echo "smiles,origin"
    zcat "$ZINC" | tail -n +2 | cut -d, -f1 | sed 's/$/,zinc/'
    zcat "$OUT/moses_train.csv.gz" | tail -n +2 | sed 's/$/,moses/'
  } | gzip -6 >"$OUT/moses_zinc.csv.gz.tmp"
  mv "$OUT/moses_zinc.csv.gz.tmp" "$OUT/moses_zinc.csv.gz"
fi
echo "[moses] $(zcat "$OUT/moses_zinc.csv.gz" | tail -n +2 | wc -l) molecules in $OUT/moses_zinc.csv.gz"
