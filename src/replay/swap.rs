//! Putting a rebuilt store in place of the live one, so that a crash at any point leaves a
//! whole store at the configured path: the old one or the new one, never neither.
//!
//! On Linux the two directories are exchanged in one `renameat2(RENAME_EXCHANGE)`, then the
//! old one (now at the rebuild's name) is renamed aside. Where the exchange is not available
//! (another OS, a filesystem that refuses it) the old store is renamed aside and the new one
//! into place: two renames, with a window in which the configured path is empty.

use std::io;
use std::path::{Path, PathBuf};

/// Where a replay started at `stamp` (unix ms) builds its store: beside `live`, named after it.
pub fn rebuild_path(live: &Path, stamp: i64) -> PathBuf {
    sibling(live, &format!("replay-{stamp}"))
}

/// Where the store that a replay started at `stamp` replaced is kept.
pub fn previous_path(live: &Path, stamp: i64) -> PathBuf {
    sibling(live, &format!("before-replay-{stamp}"))
}

fn sibling(live: &Path, suffix: &str) -> PathBuf {
    let name = live
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    live.with_file_name(format!("{name}.{suffix}"))
}

/// How the rebuilt store was put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// Nothing was at the configured path: the rebuilt store was renamed there.
    Installed,
    /// Exchanged atomically with the live store, which was then renamed aside.
    Exchanged,
    /// The live store renamed aside, then the rebuilt one into place (no atomic exchange here).
    TwoRenames,
}

/// Puts `fresh` at `live`; whatever was at `live` ends up at `previous`. Both renames stay in
/// one directory (the names come from [`rebuild_path`] and [`previous_path`]), and the
/// directory is synced so that the new names survive a power loss.
pub fn swap_in(fresh: &Path, live: &Path, previous: &Path) -> io::Result<Swap> {
    let swap = match std::fs::symlink_metadata(live) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::rename(fresh, live)?;
            Swap::Installed
        }
        Err(e) => return Err(e),
        Ok(_) => match exchange(fresh, live) {
            Ok(()) => {
                // The old store is now at `fresh`'s name; the configured path already holds
                // the new one, so a crash before this rename only leaves a misnamed old store.
                std::fs::rename(fresh, previous)?;
                Swap::Exchanged
            }
            Err(e) if exchange_unsupported(&e) => {
                tracing::warn!(error = %e, "No atomic directory exchange here; swapping the store with two renames.");
                std::fs::rename(live, previous)?;
                std::fs::rename(fresh, live)?;
                Swap::TwoRenames
            }
            Err(e) => return Err(e),
        },
    };
    sync_dir(
        live.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    Ok(swap)
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The kernel or the filesystem does not do exchanges (as opposed to a failure of this one).
fn exchange_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(code) if is_unsupported_errno(code))
}

#[cfg(target_os = "linux")]
fn is_unsupported_errno(code: i32) -> bool {
    use rustix::io::Errno;
    [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP]
        .iter()
        .any(|e| e.raw_os_error() == code)
}

#[cfg(not(target_os = "linux"))]
fn is_unsupported_errno(_: i32) -> bool {
    false
}

/// fsync on a directory makes the renames in it durable (POSIX leaves them in the page cache).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_dir(path: &Path, marker: &str) {
        std::fs::create_dir(path).unwrap();
        std::fs::write(path.join("marker"), marker).unwrap();
    }

    fn marker(path: &Path) -> String {
        std::fs::read_to_string(path.join("marker")).unwrap()
    }

    #[test]
    fn names_sit_beside_the_live_store() {
        let live = Path::new("/var/lib/trustgate/store");
        assert_eq!(
            rebuild_path(live, 17),
            Path::new("/var/lib/trustgate/store.replay-17")
        );
        assert_eq!(
            previous_path(live, 17),
            Path::new("/var/lib/trustgate/store.before-replay-17")
        );
        assert_eq!(rebuild_path(Path::new("s"), 3), Path::new("s.replay-3"));
    }

    #[test]
    fn the_new_store_takes_the_path_and_the_old_one_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("store");
        let (fresh, previous) = (rebuild_path(&live, 1), previous_path(&live, 1));
        store_dir(&live, "old");
        store_dir(&fresh, "new");
        let swap = swap_in(&fresh, &live, &previous).unwrap();
        if cfg!(target_os = "linux") {
            // tmpfs and ext4 both exchange; a fallback here would hide a broken exchange.
            assert_eq!(swap, Swap::Exchanged);
        }
        assert_eq!(marker(&live), "new");
        assert_eq!(marker(&previous), "old");
        assert!(!fresh.exists());
    }

    #[test]
    fn with_no_live_store_the_new_one_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("store");
        let (fresh, previous) = (rebuild_path(&live, 2), previous_path(&live, 2));
        store_dir(&fresh, "new");
        assert_eq!(swap_in(&fresh, &live, &previous).unwrap(), Swap::Installed);
        assert_eq!(marker(&live), "new");
        assert!(!previous.exists() && !fresh.exists());
    }

    /// A live "store" that is a file (what a damaged path may hold) is swapped the same way.
    #[test]
    fn a_file_at_the_live_path_is_kept_aside_too() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("store");
        let (fresh, previous) = (rebuild_path(&live, 3), previous_path(&live, 3));
        std::fs::write(&live, "garbage").unwrap();
        store_dir(&fresh, "new");
        swap_in(&fresh, &live, &previous).unwrap();
        assert_eq!(marker(&live), "new");
        assert_eq!(std::fs::read_to_string(&previous).unwrap(), "garbage");
    }

    #[test]
    fn a_missing_rebuild_fails_and_leaves_the_live_store() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("store");
        store_dir(&live, "old");
        let err = swap_in(&rebuild_path(&live, 4), &live, &previous_path(&live, 4));
        assert!(err.is_err());
        assert_eq!(marker(&live), "old");
    }
}
