// C++ side of the project's RDKit bridge: parse a SMILES with RDKit and hand the
// raw atom/bond facts to Rust. All encoding decisions live in Rust; this file only
// reads RDKit and turns every RDKit failure into a C++ exception that cxx maps
// to `Err`.
#pragma once
#include "rust/cxx.h"
#include <memory>

namespace zo {
struct MolRecord;
struct KekuleMol;
struct KAtom;
struct KBond;
MolRecord parse_molecule(rust::Str smiles);
rust::String canonical_smiles(rust::Str smiles);
rust::String rdkit_version();
KekuleMol parse_kekule(rust::Str smiles);
rust::String graph_smiles(rust::Slice<const KAtom> atoms, rust::Slice<const KBond> bonds, bool kekule);
void quiet_rdkit_logs();
}  // namespace zo
