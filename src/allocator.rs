//! The process's allocators: mimalloc for everything Rust allocates, glibc's malloc for
//! librdkafka (C code calls it directly), and giving freed memory back to the system once a
//! catch-up is over.
//!
//! Measured in #11 (BENCHMARKS.md, seventh pass): in a 1M-device catch-up on glibc's malloc,
//! `_int_malloc`, `malloc_consolidate` and `free` were ~40 % of the ingest thread (sled
//! allocates and frees a page version per write, in every size); on mimalloc the same catch-up
//! ran 1.85× as fast (15.3k → 28.3k records/s) and a restart's index rebuild ~20 % faster.
//!
//! glibc still serves librdkafka's buffers (its fetch queue holds up to
//! `queued.max.messages.kbytes` of records during a catch-up). glibc keeps one arena per thread
//! that allocated (up to 8 per core), each holding on to its freed memory, so the arenas are
//! capped at two. What both allocators hold free at the end of a catch-up is returned (
//! `mi_collect`, `malloc_trim`): the memory a caught-up instance holds is then what it uses,
//! not what its catch-up once needed.
//!
//! Elsewhere than glibc (musl, macOS) the glibc parts are no-ops.

// mimalloc is the global allocator of the `trustgate` binary (`src/bin/trustgate/main.rs`) and
// of the benches (so that they measure what runs): declared there, not here, since a library
// that declared one would impose it on every program linking it (the fuzz test meters
// allocations with its own). sled's write path allocates and frees a copy of a tree node for
// every key it writes; mimalloc's per-thread free lists make that cheap where glibc's bins
// were not.

/// Arenas glibc may create: two, on any machine. Only librdkafka's threads allocate there now,
/// so more arenas buy little but held memory.
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

/// Returns the memory both allocators hold free to the system (`mi_collect(true)`, then
/// glibc's `malloc_trim(0)`), and says how much resident memory that gave back, in bytes (0
/// where it cannot tell). Takes milliseconds per GiB of heap; meant for rare points such as the
/// end of a catch-up.
pub fn release_free_memory() -> u64 {
    let before = resident_bytes();
    // SAFETY: mi_collect only walks mimalloc's own structures (this thread's heap, and the
    // abandoned pages it may reclaim); callable from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim walks glibc's own free lists under its locks; it is safe to call
    // from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    before.saturating_sub(resident_bytes())
}

/// The process's resident memory, from `/proc/self/statm` (0 if unreadable, as off Linux).
pub fn resident_bytes() -> u64 {
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
    const BLOCK: usize = 64 * 1024;

    /// Both tests read the whole process's resident memory: one at a time, so that one's
    /// release is not counted as the other's.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// What the binary's allocator holds free is returned. mimalloc gives a freed page back only
    /// after a delay, and only at its next call: blocks allocated from mimalloc directly (the
    /// test harness's own allocator is the system's), all freed, are returned by the release.
    #[test]
    #[cfg(target_os = "linux")]
    fn freed_mimalloc_memory_is_returned() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: mi_malloc/mi_free pairs of blocks this test owns; each is written within its
        // size and freed once.
        let blocks: Vec<*mut u8> = (0..1024)
            .map(|i| unsafe {
                let p = libmimalloc_sys::mi_malloc(BLOCK).cast::<u8>();
                assert!(!p.is_null());
                std::ptr::write_bytes(p, i as u8, BLOCK);
                p
            })
            .collect();
        for block in &blocks {
            unsafe { libmimalloc_sys::mi_free(block.cast()) };
        }
        let released = super::release_free_memory();
        assert!(
            released >= 16 << 20,
            "{released} bytes returned of 64 MiB freed"
        );
    }

    /// librdkafka's buffers come from glibc's malloc, which the release trims: blocks allocated
    /// with `libc::malloc` directly (as C code does), every other one freed, leaving holes
    /// between live blocks that `free` cannot give back (it only shrinks a heap from its top).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_glibc_memory_is_returned() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: plain malloc/free pairs of blocks this test owns; each is written within its
        // size and freed once.
        let blocks: Vec<*mut libc::c_void> = (0..1024)
            .map(|_| unsafe {
                let p = libc::malloc(BLOCK);
                assert!(!p.is_null());
                libc::memset(p, 1, BLOCK);
                p
            })
            .collect();
        for hole in blocks.iter().skip(1).step_by(2) {
            unsafe { libc::free(*hole) };
        }
        let released = super::release_free_memory();
        for live in blocks.iter().step_by(2) {
            unsafe { libc::free(*live) };
        }
        assert!(
            released >= 8 << 20,
            "{released} bytes returned of 32 MiB of holes"
        );
    }
}
