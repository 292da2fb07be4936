//! The shim's C ABI (`csrc/hone_dist.h`) and the only unsafe code of the
//! crate: each call checks its result and turns the shim's error string
//! into a Rust `String`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;

#[repr(C)]
struct HoneDist {
    _opaque: [u8; 0],
}

unsafe extern "C" {
    fn hone_dist_init(
        addr: *const c_char,
        port: u16,
        world: c_int,
        rank: c_int,
        timeout_ms: i64,
        nccl_plugin: *const c_char,
        err: *mut *mut c_char,
    ) -> *mut HoneDist;
    fn hone_dist_broadcast(
        dist: *mut HoneDist,
        tensors: *const *const c_void,
        n: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    fn hone_dist_all_reduce(
        dist: *mut HoneDist,
        tensors: *const *const c_void,
        n: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    fn hone_dist_barrier(dist: *mut HoneDist, err: *mut *mut c_char) -> c_int;
    fn hone_dist_destroy(dist: *mut HoneDist);
    fn hone_dist_free_error(err: *mut c_char);
}

/// Takes ownership of a message the shim returned.
fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error (no message)".to_owned();
    }
    // SAFETY: a non-null `err` is a NUL-terminated string the shim
    // malloc'ed for us; it is read once and freed with the shim's free.
    unsafe {
        let message = CStr::from_ptr(err).to_string_lossy().into_owned();
        hone_dist_free_error(err);
        message
    }
}

/// An owned `HoneDist*`; destroyed on drop.
pub(crate) struct Handle(NonNull<HoneDist>);

pub(crate) fn init(
    addr: &CString,
    port: u16,
    world: i32,
    rank: i32,
    timeout_ms: i64,
    nccl_plugin: &CString,
) -> Result<Handle, String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: both strings are NUL-terminated and outlive the call; `err`
    // is a valid out-pointer. The shim catches every C++ exception.
    let raw = unsafe {
        hone_dist_init(addr.as_ptr(), port, world, rank, timeout_ms, nccl_plugin.as_ptr(), &mut err)
    };
    NonNull::new(raw).map(Handle).ok_or_else(|| take_error(err))
}

impl Handle {
    pub(crate) fn broadcast(&self, tensors: &[*const c_void]) -> Result<(), String> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: the handle is live (owned by self); every pointer is the
        // `at::Tensor*` of a tch tensor the caller borrows for the call;
        // the shim copies the handles and only writes the tensors' data.
        let rc = unsafe { hone_dist_broadcast(self.0.as_ptr(), tensors.as_ptr(), tensors.len(), &mut err) };
        if rc == 0 { Ok(()) } else { Err(take_error(err)) }
    }

    pub(crate) fn all_reduce(&self, tensors: &[*const c_void]) -> Result<(), String> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: as in `broadcast`.
        let rc = unsafe { hone_dist_all_reduce(self.0.as_ptr(), tensors.as_ptr(), tensors.len(), &mut err) };
        if rc == 0 { Ok(()) } else { Err(take_error(err)) }
    }

    pub(crate) fn barrier(&self) -> Result<(), String> {
        let mut err: *mut c_char = std::ptr::null_mut();
        // SAFETY: the handle is live; `err` is a valid out-pointer.
        let rc = unsafe { hone_dist_barrier(self.0.as_ptr(), &mut err) };
        if rc == 0 { Ok(()) } else { Err(take_error(err)) }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from `hone_dist_init`, is owned by self and
        // destroyed exactly once, here.
        unsafe { hone_dist_destroy(self.0.as_ptr()) }
    }
}
