//! The process's use of glibc's allocator: how many arenas it may keep, and giving freed
//! memory back to the system once a catch-up is over.
//!
//! Measured in #11 (BENCHMARKS.md): a catch-up of a large fleet allocates and frees a lot
//! (sled's copy-on-write page versions, each chunk's decoded records) on several threads, and
//! glibc keeps one arena per thread that allocated (up to 8 per core), each holding on to its
//! freed memory. The ingesting process kept 2.4–3.9× the resident memory of the same store
//! reopened; capping the arenas at two cut ~100 MiB of that at 100k devices. What is freed
//! at the end of a catch-up is returned with `malloc_trim`: the memory a caught-up instance
//! holds is then what it uses, not what its catch-up once needed.
//!
//! Elsewhere than glibc (musl, macOS) both are no-ops.

/// Arenas glibc may create: two, on any machine. Decisions are served from one index under
/// a read lock and ingest writes on one thread, so more arenas buy little but held memory.
const MAX_ARENAS: i32 = 2;

/// Caps glibc's arenas at [`MAX_ARENAS`]. Call first thing in `main`, before any thread
/// allocates (an arena already made stays). `MALLOC_ARENA_MAX` in the environment still wins:
/// ops can raise (or lower) it without a rebuild.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tuning parameter; it is called before other threads
        // exist, and an unknown or refused value is reported by its return value, not UB.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
        }
    }
}

/// Returns the memory the allocator holds free to the system (`malloc_trim(0)`), and says how
/// much resident memory that gave back, in bytes (0 where it cannot tell). Takes a few
/// milliseconds per GiB of heap; meant for rare points such as the end of a catch-up.
pub fn release_free_memory() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let before = resident_bytes();
        // SAFETY: malloc_trim walks glibc's own free lists under its locks; it is safe to call
        // from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
        before.saturating_sub(resident_bytes())
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// The process's resident memory, from `/proc/self/statm` (0 if unreadable).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    /// Freed memory the allocator cannot give back by itself is returned: every other 64 KiB
    /// block is freed, leaving holes between live blocks (free() only shrinks a heap from its
    /// top), and `malloc_trim` returns the holes' pages.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_heap_memory_is_returned() {
        // Under glibc's mmap threshold (128 KiB), so they live in an arena's heap.
        const BLOCK: usize = 64 * 1024;
        let mut blocks: Vec<Option<Vec<u8>>> =
            (0..1024).map(|i| Some(vec![i as u8; BLOCK])).collect();
        for hole in blocks.iter_mut().skip(1).step_by(2) {
            *hole = None;
        }
        let released = super::release_free_memory();
        assert!(
            released >= 8 << 20,
            "{released} bytes returned of 32 MiB of holes"
        );
        assert!(blocks.iter().flatten().all(|b| b.len() == BLOCK));
    }
}
