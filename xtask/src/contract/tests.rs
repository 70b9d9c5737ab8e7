//! Base selection on real throwaway git repositories, and (with buf, run by
//! `cargo xtask test`) `buf breaking` catching a renamed field.

use std::fs;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use super::*;

const CONTRACT: &str = "zitimgmt/v1/zitimgmt.proto";

/// A repository holding a copy of the workspace's `proto/`.
struct Repo {
    dir: TempDir,
}

impl Repo {
    fn with_contract() -> Repo {
        let repo = Repo { dir: tempfile::tempdir().unwrap() };
        let workspace = crate::workspace_root().unwrap();
        for file in ["buf.yaml", CONTRACT] {
            let to = repo.path().join(PROTO_DIR).join(file);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(workspace.join(PROTO_DIR).join(file), to).unwrap();
        }
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.commit("add the contract");
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=xtask test", "-c", "user.email=xtask@test.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn edit_contract(&self, from: &str, to: &str) {
        let file = self.path().join(PROTO_DIR).join(CONTRACT);
        let text = fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "the contract has no {from:?}");
        fs::write(&file, text.replacen(from, to, 1)).unwrap();
    }

    fn base(&self) -> Base {
        choose_base(self.path(), None).unwrap()
    }
}

fn commit_base(base: Base) -> (String, String) {
    match base {
        Base::Commit { rev, why } => (rev, why),
        Base::Missing(reason) => panic!("expected a base, got none: {reason}"),
    }
}

#[test]
fn contracts_first_commit_has_no_base() {
    let repo = Repo::with_contract();
    let Base::Missing(reason) = repo.base() else { panic!("expected no base") };
    assert!(reason.contains("first commit"), "{reason}");
}

#[test]
fn newest_contract_change_is_compared_with_its_parent() {
    let repo = Repo::with_contract();
    let before = repo.git(&["rev-parse", "HEAD"]);
    repo.edit_contract("message ReleaseServiceIdentityResponse {}", "message ReleaseServiceIdentityResponse {}\n");
    let change = repo.commit("touch the contract");
    fs::write(repo.path().join("README.md"), "later, unrelated\n").unwrap();
    repo.commit("unrelated");
    let (rev, why) = commit_base(repo.base());
    assert_eq!(rev, before);
    assert!(why.contains(&change[..12]), "{why}");
}

#[test]
fn uncommitted_contract_change_is_compared_with_head() {
    let repo = Repo::with_contract();
    fs::write(repo.path().join("README.md"), "unrelated\n").unwrap();
    let head = repo.commit("unrelated");
    repo.edit_contract("string principal = 3;", "string principal = 3; // edited");
    assert_eq!(commit_base(repo.base()).0, head);
}

#[test]
fn branch_ahead_of_upstream_is_compared_with_the_merge_base() {
    let upstream = Repo::with_contract();
    upstream.edit_contract("message ReleaseServiceIdentityResponse {}", "message ReleaseServiceIdentityResponse {}\n");
    let fork_point = upstream.commit("touch the contract");
    let clone = Repo { dir: tempfile::tempdir().unwrap() };
    clone.git(&["clone", "--quiet", upstream.path().to_str().unwrap(), "."]);
    clone.edit_contract("string principal = 3;", "string principal = 3; // on a branch");
    clone.commit("branch change");
    fs::write(clone.path().join("README.md"), "more\n").unwrap();
    clone.commit("second branch commit");
    let (rev, why) = commit_base(clone.base());
    assert_eq!(rev, fork_point);
    assert!(why.contains("merge base"), "{why}");
}

#[test]
fn shallow_clone_is_skipped_loudly() {
    let upstream = Repo::with_contract();
    upstream.edit_contract("string principal = 3;", "string principal = 3; // edited");
    upstream.commit("touch the contract");
    let clone = Repo { dir: tempfile::tempdir().unwrap() };
    let source = format!("file://{}", upstream.path().display());
    clone.git(&["clone", "--quiet", "--depth=1", &source, "."]);
    // The clone's origin/main is HEAD, so only the newest contract change is left to check.
    let Base::Missing(reason) = clone.base() else { panic!("a shallow clone has no parent to compare with") };
    assert!(reason.contains("shallow clone"), "{reason}");
}

fn workspace_buf() -> Buf {
    let root = crate::workspace_root().unwrap();
    buf::locate(&root).expect("no buf: run `cargo xtask install-buf` (or put buf on the PATH)")
}

#[test]
#[ignore = "needs buf: `cargo xtask test` installs the pinned buf and runs this test"]
fn renamed_field_fails_the_breaking_check_with_bufs_message() {
    let repo = Repo::with_contract();
    repo.edit_contract("string principal = 3;", "string principal_name = 3;");
    repo.commit("rename a field");
    let err = breaking_with(repo.path(), &workspace_buf(), None).unwrap_err().to_string();
    assert!(err.contains(r#"changed name from "principal" to "principal_name""#), "{err}");
    assert!(err.contains("zitimgmt/v1/zitimgmt.proto"), "{err}");
}

#[test]
#[ignore = "needs buf: `cargo xtask test` installs the pinned buf and runs this test"]
fn added_field_passes_and_an_accepted_break_passes() {
    let repo = Repo::with_contract();
    repo.edit_contract("string external_id = 5;", "string external_id = 5;\n  string display_name = 99;");
    repo.commit("add a field");
    breaking_with(repo.path(), &workspace_buf(), None).unwrap();

    repo.edit_contract("string principal = 3;", "string principal_name = 3;");
    repo.commit("rename a field\n\nProto-Breaking-Change: no deployed servers yet");
    breaking_with(repo.path(), &workspace_buf(), None).unwrap();
}
