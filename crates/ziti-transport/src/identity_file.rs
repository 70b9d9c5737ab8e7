//! The identity on disk: a private temp directory (0700) holding at most one
//! `ziti-identity-*.json` (0600), because the overlay SDK loads identities from a file.
//!
//! The file is written only after the JSON has been checked, erased as soon as its
//! lease is retired, replaced (old one erased) on re-enrollment, and removed with its
//! directory when the store is dropped: on a normal shutdown, an error return and a
//! panic alike. A SIGKILL leaves them behind: the directory's name records its owner
//! (see [`owner`]) so that the next gateway can erase them.

mod owner;

use std::fs::Permissions;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use domain::{IdentityId, IdentityJson};
use tempfile::{NamedTempFile, TempDir};
use thiserror::Error;

pub use owner::{AbandonedDirs, ErasedDir};

/// Why an identity could not be checked or stored. Names what is wrong, never what the
/// identity holds.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityFileError {
    /// The private directory for identity files cannot be created.
    #[error("cannot create a private directory for the identity")]
    Directory(#[source] io::Error),
    /// The identity file cannot be written.
    #[error("cannot write the identity file in {dir}")]
    Write { dir: PathBuf, source: io::Error },
    /// What names a directory's owner (start time, pid namespace, boot id, uid) cannot be
    /// read from `/proc`.
    #[error("cannot read from /proc who this process is (start time, pid namespace, boot id, uid)")]
    Owner(#[source] io::Error),
    /// The parent of the identity directories cannot be listed.
    #[error("cannot look for abandoned identity directories in {dir}")]
    Scan { dir: PathBuf, source: io::Error },
    /// An abandoned identity directory cannot be erased.
    #[error("cannot erase the abandoned identity directory {dir}")]
    Erase { dir: PathBuf, source: io::Error },
}

/// Holds the current identity file; dropping it erases everything it wrote.
#[derive(Debug)]
pub struct IdentityFileStore {
    // Field order matters: the file is dropped (removed) before its directory.
    current: Mutex<Option<(IdentityId, NamedTempFile)>>,
    dir: TempDir,
}

impl IdentityFileStore {
    /// Creates the private directory under the system temp dir (`TMPDIR`).
    pub fn new() -> Result<Self, IdentityFileError> {
        Self::new_in(std::env::temp_dir())
    }

    /// Creates the private directory under `parent`, its name recording this process
    /// as its owner.
    pub fn new_in(parent: impl AsRef<Path>) -> Result<Self, IdentityFileError> {
        let owner = owner::Owner::current().map_err(IdentityFileError::Owner)?;
        let dir = tempfile::Builder::new()
            .prefix(&owner.dir_prefix())
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(IdentityFileError::Directory)?;
        Ok(Self { current: Mutex::new(None), dir })
    }

    /// Erases the `ziti-gateway-*` directories in `parent` (with their identity files)
    /// left by gateways of this user that are no longer running; never a running one's,
    /// nor one it cannot judge (no owner in its name, or made in another pid namespace,
    /// boot or host), which it logs at warn. Symlinks are not followed. Call it before
    /// [`Self::new_in`], at start-up.
    pub fn erase_abandoned(parent: &Path) -> Result<AbandonedDirs, IdentityFileError> {
        owner::erase_abandoned(parent)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of the identity file in use, if any.
    pub fn current_path(&self) -> Option<PathBuf> {
        self.lock().as_ref().map(|(_, file)| file.path().to_path_buf())
    }

    /// Writes `identity` (checked by whoever hands it over) to a new 0600 file and
    /// returns its path. The previous file stays until [`Self::commit`] or
    /// [`Self::discard`].
    pub fn stage(&self, identity: &IdentityJson) -> Result<StagedIdentity, IdentityFileError> {
        let write_error = |source| IdentityFileError::Write { dir: self.dir.path().to_path_buf(), source };
        let mut file = tempfile::Builder::new()
            .prefix("ziti-identity-")
            .suffix(".json")
            .permissions(Permissions::from_mode(0o600))
            .tempfile_in(self.dir.path())
            .map_err(write_error)?;
        file.write_all(identity.as_bytes()).and_then(|()| file.as_file().sync_all()).map_err(write_error)?;
        Ok(StagedIdentity { file })
    }

    /// Makes a staged file the current one, the identity of lease `id`, and erases the
    /// one it replaces.
    pub fn commit(&self, staged: StagedIdentity, id: IdentityId) {
        let previous = self.lock().replace((id, staged.file));
        drop(previous);
    }

    /// Erases the current file if it is lease `id`'s; returns whether it was.
    pub fn retire(&self, id: &IdentityId) -> bool {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|(held, _)| held == id) {
            drop(current.take());
            return true;
        }
        false
    }

    /// Erases the current file, whoever's it is.
    pub fn clear(&self) {
        let previous = self.lock().take();
        drop(previous);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(IdentityId, NamedTempFile)>> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Erases the current file and the directory now, through a shared handle (at
    /// shutdown); nothing may be staged afterwards. Dropping the store would too,
    /// silently.
    pub fn remove_dir(&self) -> io::Result<()> {
        if let Some((_, file)) = self.lock().take() {
            file.close()?;
        }
        match std::fs::remove_dir_all(self.dir.path()) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Removes everything now, reporting failures (dropping does the same silently).
    pub fn remove(self) -> io::Result<()> {
        if let Some((_, file)) = self.lock().take() {
            file.close()?;
        }
        self.dir.close()
    }
}

/// A checked identity written to disk, not yet in use; removed if dropped.
#[derive(Debug)]
pub struct StagedIdentity {
    file: NamedTempFile,
}

impl StagedIdentity {
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const VALID: &str =
        r#"{"ztAPI":"https://ctrl:1280/edge/client/v1","id":{"cert":"pem:C","key":"pem:SECRETKEY","ca":"pem:A"}}"#;

    fn lease(id: &str) -> IdentityId {
        IdentityId::new(id)
    }

    #[test]
    fn retiring_erases_only_the_named_lease_file() {
        let parent = tempfile::tempdir().expect("tempdir");
        let store = IdentityFileStore::new_in(parent.path()).expect("store");
        let staged = store.stage(&IdentityJson::new(VALID.as_bytes().to_vec())).expect("stage");
        let path = staged.path().to_path_buf();
        store.commit(staged, lease("lease-2"));
        assert!(!store.retire(&lease("lease-1")), "an older lease is not the one in use");
        assert!(exists(&path));
        assert!(store.retire(&lease("lease-2")));
        assert!(!exists(&path));
        assert_eq!(store.current_path(), None);
        assert!(exists(store.dir()), "the directory stays for the next identity");
    }

    fn exists(path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn staged_file_is_private_and_holds_exactly_the_bytes() {
        let parent = tempfile::tempdir().expect("tempdir");
        let store = IdentityFileStore::new_in(parent.path()).expect("store");
        let staged = store.stage(&IdentityJson::new(VALID.as_bytes().to_vec())).expect("stage");
        let path = staged.path().to_path_buf();
        store.commit(staged, lease("lease-1"));
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read(&path).expect("read"), VALID.as_bytes());
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with("ziti-identity-") && name.ends_with(".json"), "{name}");
        assert_eq!(store.current_path(), Some(path));
    }

    #[test]
    fn commit_replaces_and_erases_the_previous_file() {
        let parent = tempfile::tempdir().expect("tempdir");
        let store = IdentityFileStore::new_in(parent.path()).expect("store");
        let first = store.stage(&IdentityJson::new(VALID.as_bytes().to_vec())).expect("stage");
        let first_path = first.path().to_path_buf();
        store.commit(first, lease("lease-1"));
        let second = store.stage(&IdentityJson::new(VALID.as_bytes().to_vec())).expect("stage");
        let second_path = second.path().to_path_buf();
        assert!(exists(&first_path), "old file stays until the new one is committed");
        store.commit(second, lease("lease-2"));
        assert!(!exists(&first_path));
        assert!(exists(&second_path));
    }

    #[test]
    fn dropping_the_store_removes_file_and_directory() {
        let parent = tempfile::tempdir().expect("tempdir");
        let store = IdentityFileStore::new_in(parent.path()).expect("store");
        let staged = store.stage(&IdentityJson::new(VALID.as_bytes().to_vec())).expect("stage");
        let path = staged.path().to_path_buf();
        store.commit(staged, lease("lease-1"));
        let dir = store.dir().to_path_buf();
        drop(store);
        assert!(!exists(&path) && !exists(&dir));
    }

    #[test]
    fn a_discarded_stage_leaves_nothing() {
        let parent = tempfile::tempdir().expect("tempdir");
        let store = IdentityFileStore::new_in(parent.path()).expect("store");
        let staged = store.stage(&IdentityJson::new(VALID.as_bytes().to_vec())).expect("stage");
        let path = staged.path().to_path_buf();
        drop(staged);
        assert!(!exists(&path));
        assert_eq!(fs::read_dir(store.dir()).expect("dir").count(), 0);
    }
}
