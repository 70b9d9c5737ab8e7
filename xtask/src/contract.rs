//! Checks on the ziti-management contract (`proto/`) with the pinned buf: `buf lint`,
//! and `buf breaking` against the contract as it was before the change under review,
//! read from git (never from a network registry).
//!
//! The base is, in order: `PROTO_BREAKING_AGAINST` (any git revision); the merge base
//! with the upstream branch when HEAD is ahead of it (a feature branch: every change
//! on it); HEAD when `proto/` has uncommitted changes; else the parent of the newest
//! commit that changed `proto/` (CI, on a fresh clone of main: the latest contract
//! change). With no such commit (the contract's first commit, a shallow clone) the
//! check says loudly that it was skipped. A commit in the compared range whose message
//! has a `Proto-Breaking-Change: <reason>` line accepts a deliberate break.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::buf::{self, Buf};

const PROTO_DIR: &str = "proto";
const ACCEPT_TRAILER: &str = "Proto-Breaking-Change:";
/// buf's exit code for "ran, and found problems" (other failures exit 1).
const BUF_FINDINGS_EXIT: i32 = 100;

pub fn lint(root: &Path) -> Result<()> {
    let buf = buf::ensure(root)?;
    crate::step(&format!("buf {} lint {PROTO_DIR}/", buf.version));
    let status = buf.command(root).args(["lint", PROTO_DIR]).status()?;
    if status.code() != Some(BUF_FINDINGS_EXIT) && !status.success() {
        bail!("`buf lint {PROTO_DIR}` could not run ({status})");
    }
    if !status.success() {
        bail!(
            "buf lint found problems in {PROTO_DIR}/ (listed above): fix them, or list each exception with its reason in proto/buf.yaml"
        );
    }
    crate::step(&format!("buf lint: {PROTO_DIR}/ is clean (rules: proto/buf.yaml)"));
    Ok(())
}

pub fn breaking(root: &Path) -> Result<()> {
    let buf = buf::ensure(root)?;
    breaking_with(root, &buf, std::env::var("PROTO_BREAKING_AGAINST").ok())
}

fn breaking_with(root: &Path, buf: &Buf, against_override: Option<String>) -> Result<()> {
    let (base, why) = match choose_base(root, against_override)? {
        Base::Commit { rev, why } => (rev, why),
        Base::Missing(reason) => {
            crate::step(&format!("buf breaking: SKIPPED, no base to compare with: {reason}"));
            return Ok(());
        }
    };
    let short = &base[..base.len().min(12)];
    crate::step(&format!("buf {} breaking {PROTO_DIR}/ against {short} ({why})", buf.version));
    let against = format!("{}#ref={base},subdir={PROTO_DIR}", git_dir(root)?.display());
    let out = buf.command(root).args(["breaking", PROTO_DIR, "--against", &against]).output()?;
    if out.status.success() {
        crate::step(&format!("buf breaking: no breaking change (FILE rules) against {short}"));
        return Ok(());
    }
    let findings = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.code() != Some(BUF_FINDINGS_EXIT) {
        bail!(
            "`buf breaking {PROTO_DIR} --against {against}` could not run ({}):\n{}",
            out.status,
            findings.trim_end()
        );
    }
    if let Some(reason) = accepted_break(root, &base)? {
        eprint!("{findings}");
        crate::step(&format!("buf breaking: the change above is ACCEPTED by a commit: {ACCEPT_TRAILER} {reason}"));
        return Ok(());
    }
    bail!(
        "buf breaking: proto/ is not compatible with {short}:\n{}\nDeployed gateways and ziti-management \
         servers would break: add fields and RPCs instead, or put a new package version beside v1 (or, for a \
         deliberate break, say why in a `{ACCEPT_TRAILER} <reason>` line of the commit message)",
        findings.trim_end()
    )
}

