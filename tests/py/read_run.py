"""Reads a run's metrics.h5 and checkpoint.h5 with h5py, as a user's analysis
script would, and prints a JSON summary for tests/train_mpnn.rs."""
import json
import sys

import h5py

run = sys.argv[1]
with h5py.File(f"{run}/metrics.h5", "r") as m, h5py.File(f"{run}/checkpoint.h5", "r") as c:
    params = []
    c["params"].visit(lambda name: params.append(name) if isinstance(c["params"][name], h5py.Dataset) else None)
    config = m.attrs["config"]
    out = {
        "test_rmse": [float(x) for x in m["epoch/test_rmse"][()]],
        "train_rmse": [float(x) for x in m["epoch/train_rmse"][()]],
        "n_steps": int(m["step/loss"].shape[0]),
        "timing": sorted(m["timing"].keys()),
        "ranks": int(m.attrs["ranks"]),
        "baseline": float(m.attrs["baseline_test_rmse"]),
        "config_has_seed": "seed" in (config.decode() if isinstance(config, bytes) else config),
        "ckpt_step": int(c.attrs["step"]),
        "params": params,
        "adam_m": len(list(c["adam/m"].keys())) > 0,
    }
print(json.dumps(out))
