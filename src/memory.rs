//! How the process asks the C allocator for memory. Two settings, made once
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

/// Free memory at the top of a heap beyond this is given back. Fixing the
/// mmap threshold also fixes this one at its 128 KiB default, which made
/// the request path give memory back and fault it in again every ~40
/// requests (one `madvise` per 40 HTTP/2 requests under `strace -c`); 4 MiB
/// stops that (none in 40 000 requests) at no cost to idle RSS (18.6 MiB
/// either way after the same load).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 4 * 1024 * 1024;

/// Applies the allocator settings above (true when they took, or do not
/// apply here). Call before any thread starts.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc parameters; it is called
        // before any other thread exists. M_MMAP_THRESHOLD takes any value
        // up to HEAP_MAX (32 MiB on 64-bit), which 128 KiB is below;
        // M_TRIM_THRESHOLD takes any value.
        #[allow(unsafe_code)]
        let applied = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        };
        applied
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    true
}
