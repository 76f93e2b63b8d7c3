// RDKit → plain records. See rdkit_shim.h.
#include "zo-hpc/src/chem/rdkit_shim.h"
#include "zo-hpc/src/chem/rdkit_ffi.rs.h"

#include <GraphMol/Depictor/RDDepictor.h>
#include <GraphMol/DistGeomHelpers/Embedder.h>
#include <GraphMol/ForceFieldHelpers/MMFF/MMFF.h>
#include <GraphMol/ForceFieldHelpers/UFF/UFF.h>
#include <GraphMol/GraphMol.h>
#include <GraphMol/MolOps.h>
#include <GraphMol/RDKitBase.h>
#include <GraphMol/SmilesParse/SmilesParse.h>
#include <GraphMol/SmilesParse/SmilesWrite.h>
#include <RDGeneral/RDLog.h>
#include <RDGeneral/versions.h>

#include <chrono>
#include <stdexcept>
#include <vector>
#include <string>

namespace zo {
namespace {

// Stable codes that do not depend on RDKit's enum numbering (see rdkit_ffi.rs).
int32_t hybridization_code(RDKit::Atom::HybridizationType h) {
  switch (h) {
    case RDKit::Atom::S: return 1;
    case RDKit::Atom::SP: return 2;
    case RDKit::Atom::SP2: return 3;
    case RDKit::Atom::SP3: return 4;
    case RDKit::Atom::SP3D: return 5;
    case RDKit::Atom::SP3D2: return 6;
    case RDKit::Atom::UNSPECIFIED: return 0;
    default: return 7;
  }
}

int32_t chiral_code(RDKit::Atom::ChiralType c) {
  switch (c) {
    case RDKit::Atom::CHI_TETRAHEDRAL_CW: return 1;
    case RDKit::Atom::CHI_TETRAHEDRAL_CCW: return 2;
    case RDKit::Atom::CHI_UNSPECIFIED: return 0;
    default: return 3;
  }
}

int32_t bond_type_code(RDKit::Bond::BondType t) {
  switch (t) {
    case RDKit::Bond::SINGLE: return 1;
    case RDKit::Bond::DOUBLE: return 2;
    case RDKit::Bond::TRIPLE: return 3;
    case RDKit::Bond::AROMATIC: return 4;
    default: return 0;
  }
}

int32_t stereo_code(RDKit::Bond::BondStereo s) {
  switch (s) {
    case RDKit::Bond::STEREONONE: return 0;
    case RDKit::Bond::STEREOANY: return 1;
    case RDKit::Bond::STEREOZ: return 2;
    case RDKit::Bond::STEREOE: return 3;
    case RDKit::Bond::STEREOCIS: return 4;
    case RDKit::Bond::STEREOTRANS: return 5;
    default: return 0;
  }
}

std::unique_ptr<RDKit::ROMol> parse_or_throw(rust::Str smiles) {
  std::string s(smiles.data(), smiles.size());
  std::unique_ptr<RDKit::ROMol> mol;
  try {
    mol.reset(RDKit::SmilesToMol(s));
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("RDKit rejected the SMILES: ") + e.what());
  } catch (...) {
    throw std::runtime_error("RDKit rejected the SMILES (unknown error)");
  }
  if (!mol) throw std::runtime_error("RDKit could not parse the SMILES");
  if (mol->getNumAtoms() == 0) throw std::runtime_error("the SMILES has no atoms");
  return mol;
}

// Builds and sanitizes a molecule from Kekulé atoms and bonds.
std::unique_ptr<RDKit::RWMol> build_graph(rust::Slice<const KAtom> atoms, rust::Slice<const KBond> bonds) {
  auto mol = std::make_unique<RDKit::RWMol>();
  try {
    for (const KAtom &k : atoms) {
      auto *a = new RDKit::Atom(k.atomic_num);
      a->setFormalCharge(k.formal_charge);
      a->setNumExplicitHs(static_cast<unsigned int>(k.explicit_hs));
      mol->addAtom(a, false, true);
    }
    for (const KBond &k : bonds) {
      RDKit::Bond::BondType t = k.order == 2   ? RDKit::Bond::DOUBLE
                                : k.order == 3 ? RDKit::Bond::TRIPLE
                                               : RDKit::Bond::SINGLE;
      if (k.begin < 0 || k.end < 0 || k.begin >= static_cast<int32_t>(atoms.size()) ||
          k.end >= static_cast<int32_t>(atoms.size()) || k.begin == k.end ||
          mol->getBondBetweenAtoms(k.begin, k.end) != nullptr)
        throw std::runtime_error("invalid or repeated bond");
      mol->addBond(static_cast<unsigned int>(k.begin), static_cast<unsigned int>(k.end), t);
    }
    RDKit::MolOps::sanitizeMol(*mol);
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("not a valid molecule: ") + e.what());
  } catch (...) {
    throw std::runtime_error("not a valid molecule (unknown RDKit error)");
  }
  return mol;
}

}  // namespace

