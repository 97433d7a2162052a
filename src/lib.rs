//! Code that takes a process down on purpose, one way per function: the
//! `buggy` module of the examples and the end-to-end tests.
//!
//! Every function here is meant to run in an isolated child. Called in a
//! process of its own, each one ends that process the way its name says.

pub mod buggy {
    //! The Rust counterpart of the `buggy.py` of the Python library the
    //! project grew from: functions that crash, each in its own way.

    use std::hint::black_box;

    /// Writes through a null pointer: SIGSEGV at address 0x0.
    pub fn dragons_here() {
        // SAFETY: none: the write faults on purpose, and the fault ends the
        // process before anything could observe it.
        unsafe { black_box(std::ptr::null_mut::<u64>()).write_volatile(42) };
    }

    /// Recurses until the stack runs out: a stack overflow (SIGSEGV at the
    /// stack's edge).
    pub fn overflow_stack(depth: u64) -> u64 {
        if depth == u64::MAX {
            return 0;
        }
        let frame = black_box([depth; 64]);
        overflow_stack(depth + 1) + frame[depth as usize % 64]
    }

    /// Aborts: SIGABRT.
    pub fn abort() {
        std::process::abort();
    }

    /// Executes an illegal instruction: SIGILL.
    pub fn illegal_instruction() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: none: `ud2` raises SIGILL on purpose.
        unsafe {
            std::arch::asm!("ud2")
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: none: `udf` raises SIGILL on purpose.
        unsafe {
            std::arch::asm!("udf #0")
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        raise(libc::SIGILL);
    }

    /// Divides by zero in hardware: SIGFPE (where the CPU traps on it).
    pub fn divide_by_zero() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: none: `div` by zero raises SIGFPE on purpose; the
        // registers it clobbers are declared.
        unsafe {
            std::arch::asm!(
                "xor edx, edx",
                "div ecx",
                in("ecx") black_box(0_u32),
                inout("eax") 1_u32 => _,
                out("edx") _,
            )
        };
        #[cfg(not(target_arch = "x86_64"))]
        raise(libc::SIGFPE);
    }

    /// Touches a page of a mapping past the end of its file: SIGBUS.
    pub fn bus_error() {
        // SAFETY: none: the access past the end of the empty memfd faults
        // on purpose. The calls themselves get valid arguments.
        unsafe {
            let fd = libc::memfd_create(c"bus".as_ptr(), 0);
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            black_box(page.cast::<u8>()).write_volatile(1);
        }
    }

    /// Sends `signal` to the calling process.
    pub fn raise(signal: i32) {
        // SAFETY: raise takes any signal number; an invalid one fails.
        unsafe { libc::raise(signal) };
    }

    /// Exits the process with `code` in the middle of the call, running
    /// exit handlers as `std::process::exit` does.
    pub fn exit(code: i32) {
        std::process::exit(code);
    }

    /// Allocates `bytes` and touches them.
    pub fn allocate(bytes: usize) -> usize {
        let block = vec![1_u8; bytes];
        black_box(block).len()
    }
}
