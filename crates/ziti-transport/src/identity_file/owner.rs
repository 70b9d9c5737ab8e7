//! Who owns an identity directory, and erasing the directories of gateways that are
//! gone (a SIGKILL leaves its directory and key file behind).
//!
//! The owner is stamped into the directory's name by the one `mkdir` that creates it,
//! so a live gateway's directory never lacks its owner:
//! `ziti-gateway-<pid>-<start time>-<pid namespace>-<boot id>-<random>`. The start
//! time (`/proc/<pid>/stat` field 22) tells a recycled pid from the owner. The pid
//! namespace and boot id tell whether the pid means anything here: a directory made in
//! another container sharing the volume, on another host (a network filesystem) or
//! before a reboot cannot be judged from here, and is left alone.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::IdentityFileError;

/// The name every identity directory starts with.
pub(super) const DIR_PREFIX: &str = "ziti-gateway-";

/// `ESRCH`: reading `/proc/<pid>/stat` of a process that exits meanwhile.
const NO_SUCH_PROCESS: i32 = 3;

/// What [`super::IdentityFileStore::erase_abandoned`] found.
#[derive(Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AbandonedDirs {
    /// Erased, with their key files: the gateway that made them is no longer running.
    pub erased: Vec<ErasedDir>,
    /// Left alone, each logged at warn: no owner in the name (an older gateway's), or an
    /// owner this process cannot judge (another boot, host or pid namespace).
    pub left: Vec<PathBuf>,
}

/// A directory erased because its gateway is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasedDir {
    /// The directory erased.
    pub path: PathBuf,
    /// The pid of the gateway that made it.
    pub pid: u32,
}

/// The process a directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pid: u32,
    /// Clock ticks after boot.
    start: u64,
    /// The inode of the pid namespace.
    pid_namespace: u64,
    /// `/proc/sys/kernel/random/boot_id` without its dashes.
    boot_id: String,
}

impl Owner {
    /// This process.
    pub(super) fn current() -> io::Result<Self> {
        let pid = std::process::id();
        match process(pid)? {
            Process::Running { start } => Ok(Self { pid, start, pid_namespace: pid_namespace()?, boot_id: boot_id()? }),
            Process::Gone => Err(io::Error::other("/proc does not show this process")),
        }
    }

    /// The directory name up to its random part.
    pub(super) fn dir_prefix(&self) -> String {
        format!("{DIR_PREFIX}{}-{}-{}-{}-", self.pid, self.start, self.pid_namespace, self.boot_id)
    }

    fn from_dir_name(name: &str) -> Option<Self> {
        let mut fields = name.strip_prefix(DIR_PREFIX)?.splitn(5, '-');
        let pid = fields.next()?.parse().ok()?;
        let start = fields.next()?.parse().ok()?;
        let pid_namespace = fields.next()?.parse().ok()?;
        let boot_id = fields.next()?;
        fields.next().filter(|random| !random.is_empty())?;
        if boot_id.len() != 32 || !boot_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self { pid, start, pid_namespace, boot_id: boot_id.to_owned() })
    }

    /// Whether this owner is still running, as far as `me` can tell.
    fn judge(&self, me: &Self) -> Verdict {
        if self.boot_id != me.boot_id {
            return Verdict::CannotTell("it was made before a reboot or on another host".into());
        }
        if self.pid_namespace != me.pid_namespace {
            return Verdict::CannotTell("it was made in another pid namespace (another container?)".into());
        }
        match process(self.pid) {
            Ok(Process::Running { start }) if start == self.start => Verdict::Running,
            // Gone, or its pid now belongs to a later process.
            Ok(_) => Verdict::Gone,
            Err(err) => Verdict::CannotTell(format!("cannot read /proc/{}/stat: {err}", self.pid)),
        }
    }
}

enum Verdict {
    Running,
    Gone,
    CannotTell(String),
}

enum Process {
    Running { start: u64 },
    Gone,
}

fn process(pid: u32) -> io::Result<Process> {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected format")),
        Err(err) if err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(NO_SUCH_PROCESS) => {
            Ok(Process::Gone)
        }
        Err(err) => Err(err),
    }
}

/// `pid (comm) state ... starttime ...`: `comm` may hold spaces and parentheses, so
/// fields are counted after its last `)`. A zombie has freed everything: gone.
fn parse_stat(stat: &str) -> Option<Process> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?;
    // Field 22 overall; `state` is field 3.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some(match state {
        "Z" | "X" | "x" => Process::Gone,
        _ => Process::Running { start },
    })
}

