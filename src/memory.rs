//! How the process asks the C allocator for memory. One setting, made once
//! at start, before any thread exists.

/// Allocations from this size up get a mapping of their own, returned to the
/// system when freed. glibc's default is the same size, but glibc raises it
/// to the size of each such block freed (up to 32 MiB): after the first
/// password hash, argon2's ~19 MiB working memory comes from the hashing
/// threads' heaps instead and stays resident for good, one copy per thread
/// and fragmented by whatever lands beside it. Fixing the threshold turns
/// that adjustment off. Measured with `bench/soak.sh` (1 minute): idle RSS
/// after a login 34 MiB → 15 MiB, peak under account churn 137 MiB → 39 MiB;
/// each hash then maps and unmaps its memory, ~5 k page faults, under 1 ms
/// beside a hash of 20-50 ms.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Applies the allocator settings above (true when they took, or do not
/// apply here). Call before any thread starts.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes a malloc parameter; it is called
        // before any other thread exists, and M_MMAP_THRESHOLD takes any
        // value up to HEAP_MAX (32 MiB on 64-bit), which 128 KiB is below.
        #[allow(unsafe_code)]
        let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        applied == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    true
}
