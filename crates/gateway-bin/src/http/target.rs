//! The path an upstream receives, normalised so that it cannot leave the upstream's
//! base path however the client spells it.
//!
//! Upstreams resolve `..` themselves (file servers, routers, `os.path.join`), some after
//! decoding `%2e` or `%2f`, some reading `\` as `/`; so the gateway resolves dot segments
//! first, on the decoded form, and refuses what it cannot resolve safely:
//! - `%XX` escapes of unreserved characters (RFC 3986 §2.3: letters, digits, `-._~`) are
//!   decoded, so `%2e%2E` is `..`; other escapes are kept, in upper case;
//! - an encoded separator (`%2f`, `%5c`), a `\`, a double-encoded dot or separator
//!   (`%252e`, `%252f`, `%255c`), a dot segment with parameters (`..;x`, which some
//!   servers read as `..`) or a malformed escape is refused;
//! - `.` and `..` segments are resolved (RFC 3986 §5.2.4); a `..` with nothing left to
//!   remove would leave the base path, and is refused.

/// Why a request path is refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum PathError {
    #[error("the path is not absolute")]
    NotAbsolute,
    #[error("the path goes above its root")]
    Escapes,
    #[error("the path has an encoded or backslash separator")]
    Separator,
    #[error("the path has a malformed or double-encoded escape")]
    Escape,
    #[error("the path has a dot segment with parameters")]
    DotParameters,
}

/// The normalised form of an origin-form path (no query): dot segments resolved,
/// unreserved characters decoded; see the module docs for what is refused.
pub(super) fn normalise(path: &str) -> Result<String, PathError> {
    let relative = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments: Vec<String> = Vec::new();
    // A path ending in a dot segment names a directory: it keeps its trailing `/`.
    let mut ends_in_dot_segment = false;
    for raw in relative.split('/') {
        let segment = decode_segment(raw)?;
        ends_in_dot_segment = matches!(segment.as_str(), "." | "..");
        match segment.as_str() {
            "." => {}
            ".." => {
                segments.pop().ok_or(PathError::Escapes)?;
            }
            _ => {
                if matches!(segment.split(';').next(), Some("." | "..")) {
                    return Err(PathError::DotParameters);
                }
                segments.push(segment);
            }
        }
    }
    let mut normalised = String::with_capacity(path.len());
    for segment in &segments {
        normalised.push('/');
        normalised.push_str(segment);
    }
    if ends_in_dot_segment || normalised.is_empty() {
        normalised.push('/');
    }
    Ok(normalised)
}

/// One segment with its unreserved escapes decoded and the others kept in upper case.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'\\' => return Err(PathError::Separator),
            b'%' => {
                let value = escaped(bytes, at)?;
                match value {
                    b'/' | b'\\' => return Err(PathError::Separator),
                    b'%' if double_encoded_dot_or_separator(bytes, at + 3) => return Err(PathError::Escape),
                    value if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') => {
                        decoded.push(value);
                    }
                    value => decoded.extend_from_slice(format!("%{value:02X}").as_bytes()),
                }
                at += 3;
            }
            byte => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    // Only ASCII sequences were replaced by ASCII, so the UTF-8 of `raw` is intact.
    String::from_utf8(decoded).map_err(|_| PathError::Escape)
}

/// The byte that the escape `%XX` starting at `at` stands for.
fn escaped(bytes: &[u8], at: usize) -> Result<u8, PathError> {
    match bytes.get(at..at + 3) {
        Some([b'%', high, low]) => match (hex(*high), hex(*low)) {
            (Some(high), Some(low)) => Ok(high << 4 | low),
            _ => Err(PathError::Escape),
        },
        _ => Err(PathError::Escape),
    }
}

/// Whether the two bytes at `at` are the hex digits of `.`, `/` or `\`: after a `%25`
/// they would become one when decoded a second time.
fn double_encoded_dot_or_separator(bytes: &[u8], at: usize) -> bool {
    match (bytes.get(at).copied().and_then(hex), bytes.get(at + 1).copied().and_then(hex)) {
        (Some(high), Some(low)) => matches!(high << 4 | low, b'.' | b'/' | b'\\'),
        _ => false,
    }
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::root("/", "/")]
    #[case::plain("/a/b", "/a/b")]
    #[case::trailing_slash("/a/b/", "/a/b/")]
    #[case::empty_segments_kept("//a//b", "//a//b")]
    #[case::dot("/a/./b", "/a/b")]
    #[case::dot_dot_inside("/a/b/../c", "/a/c")]
    #[case::dot_dot_to_root("/a/..", "/")]
    #[case::trailing_dot("/a/.", "/a/")]
    #[case::trailing_dot_dot("/a/b/..", "/a/")]
    #[case::encoded_dots_inside("/a/%2e%2E/b", "/b")]
    #[case::encoded_dot("/a/%2e/b", "/a/b")]
    #[case::unreserved_decoded("/%41%7a%30-%5F%7e", "/Az0-_~")]
    #[case::reserved_kept_upper("/a%20b%3f%23%3b", "/a%20b%3F%23%3B")]
    #[case::percent_kept("/100%25", "/100%25")]
    #[case::dots_in_names("/.well-known/a..b/...", "/.well-known/a..b/...")]
    #[case::utf8("/caf\u{e9}", "/caf\u{e9}")]
    #[case::semicolon_in_name("/a;b/c", "/a;b/c")]
    fn paths_are_normalised(#[case] path: &str, #[case] normalised: &str) {
        assert_eq!(normalise(path), Ok(normalised.to_owned()));
    }

    #[rstest]
    #[case::dot_dot("/..", PathError::Escapes)]
    #[case::dot_dot_file("/../private/secret.txt", PathError::Escapes)]
    #[case::encoded("/%2e%2e/private/secret.txt", PathError::Escapes)]
    #[case::mixed_case("/%2E%2e/x", PathError::Escapes)]
    #[case::half_encoded("/.%2e/x", PathError::Escapes)]
    #[case::deeper("/a/../../x", PathError::Escapes)]
    #[case::after_empty_segment("/a//../../../x", PathError::Escapes)]
    #[case::encoded_slash("/..%2fprivate", PathError::Separator)]
    #[case::encoded_slash_upper("/a%2Fb", PathError::Separator)]
    #[case::encoded_backslash("/..%5cprivate", PathError::Separator)]
    #[case::backslash("/..\\private", PathError::Separator)]
    #[case::double_encoded_dot("/%252e%252e/x", PathError::Escape)]
    #[case::double_encoded_slash("/a%252fb", PathError::Escape)]
    #[case::truncated_escape("/a%2", PathError::Escape)]
    #[case::bad_hex("/a%zz", PathError::Escape)]
    #[case::signed_hex("/a%+f", PathError::Escape)]
    #[case::dot_dot_parameters("/a/..;/x", PathError::DotParameters)]
    #[case::dot_parameters("/a/.;x/b", PathError::DotParameters)]
    #[case::relative("a/b", PathError::NotAbsolute)]
    fn paths_that_could_leave_the_base_are_refused(#[case] path: &str, #[case] error: PathError) {
        assert_eq!(normalise(path), Err(error));
    }
}
