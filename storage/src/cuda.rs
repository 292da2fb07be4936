//! Loading libtorch's CUDA backend at run time.
//!
//! The CUDA kernels live in `libtorch_cuda.so`, which registers them with
//! libtorch's dispatcher when loaded. Nothing in a tch binary references its
//! symbols, so the linker (with `--as-needed`) leaves it out and
//! `tch::Cuda::is_available()` is false even on a GPU machine. Loading it
//! here keeps one binary for both cases: CPU images ship without the CUDA
//! libraries (and this fails quietly), CUDA images and the dev venv have them.
#![allow(unsafe_code)]

/// File name of libtorch's CUDA backend, found through the loader's search path.
const CUDA_BACKEND: &str = "libtorch_cuda.so";

/// Loads the CUDA backend once for the life of the process. An error means
/// the CUDA libraries are not installed, which is normal for CPU images.
pub fn load_backend() -> Result<(), String> {
    // SAFETY: loading runs the library's static initialisers, which only
    // register CUDA kernels with libtorch (already loaded, same version as
    // the one we linked). The library is never unloaded: it is leaked below
    // so the registered kernels stay valid for the whole process.
    let library = unsafe { libloading::Library::new(CUDA_BACKEND) }.map_err(|e| e.to_string())?;
    std::mem::forget(library);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loading_is_harmless_without_a_gpu() {
        // With the venv's CUDA libraries on the search path this loads; on a
        // machine without them it reports an error. Either way libtorch still works.
        let _ = super::load_backend();
        let _ = super::load_backend();
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0]).sum(tch::Kind::Float);
        assert_eq!(t.double_value(&[]), 3.0);
    }
}