Molecule::Molecule() = default;
Molecule::~Molecule() = default;

std::unique_ptr<Molecule> molecule_from_smiles(rust::Str smiles) {
  auto m = std::make_unique<Molecule>();
  m->mol = parse_or_throw(smiles);
  return m;
}

rust::String molecule_smiles(const Molecule &m) {
  try {
    return rust::String(RDKit::MolToSmiles(*m.mol, false));
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("RDKit could not write SMILES: ") + e.what());
  }
}

std::unique_ptr<std::vector<int32_t>> molecule_facts(const Molecule &m) {
  const RDKit::ROMol &mol = *m.mol;
  auto f = std::make_unique<std::vector<int32_t>>();
  try {
    f->reserve(2 + mol.getNumAtoms() * 10 + mol.getNumBonds() * 6);
    f->push_back(static_cast<int32_t>(mol.getNumAtoms()));
    f->push_back(static_cast<int32_t>(mol.getNumBonds()));
    const RDKit::RingInfo *rings = mol.getRingInfo();
    for (const RDKit::Atom *a : mol.atoms()) {
      int32_t row[10] = {
          a->getAtomicNum(),
          static_cast<int32_t>(a->getDegree()),
          static_cast<int32_t>(a->getNumImplicitHs()),
          static_cast<int32_t>(a->getTotalNumHs()),
          a->getFormalCharge(),
          static_cast<int32_t>(a->getNumRadicalElectrons()),
          hybridization_code(a->getHybridization()),
          a->getIsAromatic() ? 1 : 0,
          rings->numAtomRings(a->getIdx()) > 0 ? 1 : 0,
          chiral_code(a->getChiralTag()),
      };
      f->insert(f->end(), row, row + 10);
    }
    for (const RDKit::Bond *b : mol.bonds()) {
      int32_t row[6] = {
          static_cast<int32_t>(b->getBeginAtomIdx()),
          static_cast<int32_t>(b->getEndAtomIdx()),
          bond_type_code(b->getBondType()),
          b->getIsConjugated() ? 1 : 0,
          rings->numBondRings(b->getIdx()) > 0 ? 1 : 0,
          stereo_code(b->getStereo()),
      };
      f->insert(f->end(), row, row + 6);
    }
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("RDKit failed on the molecule: ") + e.what());
  }
  return f;
}

MolRecord parse_molecule(rust::Str smiles) {
  auto mol = parse_or_throw(smiles);
  MolRecord rec;
  try {
    rec.canonical = rust::String(RDKit::MolToSmiles(*mol));
    const RDKit::RingInfo *rings = mol->getRingInfo();
    for (const RDKit::Atom *a : mol->atoms()) {
      AtomRecord r;
      r.atomic_num = a->getAtomicNum();
      r.degree = static_cast<int32_t>(a->getDegree());
      r.implicit_hs = static_cast<int32_t>(a->getNumImplicitHs());
      r.total_hs = static_cast<int32_t>(a->getTotalNumHs());
      r.formal_charge = a->getFormalCharge();
      r.radical_electrons = static_cast<int32_t>(a->getNumRadicalElectrons());
      r.hybridization = hybridization_code(a->getHybridization());
      r.aromatic = a->getIsAromatic();
      r.in_ring = rings->numAtomRings(a->getIdx()) > 0;
      r.chirality = chiral_code(a->getChiralTag());
      rec.atoms.push_back(r);
    }
    for (const RDKit::Bond *b : mol->bonds()) {
      BondRecord r;
      r.begin = static_cast<int32_t>(b->getBeginAtomIdx());
      r.end = static_cast<int32_t>(b->getEndAtomIdx());
      r.bond_type = bond_type_code(b->getBondType());
      r.conjugated = b->getIsConjugated();
      r.in_ring = rings->numBondRings(b->getIdx()) > 0;
      r.stereo = stereo_code(b->getStereo());
      rec.bonds.push_back(r);
    }
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("RDKit failed on the molecule: ") + e.what());
  }
  return rec;
}

