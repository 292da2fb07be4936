//! Builds the c10d shim against the libtorch that tch links.
//!
//! torch-sys exports that libtorch's `lib/` folder (`DEP_TCH_LIBTORCH_LIB`,
//! the torch wheel's `torch/lib` with `LIBTORCH_USE_PYTORCH=1`); its headers
//! are in the sibling `include/`. The wheel lacks Gloo's headers, which
//! Debian's `libgloo-dev` supplies (`hack/setup-system.sh`).
//!
//! The NCCL half is a separate shared library, `libhone_dist_nccl.so`,
//! built only when NCCL's and CUDA's headers (with CCCL) are found, and
//! loaded at run time on the first CUDA collective, so the trainer binary
//! never links `libtorch_cuda.so` and CPU images run without it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    for var in ["LIBTORCH_CXX11_ABI", "HONE_DIST_NCCL", "CUDA_HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Some(lib_dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        // torch-sys built with `doc-only` (docs.rs): nothing to link.
        println!("cargo:warning=torch-sys exported no libtorch lib dir; the c10d shim is not built");
        return;
    };
    let root = lib_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| lib_dir.clone());
    let includes = [root.join("include"), root.join("include/torch/csrc/api/include")];
    if !Path::new("/usr/include/gloo/config.h").exists() {
        println!(
            "cargo:warning=gloo headers missing (/usr/include/gloo): run hack/setup-system.sh (libgloo-dev)"
        );
    }
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++20")
        .includes(&includes)
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .file("csrc/hone_dist.cpp");
    build.compile("hone_dist");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    for lib in ["torch_cpu", "c10", "dl"] {
        println!("cargo:rustc-link-lib={lib}");
    }

    let plugin = match nccl_includes(&lib_dir) {
        Some(extra) if std::env::var("HONE_DIST_NCCL").as_deref() != Ok("0") => {
            build_nccl_plugin(&build, &lib_dir, &includes, &extra, &abi)
        }
        _ => None,
    };
    println!(
        "cargo:rustc-env=HONE_DIST_NCCL_PLUGIN={}",
        plugin.map(|p| p.display().to_string()).unwrap_or_default()
    );
}

/// Include folders NCCL's process group needs (nccl.h, the CUDA runtime,
/// CCCL's `nv/target`), from the wheel's `nvidia/*` packages or `CUDA_HOME`.
fn nccl_includes(lib_dir: &Path) -> Option<Vec<PathBuf>> {
    if !lib_dir.join("libtorch_cuda.so").exists() {
        return None;
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    // <site-packages>/torch/lib -> <site-packages>/nvidia/<package>/include
    if let Some(nvidia) = lib_dir.parent().and_then(Path::parent).map(|sp| sp.join("nvidia"))
        && let Ok(entries) = std::fs::read_dir(&nvidia)
    {
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("include")).collect();
        dirs.sort();
        candidates.extend(dirs);
    }
    if let Some(cuda) = std::env::var_os("CUDA_HOME") {
        candidates.push(PathBuf::from(cuda).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    let found = |file: &str| candidates.iter().find(|d| d.join(file).exists()).cloned();
    let mut dirs = Vec::new();
    for file in ["nccl.h", "cuda_runtime_api.h", "crt/host_config.h", "nv/target"] {
        let dir = found(file)?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Some(dirs)
}

/// Compiles `libhone_dist_nccl.so` into OUT_DIR; None (with a warning) when the compiler fails.
fn build_nccl_plugin(
    base: &cc::Build,
    lib_dir: &Path,
    includes: &[PathBuf],
    extra: &[PathBuf],
    abi: &str,
) -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?).join("libhone_dist_nccl.so");
    let mut cmd: Command = base.get_compiler().to_command();
    cmd.args(["-std=c++20", "-shared", "-fPIC", "-w", "-DUSE_C10D_NCCL"])
        .arg(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"));
    for dir in includes.iter().chain(extra) {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("csrc/nccl_plugin.cpp")
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(["-ltorch_cuda", "-ltorch_cpu", "-lc10_cuda", "-lc10"]);
    match cmd.output() {
        Ok(o) if o.status.success() => Some(out),
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let first = stderr.lines().find(|l| l.contains("error")).unwrap_or("unknown error");
            println!("cargo:warning=NCCL plugin not built: {first}");
            None
        }
        Err(e) => {
            println!("cargo:warning=NCCL plugin not built: {e}");
            None
        }
    }
}
