//! Pins on what a leased identity may point at: the controller its `ztAPI` names and
//! the CA bundle (`id.ca`) the overlay will trust. Whoever could tamper with the
//! identity on its way could otherwise hand the gateway a controller and CA of their
//! own, whose routers would then vouch for any caller they like.

use http::Uri;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use thiserror::Error;

/// Pins that cannot be used, named so the operator can fix them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PinError {
    #[error("the pinned controller URL {url:?} is invalid: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("the pinned controller CA holds no readable certificate")]
    NoCertificate,
}

/// Why an identity does not match the pins. Names URLs and counts, never key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PinMismatch {
    #[error("its controller {found} is not the pinned controller {pinned}")]
    Controller { found: String, pinned: String },
    #[error("its controller URL (ztAPI) cannot be read, so it cannot be checked against the pinned controller")]
    UnreadableController,
    #[error(
        "its CA bundle (id.ca) holds {foreign} certificate(s) that are not in the pinned controller CA \
         (of {total} it holds)"
    )]
    Ca { foreign: usize, total: usize },
}

/// `scheme://host:port`, the part of a URL that says which server is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    scheme: String,
    host: String,
    port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, &'static str> {
        let uri: Uri = url.trim().parse().map_err(|_| "not a URL")?;
        let scheme = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => "https",
            Some(_) => return Err("the scheme must be https"),
            None => return Err("not an absolute URL"),
        };
        let authority = uri.authority().ok_or("no host")?;
        if authority.as_str().contains('@') {
            return Err("it must not carry user information");
        }
        let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err("no host");
        }
        Ok(Self { scheme: scheme.to_owned(), host, port: authority.port_u16().unwrap_or(443) })
    }
}

/// What a leased identity may point at. Empty pins accept every identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControllerPins {
    controller: Option<Endpoint>,
    ca: Option<Vec<CertificateDer<'static>>>,
}

impl ControllerPins {
    /// No pins: the identity's own `ztAPI` and `id.ca` are trusted.
    pub fn none() -> Self {
        Self::default()
    }

    /// Pins the controller: the identity's every `ztAPI`/`ztAPIs` entry must have
    /// this URL's scheme, host and port (443 when none is given); paths are ignored.
    pub fn with_controller(self, url: &str) -> Result<Self, PinError> {
        let controller = Endpoint::parse(url).map_err(|reason| PinError::Url { url: url.to_owned(), reason })?;
        Ok(Self { controller: Some(controller), ..self })
    }

    /// Pins the CA: every certificate of the identity's `id.ca` must be one of these
    /// (PEM), compared as parsed certificates, so that the overlay trusts nothing the
    /// operator did not.
    pub fn with_ca_pem(self, pem: &[u8]) -> Result<Self, PinError> {
        let certificates = parse_certificates(pem).filter(|found| !found.is_empty()).ok_or(PinError::NoCertificate)?;
        Ok(Self { ca: Some(certificates), ..self })
    }

    /// Whether any pin is set.
    pub fn is_empty(&self) -> bool {
        self.controller.is_none() && self.ca.is_none()
    }

    /// Checks a parsed identity against the pins: every controller URL it names, and
    /// every CA it would trust (nothing to do without pins).
    pub(crate) fn check(&self, identity: &ziti_sdk::Identity) -> Result<(), PinMismatch> {
        let urls: Vec<&str> = identity.api_urls().iter().map(|url| url.as_str()).collect();
        self.check_parts(&urls, identity.ca_certificates())
    }