fn pid_namespace() -> io::Result<u64> {
    let link = fs::read_link("/proc/self/ns/pid")?;
    link.to_str()
        .and_then(|link| link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/ns/pid"))
}

fn boot_id() -> io::Result<String> {
    let id: String = fs::read_to_string("/proc/sys/kernel/random/boot_id")?.trim().replace('-', "");
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/sys/kernel/random/boot_id"))
    }
}

/// The uid this process creates files as.
fn own_uid() -> io::Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(3)?.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid line in /proc/self/status"))
}

/// See [`super::IdentityFileStore::erase_abandoned`].
pub(super) fn erase_abandoned(parent: &Path) -> Result<AbandonedDirs, IdentityFileError> {
    let me = Owner::current().map_err(IdentityFileError::Owner)?;
    let uid = own_uid().map_err(IdentityFileError::Owner)?;
    let scan_error = |source| IdentityFileError::Scan { dir: parent.to_path_buf(), source };
    let mut found = AbandonedDirs::default();
    for entry in fs::read_dir(parent).map_err(scan_error)? {
        let entry = entry.map_err(scan_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|name| name.starts_with(DIR_PREFIX)) else { continue };
        let path = entry.path();
        // Not followed: only a real directory of this user's is a gateway's to judge.
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let Some(owner) = Owner::from_dir_name(name) else {
            tracing::warn!(
                path = %path.display(),
                "left alone an identity directory that names no owner (an older gateway's?); \
                 remove it once no gateway uses it"
            );
            found.left.push(path);
            continue;
        };
        match owner.judge(&me) {
            Verdict::Running => {}
            Verdict::Gone => match fs::remove_dir_all(&path) {
                Ok(()) => found.erased.push(ErasedDir { path, pid: owner.pid }),
                // Another gateway starting at the same time erased it first.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(IdentityFileError::Erase { dir: path, source }),
            },
            Verdict::CannotTell(why) => {
                tracing::warn!(
                    path = %path.display(),
                    pid = owner.pid,
                    "left alone an identity directory whose gateway cannot be checked from here: {why}"
                );
                found.left.push(path);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityFileStore;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A directory as a gateway `owner` would have made it, holding a key file.
    fn owned_dir(parent: &Path, owner: &Owner) -> PathBuf {
        let dir = parent.join(format!("{}abc123", owner.dir_prefix()));
        fs::create_dir(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::write(dir.join("ziti-identity-x.json"), "{}").expect("key file");
        dir
    }

    /// `me` with another process's pid and start time.
    fn owner_of(child: &Child) -> Owner {
        let me = Owner::current().expect("me");
        let pid = child.id();
        match process(pid).expect("child stat") {
            Process::Running { start } => Owner { pid, start, ..me },
            Process::Gone => panic!("the child is not running"),
        }
    }

    fn sleeper() -> Child {
        Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().expect("spawn sleep")
    }

    fn kill(mut child: Child) {
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    #[test]
    fn a_dead_gateways_directory_is_erased_with_its_key() {
        let parent = tempfile::tempdir().expect("tempdir");
        let child = sleeper();
        let dir = owned_dir(parent.path(), &owner_of(&child));
        let pid = child.id();
        kill(child);
        let found = IdentityFileStore::erase_abandoned(parent.path()).expect("sweep");
        assert_eq!(found.erased, [ErasedDir { path: dir.clone(), pid }]);
        assert!(found.left.is_empty(), "{found:?}");
        assert!(fs::symlink_metadata(&dir).is_err(), "still there");
    }

    #[test]
    fn a_killed_but_unreaped_gateway_counts_as_gone() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut child = sleeper();
        let dir = owned_dir(parent.path(), &owner_of(&child));
        child.kill().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(5);
        let stat = format!("/proc/{}/stat", child.id());
        while !fs::read_to_string(&stat).expect("a zombie keeps its stat").contains(") Z ") {
            assert!(Instant::now() < deadline, "the child never became a zombie");
            std::thread::sleep(Duration::from_millis(10));
        }
        let found = IdentityFileStore::erase_abandoned(parent.path()).expect("sweep");
        child.wait().expect("wait");
        assert_eq!(found.erased.len(), 1, "{found:?}");
        assert!(fs::symlink_metadata(&dir).is_err(), "still there");
    }

    #[test]
    fn live_gateways_directories_are_kept() {
        let parent = tempfile::tempdir().expect("tempdir");
        let own = IdentityFileStore::new_in(parent.path()).expect("store");
        let child = sleeper();
        let other = owned_dir(parent.path(), &owner_of(&child));
        let found = IdentityFileStore::erase_abandoned(parent.path());
        kill(child);
        let found = found.expect("sweep");
        assert_eq!(found, AbandonedDirs::default());
        assert!(own.dir().is_dir() && other.join("ziti-identity-x.json").is_file());
    }

    #[test]
    fn a_recycled_pid_is_not_mistaken_for_the_owner() {
        let parent = tempfile::tempdir().expect("tempdir");
        let me = Owner::current().expect("me");
        // This very pid, alive, but started at another time: a later process.
        let dir = owned_dir(parent.path(), &Owner { start: me.start + 1, ..me.clone() });
        let found = IdentityFileStore::erase_abandoned(parent.path()).expect("sweep");
        assert_eq!(found.erased, [ErasedDir { path: dir.clone(), pid: me.pid }]);
        assert!(fs::symlink_metadata(&dir).is_err(), "still there");
    }

    #[test]
    fn directories_that_cannot_be_judged_from_here_are_left_and_reported() {
        let parent = tempfile::tempdir().expect("tempdir");
        let child = sleeper();
        let dead = owner_of(&child);
        kill(child);
        let other_namespace =
            owned_dir(parent.path(), &Owner { pid_namespace: dead.pid_namespace + 1, ..dead.clone() });
        let other_boot =
            parent.path().join(format!("{}xyz", dead.dir_prefix().replace(&dead.boot_id, &"0".repeat(32))));
        fs::create_dir(&other_boot).expect("mkdir");
        let older_gateway = parent.path().join("ziti-gateway-Ab12Cd");
        fs::create_dir(&older_gateway).expect("mkdir");
        let found = IdentityFileStore::erase_abandoned(parent.path()).expect("sweep");
        assert!(found.erased.is_empty(), "{found:?}");
        let mut left = found.left;
        left.sort();
        let mut expected = vec![other_namespace, other_boot, older_gateway];
        expected.sort();
        assert_eq!(left, expected);
        assert!(expected.iter().all(|dir| dir.is_dir()));
    }

    #[test]
    fn symlinks_files_and_other_names_are_never_touched() {
        let parent = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let child = sleeper();
        let dead = owner_of(&child);
        kill(child);
        // A dead owner's directory, but reached through a symlink in the parent.
        let target = owned_dir(elsewhere.path(), &dead);
        let link = parent.path().join(format!("{}link", dead.dir_prefix()));
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        // A plain file with a dead owner's name, and a directory not named like ours.
        let file = parent.path().join(format!("{}file", dead.dir_prefix()));
        fs::write(&file, "not a directory").expect("file");
        let unrelated = parent.path().join(format!("other-{}", dead.dir_prefix()));
        fs::create_dir(&unrelated).expect("mkdir");
        let found = IdentityFileStore::erase_abandoned(parent.path()).expect("sweep");
        assert_eq!(found, AbandonedDirs::default());
        assert!(fs::symlink_metadata(&link).is_ok_and(|meta| meta.file_type().is_symlink()));
        assert!(target.join("ziti-identity-x.json").is_file(), "the symlink was followed");
        assert!(file.is_file() && unrelated.is_dir());
    }

    #[test]
    fn the_stores_directory_names_its_owner() {
        let parent = tempfile::tempdir().expect("tempdir");
        let store = IdentityFileStore::new_in(parent.path()).expect("store");
        let name = store.dir().file_name().and_then(|name| name.to_str()).expect("name");
        assert_eq!(Owner::from_dir_name(name), Some(Owner::current().expect("me")), "{name}");
    }

    #[test]
    fn an_unreadable_parent_is_an_error_naming_it() {
        let missing = Path::new("/nonexistent/identity-parent");
        let err = IdentityFileStore::erase_abandoned(missing).expect_err("must fail");
        assert!(err.to_string().contains("/nonexistent/identity-parent"), "{err}");
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let rest = "1 1 1 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 1157768 3133440 393";
        let Some(Process::Running { start }) = parse_stat(&format!("42 (a) b (c)) S {rest}")) else {
            panic!("not parsed as running");
        };
        assert_eq!(start, 1_157_768);
        assert!(matches!(parse_stat(&format!("42 (gateway) Z {rest}")), Some(Process::Gone)));
        assert!(parse_stat("42 (gateway) S 1 2").is_none());
    }
}
