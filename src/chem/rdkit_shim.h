// C++ side of the project's RDKit bridge: parse a SMILES with RDKit and hand the
// raw atom/bond facts to Rust. All encoding decisions live in Rust; this file only
// reads RDKit and turns every RDKit failure into a C++ exception that cxx maps
// to `Err`.
#pragma once
#include "rust/cxx.h"
#include <memory>

namespace zo {
struct MolRecord;
MolRecord parse_molecule(rust::Str smiles);
rust::String canonical_smiles(rust::Str smiles);
rust::String rdkit_version();
void quiet_rdkit_logs();
}  // namespace zo
