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
    for lib in ["RDKitSmilesParse", "RDKitGraphMol", "RDKitRDGeneral"] {
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
    println!("cargo:rerun-if-env-changed=RDKIT_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=RDKIT_LIB_DIR");

    // torch-sys exports the libtorch folder it linked against as DEP_TCH_LIBTORCH_LIB.
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        for dir in cuda_lib_dirs(Path::new(&lib)) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
    }
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
