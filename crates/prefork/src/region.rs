//! The shared stats region: one [`WorkerSlot`] per worker in memory that
//! survives `fork` as *shared*, not copied.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
use service::slot::WorkerSlot;

/// `len` slots in a `MAP_SHARED | MAP_ANONYMOUS` mapping.
///
/// Mapped by the master before it forks, so every worker inherits the same
/// physical pages: a counter a worker bumps is what the master and every
/// other worker read. (A private mapping, or the heap, would be copied on
/// the first write, and each process would see only its own.)
#[derive(Debug)]
pub struct Region {
    slots: NonNull<WorkerSlot>,
    len: usize,
}

// SAFETY: the region holds only atomics, which are designed to be shared;
// the pointer is owned and valid until drop.
unsafe impl Send for Region {}
// SAFETY: as above: `&Region` only hands out `&[WorkerSlot]`, and every slot
// field is an atomic.
unsafe impl Sync for Region {}

impl Region {
    pub fn new(len: usize) -> nix::Result<Self> {
        let bytes = NonZeroUsize::new(len.max(1) * size_of::<WorkerSlot>()).expect("non-zero");
        // SAFETY: a fresh anonymous mapping aliases nothing. The kernel zero
        // fills it, and all-zero bytes are a valid `WorkerSlot` (every field
        // is an integer atomic). mmap returns page-aligned memory, which
        // satisfies the slot's 8-byte alignment.
        let map = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        Ok(Self {
            slots: map.cast(),
            len,
        })
    }
}

/// A `Region` owns its slots the way a `Vec` owns its elements.
impl std::ops::Deref for Region {
    type Target = [WorkerSlot];

    fn deref(&self) -> &[WorkerSlot] {
        // SAFETY: `slots` points at `len` initialised slots (see `new`),
        // mapped until `drop`.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let bytes = self.len.max(1) * size_of::<WorkerSlot>();
        // SAFETY: unmaps exactly what `new` mapped; no borrow of the slots
        // can outlive `self`.
        if let Err(error) = unsafe { munmap(self.slots.cast(), bytes) } {
            tracing::warn!(%error, "munmap of the stats region failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    use super::*;

    /// The property the whole design rests on: a child's write is visible to
    /// the parent.
    #[test]
    fn writes_in_a_child_are_seen_by_the_parent() {
        let region = Region::new(2).unwrap();
        // SAFETY: the child touches only the region and `_exit`s: it runs no
        // code that could depend on other threads of the test harness.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                region[1].requests.store(42, Relaxed);
                // SAFETY: `_exit` ends the child at once, running none of the
                // atexit handlers that could block on a lock another test
                // thread held at the moment of the fork.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
                assert_eq!(region[1].requests.load(Relaxed), 42);
                assert_eq!(region[0].requests.load(Relaxed), 0);
            }
        }
    }
}