/// Runs the xtask tests that need buf (`#[ignore]`d for a plain `cargo test`): stubs
/// from buf and from protox are byte-identical, and the breaking check catches a
/// renamed field. Off CI, a buf that cannot be installed skips them, loudly.
pub fn buf_tests(root: &Path) -> Result<()> {
    let buf = match buf::ensure(root) {
        Ok(buf) => buf,
        Err(err) if !buf::on_ci() => {
            crate::step(&format!(
                "SKIPPED the tests that need buf (buf and protox stubs identical, breaking check): {err:#}"
            ));
            return Ok(());
        }
        Err(err) => return Err(err.context("CI runs the tests that need buf")),
    };
    crate::step(&format!("xtask tests that need buf, with buf {} ({})", buf.version, buf.path.display()));
    crate::cargo(root, &["test", "--locked", "-p", "xtask", "--", "--ignored"])
}

#[derive(Debug)]
enum Base {
    Commit { rev: String, why: String },
    Missing(String),
}

fn choose_base(root: &Path, against_override: Option<String>) -> Result<Base> {
    if git(root, &["rev-parse", "--is-inside-work-tree"]).is_none() {
        return Ok(Base::Missing(format!("{} is not a git checkout", root.display())));
    }
    if let Some(rev) = against_override {
        let sha = commit(root, &rev).with_context(|| format!("PROTO_BREAKING_AGAINST={rev} is not a commit here"))?;
        return Ok(Base::Commit { rev: sha, why: format!("PROTO_BREAKING_AGAINST={rev}") });
    }
    let head = commit(root, "HEAD").context("HEAD is not a commit")?;
    for upstream in ["@{upstream}", "origin/main"] {
        let Some(merge_base) = git(root, &["merge-base", "HEAD", upstream]) else { continue };
        if merge_base != head {
            return Ok(Base::Commit { rev: merge_base, why: format!("merge base with {upstream}") });
        }
    }
    if git(root, &["status", "--porcelain", "--", PROTO_DIR]).is_some_and(|changes| !changes.is_empty()) {
        return Ok(Base::Commit { rev: head, why: "HEAD: proto/ has uncommitted changes".to_owned() });
    }
    let Some(last) = git(root, &["log", "-1", "--format=%H", "--", PROTO_DIR]).filter(|sha| !sha.is_empty()) else {
        return Ok(Base::Missing("no commit has proto/".to_owned()));
    };
    if let Some(parent) = commit(root, &format!("{last}^")) {
        let why = format!("parent of {}, the newest commit that changed proto/", &last[..12]);
        return Ok(Base::Commit { rev: parent, why });
    }
    if git(root, &["rev-parse", "--is-shallow-repository"]).as_deref() == Some("true") {
        return Ok(Base::Missing(format!(
            "shallow clone: the commit before {} (the newest that changed proto/) is not here; `git fetch --unshallow` to check",
            &last[..12]
        )));
    }
    Ok(Base::Missing(format!("proto/ has not changed since it was added in {}, the first commit", &last[..12])))
}

/// The reason given by a commit after `base` that changed proto/ and accepts a break.
fn accepted_break(root: &Path, base: &str) -> Result<Option<String>> {
    let range = format!("{base}..HEAD");
    let messages = git(root, &["log", "--format=%B", &range, "--", PROTO_DIR]).context("reading commit messages")?;
    Ok(messages
        .lines()
        .find_map(|line| line.trim().strip_prefix(ACCEPT_TRAILER))
        .map(|reason| reason.trim().to_owned())
        .filter(|reason| !reason.is_empty()))
}

/// The repository's own git directory (shared by all its worktrees), for buf's git input.
fn git_dir(root: &Path) -> Result<PathBuf> {
    let dir = git(root, &["rev-parse", "--git-common-dir"]).context("finding the git directory")?;
    Ok(root.join(dir))
}

fn commit(root: &Path, rev: &str) -> Option<String> {
    git(root, &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])
}

/// Trimmed stdout of a git command that succeeded.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(root).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests;
