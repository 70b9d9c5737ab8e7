//! Error messages with their causes: several libraries' errors say little on their
//! own ("error sending request", "transport error") and keep the reason in `source`.

use std::error::Error;

/// `err`'s message followed by each of its causes, `: `-separated; a cause whose
/// message is already in the text (wrappers often repeat their source's) is skipped.
pub fn with_causes(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = inner.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("TLS setup failed: {0}")]
    struct Repeats(#[from] Terse);

    #[derive(Debug, thiserror::Error)]
    #[error("TLS setup failed")]
    struct Outer(#[source] Terse);

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Terse(#[source] std::io::Error);

    #[test]
    fn appends_every_cause() {
        let err = Outer(Terse(std::io::Error::other("invalid peer certificate: UnknownIssuer")));
        assert_eq!(
            with_causes(&err),
            "TLS setup failed: error sending request: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn says_a_repeated_cause_once() {
        let err = Repeats(Terse(std::io::Error::other("invalid peer certificate: UnknownIssuer")));
        assert_eq!(
            with_causes(&err),
            "TLS setup failed: error sending request: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn an_error_without_causes_is_its_message() {
        assert_eq!(with_causes(&std::io::Error::other("refused")), "refused");
    }
}