rust::String canonical_smiles(rust::Str smiles) {
  auto mol = parse_or_throw(smiles);
  try {
    return rust::String(RDKit::MolToSmiles(*mol));
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("RDKit could not write SMILES: ") + e.what());
  }
}

KekuleMol parse_kekule(rust::Str smiles) {
  auto parsed = parse_or_throw(smiles);
  KekuleMol rec;
  try {
    RDKit::RWMol mol(*parsed);
    RDKit::MolOps::Kekulize(mol, true);
    const RDKit::RingInfo *rings = mol.getRingInfo();
    for (const RDKit::Atom *a : mol.atoms()) {
      KAtom k;
      k.atomic_num = a->getAtomicNum();
      k.formal_charge = a->getFormalCharge();
      k.explicit_hs = static_cast<int32_t>(a->getNumExplicitHs());
      rec.atoms.push_back(k);
    }
    for (const RDKit::Bond *b : mol.bonds()) {
      KBond k;
      k.begin = static_cast<int32_t>(b->getBeginAtomIdx());
      k.end = static_cast<int32_t>(b->getEndAtomIdx());
      switch (b->getBondType()) {
        case RDKit::Bond::SINGLE: k.order = 1; break;
        case RDKit::Bond::DOUBLE: k.order = 2; break;
        case RDKit::Bond::TRIPLE: k.order = 3; break;
        default: throw std::runtime_error("bond type other than single/double/triple after kekulization");
      }
      k.in_ring = rings->numBondRings(b->getIdx()) > 0;
      rec.bonds.push_back(k);
    }
    for (const auto &ring : rings->atomRings()) {
      Ring r;
      for (int i : ring) r.atoms.push_back(i);
      rec.rings.push_back(std::move(r));
    }
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("RDKit could not kekulize the molecule: ") + e.what());
  }
  return rec;
}

rust::String graph_smiles(rust::Slice<const KAtom> atoms, rust::Slice<const KBond> bonds, bool kekule) {
  auto mol = build_graph(atoms, bonds);
  try {
    return rust::String(RDKit::MolToSmiles(*mol, false, kekule));
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("not a valid molecule: ") + e.what());
  }
}

rust::String rdkit_version() { return rust::String(RDKit::rdkitVersion); }

void quiet_rdkit_logs() { RDLog::InitLogs(); boost::logging::disable_logs("rdApp.*"); }

namespace {
// The embedding's deadline, per thread (molecules are embedded on several threads).
// RDKit calls `params.callback` before each embedding attempt in the calling thread;
// past the deadline the callback throws, which unwinds out of EmbedMolecule.
thread_local bool embed_deadline_set = false;
thread_local std::chrono::steady_clock::time_point embed_deadline;
struct EmbedTimeout {};

void check_embed_deadline(unsigned int) {
  if (embed_deadline_set && std::chrono::steady_clock::now() > embed_deadline) throw EmbedTimeout{};
}

// Sets the deadline for this scope and clears it on every way out.
struct DeadlineScope {
  explicit DeadlineScope(double seconds) {
    embed_deadline_set = seconds > 0;
    if (embed_deadline_set) {
      embed_deadline = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(seconds));
    }
  }
  ~DeadlineScope() { embed_deadline_set = false; }
};
}  // namespace

