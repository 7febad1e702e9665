//! The faults behind `POST /crash?how=...`.
//!
//! Each one really happens to the code that runs it; what that does to the
//! process is exactly the lesson. [`CrashMode::Exit`] is the one mode whose
//! meaning depends on the model (end the process, or end the pool thread), so
//! the models handle it themselves and never call [`trigger`] with it.

pub use crate::contract::CrashMode;

/// Makes the fault happen on the calling thread. Returns only for
/// [`CrashMode::Exit`], which the caller must interpret.
pub fn trigger(mode: CrashMode) {
    tracing::warn!(?mode, "crashing on request");
    match mode {
        CrashMode::Panic => panic!("POST /crash?how=panic"),
        CrashMode::Abort => std::process::abort(),
        CrashMode::Segv => segfault(),
        CrashMode::Hang => loop {
            std::hint::spin_loop();
        },
        CrashMode::Exit => {}
    }
}

/// Writes to a page mapped with no access rights, which the MMU refuses: a
/// genuine SIGSEGV, without the undefined behaviour of dereferencing null.
fn segfault() -> ! {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
    let len = std::num::NonZeroUsize::new(4096).expect("non-zero");
    // SAFETY: a fresh private anonymous mapping aliases nothing.
    let page = unsafe {
        mmap_anonymous(None, len, ProtFlags::PROT_NONE, MapFlags::MAP_PRIVATE)
            .expect("mmap of one page")
    };
    // SAFETY: not safe, and that is the point: the write faults before it can
    // touch anything, and the default SIGSEGV action ends the process.
    unsafe { page.cast::<u8>().as_ptr().write_volatile(1) };
    unreachable!("a write to a PROT_NONE page returned")
}
