//! [`FileToken`]: a token file, re-read when it changes (a Kubernetes projected
//! service-account token, or any agent that writes the IdP token to a file).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::token::{IdpToken, TokenError, TokenSource};

/// The token in a file; read again whenever the file's modification time changes.
#[derive(Debug)]
pub struct FileToken {
    path: PathBuf,
    last: Mutex<Option<(SystemTime, IdpToken)>>,
}

impl FileToken {
    /// The token in the file at `path` (read when first asked, not now).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), last: Mutex::new(None) }
    }

    fn read(&self) -> Result<IdpToken, TokenError> {
        let origin = self.describe();
        let unreadable =
            |err: std::io::Error| TokenError::File { path: self.path.display().to_string(), reason: err.to_string() };
        let modified = std::fs::metadata(&self.path).and_then(|meta| meta.modified()).map_err(unreadable)?;
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, token)) = last.as_ref()
            && *seen == modified
        {
            // Unchanged: still the same token, which may have expired since.
            return IdpToken::parse(Zeroizing::new(token.expose().to_owned()), &origin);
        }
        let value = std::fs::read_to_string(&self.path).map(Zeroizing::new).map_err(unreadable)?;
        let token = IdpToken::parse(value, &origin)?;
        *last = Some((modified, token.clone()));
        Ok(token)
    }
}

#[async_trait]
impl TokenSource for FileToken {
    async fn token(&self) -> Result<IdpToken, TokenError> {
        self.read()
    }

    fn describe(&self) -> String {
        format!("the token file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::token::tests::{jwt, now_secs};

    #[tokio::test]
    async fn a_replaced_file_gives_the_new_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let now = now_secs();
        std::fs::write(&path, jwt(serde_json::json!({"sub": "first", "exp": now + 120}))).unwrap();
        let source = FileToken::new(&path);
        assert_eq!(source.token().await.unwrap().subject, "first");

        // Written aside and renamed over, as the kubelet does; a new mtime.
        let next = dir.path().join("token.next");
        std::fs::write(&next, jwt(serde_json::json!({"sub": "second", "exp": now + 240}))).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&next).unwrap().set_modified(later).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(source.token().await.unwrap().subject, "second");
    }

    #[tokio::test]
    async fn a_missing_file_is_named() {
        let source = FileToken::new("/nonexistent/token");
        let err = source.token().await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/token") && err.is_transient(), "{err}");
    }
}
