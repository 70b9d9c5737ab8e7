//! Error messages with their causes: several libraries' errors say little on their
//! own ("error sending request", "transport error") and keep the reason in `source`.

use std::error::Error;

/// `err`'s message followed by each of its causes, `: `-separated.
pub fn with_causes(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        // Some wrappers repeat their source's message; say it once.
        if !message.ends_with(&text) {
            message = format!("{message}: {text}");
        }
        cause = inner.source();
    }
    message
}
