//! Noticing that files were replaced or rewritten (a Kubernetes Secret volume swaps a symlink,
//! cert-manager rewrites in place), without a watcher thread: compare their metadata.
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::SystemTime;

/// Enough of a file's metadata, followed through symlinks, to notice it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

/// The stamps of `paths`, in order; a missing file is a state of its own (its return is a change).
pub(crate) fn stamps<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<FileStamp> {
    paths
        .into_iter()
        .map(|path| match std::fs::metadata(path) {
            Ok(metadata) => FileStamp {
                modified: metadata.modified().ok(),
                len: metadata.len(),
                inode: metadata.ino(),
                device: metadata.dev(),
            },
            Err(_) => FileStamp {
                modified: None,
                len: u64::MAX,
                inode: 0,
                device: 0,
            },
        })
        .collect()
}
