#!/usr/bin/python3
"""An external knowledge source for zo-hpc (protocol zo-hpc-source, version 1).

It gives the same columns, with the same values, as zo-hpc's in-process RDKit
featurizer (src/chem/featurize.rs), computed with RDKit's Python bindings. Use it as
a template: replace `atom_row`/`bond_row` (or add columns) to plug in your own code.

    [source]
    kind = "external"
    command = ["/usr/bin/python3", "sources/rdkit_features.py"]   # a config in inputs/

The protocol, in short (README.md, "External knowledge sources"): print one JSON
handshake line; then, for each request line {"batch": n, "smiles": [...]}, print one
answer line per SMILES, in order. Only protocol lines go to stdout; anything else
(warnings, RDKit's messages) goes to stderr, which zo-hpc writes to a log file.
Exit when stdin closes.
"""
import json
import sys

from rdkit import Chem

# Column order and meaning as in src/chem/featurize.rs.
ELEMENTS = ["C", "N", "O", "S", "F", "Si", "P", "Cl", "Br", "Mg", "Na", "Ca", "Fe",
            "As", "Al", "I", "B", "V", "K", "Tl", "Yb", "Sb", "Sn", "Ag", "Pd", "Co",
            "Se", "Ti", "Zn", "H", "Li", "Ge", "Cu", "Au", "Ni", "Cd", "In", "Mn",
            "Zr", "Cr", "Pt", "Hg", "Pb"]
Z = {Chem.GetPeriodicTable().GetAtomicNumber(s): i for i, s in enumerate(ELEMENTS)}
HT = Chem.rdchem.HybridizationType
HYBRIDIZATIONS = [("SP", HT.SP), ("SP2", HT.SP2), ("SP3", HT.SP3),
                  ("SP3D", HT.SP3D), ("SP3D2", HT.SP3D2)]
BT = Chem.rdchem.BondType
BOND_TYPES = [("single", BT.SINGLE), ("double", BT.DOUBLE), ("triple", BT.TRIPLE),
              ("aromatic", BT.AROMATIC)]
BS = Chem.rdchem.BondStereo
STEREO = [("none", BS.STEREONONE), ("any", BS.STEREOANY), ("Z", BS.STEREOZ),
          ("E", BS.STEREOE), ("cis", BS.STEREOCIS), ("trans", BS.STEREOTRANS)]
CT = Chem.rdchem.ChiralType
MAX_DEGREE, MAX_IMPLICIT_H, MAX_TOTAL_H = 10, 6, 4

ATOM_COLUMNS = (
    [f"element={s}" for s in ELEMENTS] + ["element=other"]
    + [f"degree={d}" for d in range(MAX_DEGREE + 1)]
    + [f"implicit_h={d}" for d in range(MAX_IMPLICIT_H + 1)]
    + ["formal_charge", "radical_electrons"]
    + [f"hybridization={s}" for s, _ in HYBRIDIZATIONS]
    + ["aromatic"]
    + [f"total_h={d}" for d in range(MAX_TOTAL_H + 1)]
    + ["in_ring", "chirality=CW", "chirality=CCW"]
)
BOND_COLUMNS = ([f"bond_type={s}" for s, _ in BOND_TYPES] + ["conjugated", "in_ring"]
                + [f"stereo={s}" for s, _ in STEREO])


def one_hot(value, choices):
    """1 at the position of `value` in `choices`; all zeros when it is not there."""
    return [1 if value == c else 0 for c in choices]


def atom_row(atom, ring_info):
    element = [0] * (len(ELEMENTS) + 1)
    element[Z.get(atom.GetAtomicNum(), len(ELEMENTS))] = 1
    return (
        element
        + one_hot(atom.GetDegree(), range(MAX_DEGREE + 1))
        + one_hot(atom.GetNumImplicitHs(), range(MAX_IMPLICIT_H + 1))
        + [atom.GetFormalCharge(), atom.GetNumRadicalElectrons()]
        + one_hot(atom.GetHybridization(), [h for _, h in HYBRIDIZATIONS])
        + [int(atom.GetIsAromatic())]
        + one_hot(atom.GetTotalNumHs(), range(MAX_TOTAL_H + 1))
        + [int(ring_info.NumAtomRings(atom.GetIdx()) > 0)]
        + one_hot(atom.GetChiralTag(), [CT.CHI_TETRAHEDRAL_CW, CT.CHI_TETRAHEDRAL_CCW])
    )


def bond_row(bond, ring_info):
    return (
        one_hot(bond.GetBondType(), [t for _, t in BOND_TYPES])
        + [int(bond.GetIsConjugated()), int(ring_info.NumBondRings(bond.GetIdx()) > 0)]
        + one_hot(bond.GetStereo(), [s for _, s in STEREO])
    )


def answer(batch, index, smiles):
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return {"batch": batch, "index": index, "error": "RDKit could not parse the SMILES"}
    if mol.GetNumAtoms() == 0:
        return {"batch": batch, "index": index, "error": "the SMILES has no atoms"}
    rings = mol.GetRingInfo()
    return {
        "batch": batch,
        "index": index,
        "atoms": [atom_row(a, rings) for a in mol.GetAtoms()],
        "bonds": [[b.GetBeginAtomIdx(), b.GetEndAtomIdx(), bond_row(b, rings)]
                  for b in mol.GetBonds()],
    }


def main():
    print(json.dumps({"protocol": "zo-hpc-source", "version": 1, "name": "rdkit-python",
                      "atom_columns": ATOM_COLUMNS, "bond_columns": BOND_COLUMNS}),
          flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        for i, smiles in enumerate(request["smiles"]):
            try:
                out = answer(request["batch"], i, smiles)
            except Exception as e:  # one bad molecule must not end the source
                out = {"batch": request["batch"], "index": i, "error": f"{type(e).__name__}: {e}"}
            sys.stdout.write(json.dumps(out, separators=(",", ":")) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
