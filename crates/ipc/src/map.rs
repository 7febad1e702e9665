//! A shared mapping of a descriptor (a memfd), unmapped on drop.

use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use crate::IpcError;

/// `len` bytes of a descriptor, mapped `MAP_SHARED` at offset 0.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd`, readable, and writable if `write`.
    pub fn new(fd: impl AsFd, len: usize, write: bool) -> Result<Mapping, IpcError> {
        let size = NonZeroUsize::new(len).ok_or(IpcError::Bad("an empty mapping".into()))?;
        let prot = if write {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (no address given),
        // so it overlaps nothing of ours; it is unmapped only by drop.
        let ptr = unsafe { mmap(None, size, prot, MapFlags::MAP_SHARED, fd, 0) }.map_err(|e| {
            IpcError::Io {
                what: format!("mapping {len} bytes"),
                source: e.into(),
            }
        })?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are the mapping `new` made, unmapped
        // nowhere else; no reference into it outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}
