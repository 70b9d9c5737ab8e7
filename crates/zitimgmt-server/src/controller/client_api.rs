//! The unauthenticated calls an enrolling client makes: OTT enrollment and the CA bundle.

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use super::{Controller, ControllerError, expect_success, json};

#[derive(Deserialize)]
struct Enrolled {
    /// The client certificate, then its intermediates (PEM).
    cert: String,
}

impl Controller {
    /// The client API's URL as SDKs take it (`ztAPI`).
    pub fn client_api_url(&self) -> String {
        self.url(&["edge", "client", "v1"]).to_string()
    }

    /// Redeems a one-time enrollment token with a CSR; returns the certificate chain (PEM).
    pub async fn enroll_ott(&self, token: &str, csr_pem: &str) -> Result<String, ControllerError> {
        const WHAT: &str = "OTT enrollment";
        let mut url = self.url(&["edge", "client", "v1", "enroll"]);
        url.query_pairs_mut().append_pair("method", "ott").append_pair("token", token);
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/x-pem-file")
            .body(csr_pem.to_owned())
            .send()
            .await
            .map_err(|err| ControllerError::unreachable(WHAT, err))?;
        let enrolled: Enrolled = json(WHAT, response).await?;
        Ok(enrolled.cert)
    }

    /// The controller's CA bundle: base64 of a certs-only PKCS#7 (`/.well-known/est/cacerts`).
    pub async fn ca_bundle_pkcs7(&self) -> Result<String, ControllerError> {
        const WHAT: &str = "CA bundle";
        let response = self
            .http
            .get(self.url(&[".well-known", "est", "cacerts"]))
            .send()
            .await
            .map_err(|err| ControllerError::unreachable(WHAT, err))?;
        let response = expect_success(WHAT, response).await?;
        response.text().await.map_err(|err| ControllerError::unreachable(WHAT, err))
    }
}