    fn check_parts(&self, urls: &[&str], ca: &[CertificateDer<'static>]) -> Result<(), PinMismatch> {
        if let Some(pinned) = &self.controller {
            for url in urls {
                match Endpoint::parse(url) {
                    Ok(found) if &found == pinned => {}
                    Ok(found) => {
                        return Err(PinMismatch::Controller { found: found.to_string(), pinned: pinned.to_string() });
                    }
                    Err(_) => return Err(PinMismatch::UnreadableController),
                }
            }
        }
        if let Some(pinned) = &self.ca {
            let foreign = ca.iter().filter(|certificate| !pinned.contains(certificate)).count();
            if foreign > 0 {
                return Err(PinMismatch::Ca { foreign, total: ca.len() });
            }
        }
        Ok(())
    }
}

/// Every certificate of a PEM bundle, or `None` when one is unreadable.
fn parse_certificates(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().ok()
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn ca(name: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("self-signed").pem()
    }

    /// What the pins see of an identity: its controller URLs and CAs.
    struct Seen {
        urls: Vec<String>,
        ca: Vec<CertificateDer<'static>>,
    }

    fn identity(api: &str, ca_pem: &str) -> Seen {
        Seen { urls: vec![api.to_owned()], ca: parse_certificates(ca_pem.as_bytes()).unwrap_or_default() }
    }

    impl ControllerPins {
        fn check_seen(&self, seen: &Seen) -> Result<(), PinMismatch> {
            let urls: Vec<&str> = seen.urls.iter().map(String::as_str).collect();
            self.check_parts(&urls, &seen.ca)
        }
    }

    #[rstest]
    #[case::same_with_client_path("https://ctrl.example:1280", "https://ctrl.example:1280/edge/client/v1", true)]
    #[case::host_case_and_default_port("https://Ctrl.Example/", "https://ctrl.example:443/edge/client/v1", true)]
    #[case::other_port("https://ctrl.example:1280", "https://ctrl.example:1281/edge/client/v1", false)]
    #[case::other_host("https://ctrl.example:1280", "https://evil.example:1280/edge/client/v1", false)]
    #[case::ip_for_name("https://127.0.0.1:1280", "https://localhost:1280/edge/client/v1", false)]
    fn the_controller_pin_compares_scheme_host_and_port(
        #[case] pinned: &str,
        #[case] api: &str,
        #[case] accepted: bool,
    ) {
        let pins = ControllerPins::none().with_controller(pinned).expect("pin");
        let outcome = pins.check_seen(&identity(api, ""));
        assert_eq!(outcome.is_ok(), accepted, "{outcome:?}");
        if let Err(mismatch) = outcome {
            assert!(matches!(mismatch, PinMismatch::Controller { .. }), "{mismatch:?}");
            assert!(mismatch.to_string().contains("is not the pinned controller"), "{mismatch}");
        }
    }

    #[test]
    fn every_listed_controller_must_match() {
        let pins = ControllerPins::none().with_controller("https://ctrl.example:1280").expect("pin");
        let mut value = identity("https://ctrl.example:1280/edge/client/v1", "");
        value.urls.extend(["https://ctrl.example:1280".to_owned(), "https://evil.example:1280".to_owned()]);
        let mismatch = pins.check_seen(&value).expect_err("a second controller is not the pinned one");
        assert_eq!(
            mismatch,
            PinMismatch::Controller {
                found: "https://evil.example:1280".to_owned(),
                pinned: "https://ctrl.example:1280".to_owned()
            }
        );
    }

    #[rstest]
    #[case::not_https("http://ctrl.example:1280")]
    #[case::relative("ctrl.example:1280")]
    #[case::user_info("https://user@ctrl.example:1280")]
    fn unusable_controller_pins_are_refused(#[case] url: &str) {
        let error = ControllerPins::none().with_controller(url).expect_err("refused");
        assert!(matches!(error, PinError::Url { .. }), "{error:?}");
    }

    #[test]
    fn the_ca_pin_compares_parsed_certificates() {
        let (ours, theirs) = (ca("ours"), ca("theirs"));
        let pins = ControllerPins::none().with_ca_pem(ours.as_bytes()).expect("pin");
        // The same certificate with other line endings is accepted.
        let reformatted = ours.replace('\n', "\r\n");
        assert_eq!(pins.check_seen(&identity("https://c:1/", &reformatted)), Ok(()));
        let foreign = format!("{ours}{theirs}");
        assert_eq!(
            pins.check_seen(&identity("https://c:1/", &foreign)),
            Err(PinMismatch::Ca { foreign: 1, total: 2 }),
            "a CA the operator did not pin is refused even beside the pinned one"
        );
    }

    #[test]
    fn a_ca_pin_without_a_certificate_is_refused() {
        assert_eq!(ControllerPins::none().with_ca_pem(b"not a certificate"), Err(PinError::NoCertificate));
    }

    #[test]
    fn no_pins_accept_anything() {
        assert_eq!(ControllerPins::none().check_seen(&identity("https://anything:9/", "")), Ok(()));
        assert!(ControllerPins::none().is_empty());
    }
}