Geometry embed_geometry(rust::Str smiles, int32_t seed, int32_t max_iters, double time_limit_s) {
  auto parsed = parse_or_throw(smiles);
  Geometry g;
  DeadlineScope deadline(time_limit_s);
  try {
    const unsigned int n_own = parsed->getNumAtoms();
    // AddHs appends the hydrogens after the molecule's own atoms, whose order it keeps.
    std::unique_ptr<RDKit::ROMol> mol(RDKit::MolOps::addHs(*parsed));
    RDKit::DGeomHelpers::EmbedParameters params = RDKit::DGeomHelpers::ETKDGv3;
    params.randomSeed = seed;
    params.numThreads = 1;
    params.callback = check_embed_deadline;
    int conf = RDKit::DGeomHelpers::EmbedMolecule(*mol, params);
    if (conf < 0) {
      // RDKit's advice for molecules whose bounds-matrix start fails; still seeded.
      params.useRandomCoords = true;
      conf = RDKit::DGeomHelpers::EmbedMolecule(*mol, params);
    }
    std::string method = "ETKDGv3";
    if (conf < 0) {
      // Distance geometry fails for ~8% of QM9's strained cages (all of their
      // stereoisomers, with any of RDKit's options). Last resort: the 2-D layout,
      // stretched and lifted off the plane by seeded offsets, hydrogens placed on it,
      // and the force field below folds it into 3-D. Checked against ETKDG on 53
      // molecules where both work: PM7 heats differ by 0.44 kcal/mol (median).
      std::unique_ptr<RDKit::RWMol> flat(new RDKit::RWMol(*parsed));
      RDDepict::compute2DCoords(*flat);
      RDKit::Conformer &c2 = flat->getConformer();
      uint64_t state = static_cast<uint64_t>(seed) * 6364136223846793005ULL + 1442695040888963407ULL;
      for (unsigned int i = 0; i < flat->getNumAtoms(); ++i) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        const double u = static_cast<double>(state >> 11) / 9007199254740992.0;  // [0, 1)
        RDGeom::Point3D p = c2.getAtomPos(i);
        c2.setAtomPos(i, RDGeom::Point3D(1.5 * p.x, 1.5 * p.y, u - 0.5));
      }
      c2.set3D(true);
      mol.reset(RDKit::MolOps::addHs(static_cast<const RDKit::ROMol &>(*flat), false, true));
      conf = static_cast<int>(mol->getConformer().getId());
      method = "2D-lifted";
    }
    auto mmff = RDKit::MMFF::MMFFOptimizeMolecule(*mol, max_iters);
    if (mmff.first >= 0) {
      method += "+MMFF94";
      if (mmff.first > 0) method += "+unconverged";
    } else {
      auto uff = RDKit::UFF::UFFOptimizeMolecule(*mol, max_iters);
      if (uff.first >= 0) {
        method += "+UFF";
        if (uff.first > 0) method += "+unconverged";
      }
    }
    g.method = rust::String(method);
    const RDKit::Conformer &c = mol->getConformer(conf);
    int32_t charge = 0;
    for (const RDKit::Atom *a : mol->atoms()) {
      const unsigned int i = a->getIdx();
      g.atomic_nums.push_back(a->getAtomicNum());
      const RDGeom::Point3D &p = c.getAtomPos(i);
      g.xyz.push_back(p.x);
      g.xyz.push_back(p.y);
      g.xyz.push_back(p.z);
      charge += a->getFormalCharge();
      int32_t owner = static_cast<int32_t>(i);
      if (i >= n_own) {
        if (a->getDegree() != 1) throw std::runtime_error("an added hydrogen without one neighbour");
        for (const RDKit::Atom *nb : mol->atomNeighbors(a)) owner = static_cast<int32_t>(nb->getIdx());
        if (owner >= static_cast<int32_t>(n_own)) throw std::runtime_error("an added hydrogen bonded to a hydrogen");
      }
      g.owner.push_back(owner);
    }
    g.n_own = static_cast<int32_t>(n_own);
    g.formal_charge = charge;
  } catch (const EmbedTimeout &) {
    // Matched by name in chem::mol (EMBED_TIMEOUT): a time-out, not a refusal.
    throw std::runtime_error("zo-hpc: embedding timed out");
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("3-D geometry: ") + e.what());
  } catch (...) {
    throw std::runtime_error("3-D geometry: unknown RDKit error");
  }
  return g;
}

CanonicalOrder canonical_order(rust::Str smiles) {
  auto mol = parse_or_throw(smiles);
  CanonicalOrder out;
  try {
    out.canonical = rust::String(RDKit::MolToSmiles(*mol));
    std::vector<unsigned int> order;
    if (!mol->getPropIfPresent(RDKit::common_properties::_smilesAtomOutputOrder, order) ||
        order.size() != mol->getNumAtoms())
      throw std::runtime_error("no atom output order");
    for (unsigned int i : order) out.order.push_back(static_cast<int32_t>(i));
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string("RDKit could not write canonical SMILES: ") + e.what());
  }
  return out;
}

}  // namespace zo
