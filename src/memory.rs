//! How the process asks the C allocator for memory: three settings made once
//! at start, before any thread exists, and giving free heap memory back to
//! the system once a wave of connections has gone.

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

/// Small frees go to glibc's per-thread cache first and, past its seven
/// chunks per size, to the "fast bins", which are merged back into the heap
/// (`malloc_consolidate`, a walk of every fast bin) before each allocation
/// of 1 KiB and up; the request path makes several of those per request
/// (read and write buffers, TLS records), so the fast bins were filled and
/// emptied all the time. Without them (a limit of 0), an overflowing small
/// free goes straight to the ordinary bins. Measured with bench/run.sh
/// (pinned, HTTP/1.1 and HTTP/2, bench/RESULTS.md "Issue 12,
/// fifth round"): CPU per HTTP/1.1 request 13-19 % lower against the same
/// run's nginx in each of three pairs, RSS unchanged.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MAX_FAST: libc::c_int = 0;

/// Applies the allocator settings above (true when they took, or do not
/// apply here). Call before any thread starts.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc parameters; it is called
        // before any other thread exists. M_MMAP_THRESHOLD takes any value
        // up to HEAP_MAX (32 MiB on 64-bit), which 128 KiB is below;
        // M_TRIM_THRESHOLD takes any value; M_MXFAST any value up to 160
        // bytes on 64-bit, 0 included.
        #[allow(unsafe_code)]
        let applied = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_MXFAST, MAX_FAST) == 1
        };
        applied
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    true
}

/// Decides when free heap memory is worth giving back: once connections
/// were accepted since the last release and either the last one closed, or
/// the open ones fell to half of the most seen (by at least
/// [`RELEASE_AFTER_CLOSED`] new ones). Under steady load the freed memory
/// is about to be reused, and giving it back would only make the request
/// path fault it in again; once a wave of connections is over, glibc keeps
/// their buffers' pages resident (free chunks in the middle of a heap are
/// never trimmed) until asked. Sampled, so the count of accepted
/// connections, not the samples, tells whether a wave came and went.
#[derive(Debug, Default)]
pub struct ReleasePolicy {
    most_open: u64,
    accepted_at_release: u64,
}

/// Fewer new connections than this are not worth a pass over the heaps
/// while others stay open.
const RELEASE_AFTER_CLOSED: u64 = 32;

impl ReleasePolicy {
    /// Called at each sample with the connections open now and accepted
    /// since the start: true when free memory should be given back now.
    pub fn release_now(&mut self, open: u64, accepted: u64) -> bool {
        let new = accepted.saturating_sub(self.accepted_at_release);
        self.most_open = self.most_open.max(open);
        if new == 0 {
            return false;
        }
        let wave_over = new >= RELEASE_AFTER_CLOSED && open <= self.most_open / 2;
        if open == 0 || wave_over {
            self.most_open = open;
            self.accepted_at_release = accepted;
            return true;
        }
        false
    }
}

/// Gives the free pages of every heap back to the system (`malloc_trim`).
/// Walks every arena under its lock: run it off the request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free memory to the system; it is
        // thread-safe (it takes each arena's lock) and its argument is the
        // padding to keep, 0 for none.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_released_once_a_wave_of_connections_is_over() {
        let mut policy = ReleasePolicy::default();
        assert!(!policy.release_now(0, 0), "nothing happened");
        assert!(!policy.release_now(64, 64), "the wave is on");
        assert!(!policy.release_now(40, 100), "a third down: still busy");
        assert!(policy.release_now(10, 120), "below half of the most");
        assert!(
            !policy.release_now(12, 125),
            "five new ones are not worth it"
        );
        assert!(!policy.release_now(5000, 6000));
        assert!(policy.release_now(100, 6100), "the next wave ended");
    }

    #[test]
    fn steady_load_is_left_alone() {
        let mut policy = ReleasePolicy::default();
        assert!(!policy.release_now(64, 64));
        for tick in 1..10 {
            // The same 64 long-lived connections, or 64 at a time replaced.
            assert!(!policy.release_now(64, 64));
            assert!(!policy.release_now(64, 64 + tick * 500));
        }
    }

    #[test]
    fn a_wave_between_two_samples_is_seen_by_its_count() {
        let mut policy = ReleasePolicy::default();
        assert!(!policy.release_now(3, 3));
        // Thousands came and went between samples; none is open now.
        assert!(policy.release_now(0, 9000));
        assert!(!policy.release_now(0, 9000), "still quiet: nothing new");
        assert!(policy.release_now(0, 9001), "one more came and went");
    }
}
