"""Reads a zo-hpc dataset HDF5 file with h5py (the analysis tools' view) and prints
what it found as JSON, for tests/prepare.rs to check."""
import json
import sys

import h5py

with h5py.File(sys.argv[1], "r") as f:
    def text(x):
        return x.decode() if isinstance(x, bytes) else str(x)

    out = {
        "smiles": [text(s) for s in f["smiles"][()]],
        "target": [float(t) for t in f["target"][()]],
        "source_line": [int(x) for x in f["source_line"][()]],
        "train": [int(i) for i in f["split/train"][()]],
        "test": [int(i) for i in f["split/test"][()]],
        "atom_columns": [text(s) for s in f["featurizer/atom_columns"][()]],
        "atom_keep": [int(i) for i in f["featurizer/atom_keep"][()]],
        "bond_keep": [int(i) for i in f["featurizer/bond_keep"][()]],
        "attrs": {k: (text(v) if isinstance(v, (bytes, str)) else float(v)) for k, v in f.attrs.items()},
    }
print(json.dumps(out))
