// C++ side of the project's RDKit bridge: parse a SMILES with RDKit and hand the
// raw atom/bond facts to Rust. All encoding decisions live in Rust; this file only
// reads RDKit and turns every RDKit failure into a C++ exception that cxx maps
// to `Err`.
#pragma once
#include "rust/cxx.h"
#include <cstdint>
#include <memory>
#include <vector>

namespace RDKit {
class ROMol;
}

namespace zo {
struct MolRecord;
struct KekuleMol;
struct KAtom;
struct KBond;
struct Geometry;
struct CanonicalOrder;

// A sanitized RDKit molecule held across the bridge (opaque to Rust). The
// destructor is defined where RDKit's types are complete (rdkit_shim.cc).
struct Molecule {
  Molecule();
  ~Molecule();
  std::unique_ptr<RDKit::ROMol> mol;
};
std::unique_ptr<Molecule> molecule_from_smiles(rust::Str smiles);
rust::String molecule_smiles(const Molecule &mol);
std::unique_ptr<std::vector<int32_t>> molecule_facts(const Molecule &mol);

MolRecord parse_molecule(rust::Str smiles);
rust::String canonical_smiles(rust::Str smiles);
rust::String rdkit_version();
KekuleMol parse_kekule(rust::Str smiles);
rust::String graph_smiles(rust::Slice<const KAtom> atoms, rust::Slice<const KBond> bonds, bool kekule);
void quiet_rdkit_logs();
Geometry embed_geometry(rust::Str smiles, int32_t seed, int32_t max_iters, double time_limit_s);
CanonicalOrder canonical_order(rust::Str smiles);
}  // namespace zo
