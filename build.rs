//! Build script: compiles the project's C++ bridge to RDKit and makes the binary
//! find libtorch (and the CUDA runtime libraries of the PyTorch wheel) at run time
//! through an rpath, so no one has to export LD_LIBRARY_PATH.
//!
//! Environment: `RDKIT_INCLUDE_DIR` (default /usr/include/rdkit), `RDKIT_LIB_DIR`
//! (default /usr/lib), `BOOST_INCLUDE_DIR` (optional), for clusters with their own RDKit.
use std::path::{Path, PathBuf};

fn main() {
    let rdkit_inc =
        std::env::var("RDKIT_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include/rdkit".into());
    let rdkit_lib = std::env::var("RDKIT_LIB_DIR").unwrap_or_else(|_| "/usr/lib".into());
    let mut b = cxx_build::bridge("src/chem/rdkit_ffi.rs");
    b.file("src/chem/rdkit_shim.cc")
        .include(&rdkit_inc)
        .std("c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations");
    if let Ok(boost) = std::env::var("BOOST_INCLUDE_DIR") {
        b.include(boost);
    }
    b.compile("zo_rdkit_shim");
    println!("cargo:rustc-link-search=native={rdkit_lib}");
    for lib in [
        "RDKitSmilesParse",
        "RDKitGraphMol",
        "RDKitRDGeneral",
        // 3-D geometries (ETKDG embedding, MMFF/UFF) for the physics source
        "RDKitDistGeomHelpers",
        "RDKitDepictor",
        "RDKitDistGeometry",
        "RDKitForceFieldHelpers",
        "RDKitForceField",
        "RDKitAlignment",
        "RDKitSubstructMatch",
        "RDKitOptimizer",
        "RDKitEigenSolvers",
        "RDKitRDGeometryLib",
        "RDKitDataStructs",
        "RDKitTrajectory",
    ] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{rdkit_lib}");
    for f in [
        "src/chem/rdkit_ffi.rs",
        "src/chem/rdkit_shim.cc",
        "src/chem/rdkit_shim.h",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    commit();
    println!("cargo:rerun-if-env-changed=RDKIT_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=RDKIT_LIB_DIR");

    // torch-sys exports the libtorch folder it linked against as DEP_TCH_LIBTORCH_LIB.
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        let cuda_dirs = cuda_lib_dirs(Path::new(&lib));
        for dir in &cuda_dirs {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
        // libtorch_cuda registers the CUDA backend when loaded, but nothing refers to
        // it by symbol, so --as-needed would drop it. Keep it when CUDA is wanted:
        // ZO_CUDA=1, or a full torch wheel (its cuDNN present) without ZO_CUDA=0.
        let has_torch_cuda = Path::new(&lib).join("libtorch_cuda.so").exists();
        let full_wheel = cuda_dirs
            .iter()
            .any(|d| d.to_string_lossy().contains("cudnn"));
        let want = match std::env::var("ZO_CUDA").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => full_wheel,
        };
        if has_torch_cuda && want {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    println!("cargo:rerun-if-env-changed=ZO_CUDA");
}

/// The CUDA runtime folders that a PyTorch wheel's libtorch_cpu needs (site-packages/nvidia/*/lib).
fn cuda_lib_dirs(torch_lib: &Path) -> Vec<PathBuf> {
    let Some(site) = torch_lib.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(site.join("nvidia")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("lib"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The git commit the binary is built from (`ZO_HPC_COMMIT`, written into every
/// output file so that a figure names the code behind it); "unknown" outside git.
/// Rebuilt when HEAD moves (a commit, a checkout).
fn commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let id = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ZO_HPC_COMMIT={id}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let common = git(&["rev-parse", "--git-common-dir"]).unwrap_or_default();
            let p = Path::new(&common).join(r);
            if p.is_file() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}
