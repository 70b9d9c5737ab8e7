//! A scripted stand-in for the controller's HTTP API, for unit tests only: plain
//! HTTP/1.1 on 127.0.0.1, one request per connection, replies scripted per path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One scripted answer. `{state}` in a header value becomes the `state` of the last
/// authorize request (the OIDC callback must echo it).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Makes the answer from the request body instead.
    from_body: Option<FromBody>,
}

#[derive(Clone)]
struct FromBody(Arc<MakeReply>);

/// Makes a reply from a request body.
type MakeReply = dyn Fn(&[u8]) -> Reply + Send + Sync;

impl std::fmt::Debug for FromBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromBody")
    }
}

/// The public key of a CSR (the SDK asks for P-256).
struct P256PublicKey(Vec<u8>);

impl rcgen::PublicKeyData for P256PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// `METHOD /path?query`.
    pub(crate) target: String,
    /// The request head (request line and headers).
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    /// A header's value (names compared case-insensitively).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }
}

impl Reply {
    pub(crate) fn status(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: String::new(), from_body: None }
    }

    pub(crate) fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
            from_body: None,
        }
    }

    pub(crate) fn redirect(location: &str) -> Self {
        Self { status: 302, headers: vec![("location", location.to_owned())], body: String::new(), from_body: None }
    }

    /// An API-session certificate answer: signs the public key of the request's CSR
    /// (`{"csr": PEM}`) with a throwaway CA, valid for `lifetime`, with ids `cert-1`,
    /// `cert-2`, ... in order.
    pub(crate) fn session_certificates(lifetime: Duration) -> Self {
        use x509_cert::der::DecodePem;
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let issued = AtomicU64::new(0);
        let sign = move |body: &[u8]| {
            let request: serde_json::Value = serde_json::from_slice(body).unwrap();
            let csr = x509_cert::request::CertReq::from_pem(request["csr"].as_str().unwrap()).unwrap();
            let spki = P256PublicKey(csr.info.public_key.subject_public_key.raw_bytes().to_vec());
            let mut params = rcgen::CertificateParams::default();
            let now = SystemTime::now();
            params.not_before = now.into();
            params.not_after = (now + lifetime).into();
            let cert = params.signed_by(&spki, &issuer).unwrap();
            let id = format!("cert-{}", issued.fetch_add(1, Ordering::Relaxed) + 1);
            let data = serde_json::json!({ "id": id, "certificate": cert.pem(), "cas": ca_pem });
            Reply::json(201, serde_json::json!({ "data": data }))
        };
        Self { from_body: Some(FromBody(Arc::new(sign))), ..Self::status(201) }
    }

    /// A token endpoint answer: an access token for API session `asid`, valid an hour.
    pub(crate) fn tokens(asid: &str) -> Self {
        Self::json(
            200,
            serde_json::json!({ "access_token": access_token(asid), "refresh_token": "refresh", "token_type": "Bearer" }),
        )
    }
}

/// A JWT (unsigned: the SDK does not verify) for API session `asid`, valid an hour;
/// each one different.
pub(crate) fn access_token(asid: &str) -> String {
    static ISSUED: AtomicU64 = AtomicU64::new(0);
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + Duration::from_secs(3600);
    let jti = ISSUED.fetch_add(1, Ordering::Relaxed);
    let claims = serde_json::json!({ "sub": "identity-1", "exp": exp.as_secs(), "z_asid": asid, "jti": jti });
    format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

#[derive(Default)]
struct Script {
    /// Replies by path; the last one of each path repeats. Unscripted paths get 404.
    replies: HashMap<String, VecDeque<Reply>>,
    /// `METHOD /path` of every request, in order.
    seen: Vec<String>,
    requests: Vec<Recorded>,
    state: String,
}

/// The running stand-in; stops when dropped.
pub(crate) struct FakeController {
    pub(crate) addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: JoinHandle<()>,
}

impl FakeController {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let task = tokio::spawn({
            let script = script.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, script.clone()));
                }
            }
        });
        Self { addr, script, task }
    }

    pub(crate) fn base(&self) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://{}/", self.addr)).unwrap()
    }

    /// Scripts the answers to `path`, in order (the last one repeats).
    pub(crate) fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().replies.insert(path.to_owned(), replies.into_iter().collect());
    }

    /// `METHOD /path` of every request so far.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.script.lock().unwrap().seen.clone()
    }

    /// The requests to `path` so far, in order.
    pub(crate) fn requests(&self, path: &str) -> Vec<Recorded> {
        let script = self.script.lock().unwrap();
        let path = format!(" {path}");
        script
            .requests
            .iter()
            .filter(|r| r.target.split('?').next().unwrap_or_default().ends_with(&path))
            .cloned()
            .collect()
    }

    pub(crate) fn count(&self, request: &str) -> usize {
        self.seen().iter().filter(|seen| *seen == request).count()
    }

    /// Scripts a successful certificate login (authorize, cert login, callback); the
    /// token endpoint is scripted by the test.
    pub(crate) fn script_cert_login(&self) {
        self.script("/oidc/authorize", [Reply::redirect("/oidc/login/cert?authRequestID=ar1")]);
        self.script("/oidc/login/cert", [Reply::redirect("/oidc/callback?id=ar1")]);
        self.script("/oidc/callback", [Reply::redirect("http://localhost:8080/auth/callback?code=c1&state={state}")]);
    }
}

/// An OIDC API session `s1` of identity `identity-1`, valid an hour, as a login to the
/// stand-in would leave it.
pub(crate) fn logged_in_session() -> crate::controller::ApiSession {
    crate::controller::ApiSession {
        mode: crate::controller::AuthMode::Oidc,
        token: zeroize::Zeroizing::new(access_token("s1")),
        refresh_token: Some(zeroize::Zeroizing::new("refresh".to_owned())),
        expires_at: SystemTime::now() + Duration::from_secs(3600),
        identity_id: "identity-1".to_owned(),
        identity_name: "host".to_owned(),
        api_session_id: "s1".to_owned(),
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, script: Arc<Mutex<Script>>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let url = reqwest::Url::parse(&format!("http://fake{target}")).unwrap();
    let reply = {
        let mut script = script.lock().unwrap();
        script.seen.push(format!("{method} {}", url.path()));
        script.requests.push(Recorded {
            target: format!("{method} {target}"),
            head: head.clone(),
            body: request[head_end..].to_vec(),
        });
        if let Some((_, state)) = url.query_pairs().find(|(k, _)| k == "state") {
            script.state = state.into_owned();
        }
        let state = script.state.clone();
        let mut reply = match script.replies.get_mut(url.path()) {
            Some(queue) if queue.len() > 1 => queue.pop_front().unwrap(),
            Some(queue) => queue.front().cloned().unwrap_or_else(|| Reply::status(404)),
            None => Reply::status(404),
        };
        if let Some(FromBody(make)) = reply.from_body.clone() {
            reply = make(&request[head_end..]);
        }
        for (_, value) in &mut reply.headers {
            *value = value.replace("{state}", &state);
        }
        reply
    };
    let mut out =
        format!("HTTP/1.1 {} Fake\r\nconnection: close\r\ncontent-length: {}\r\n", reply.status, reply.body.len());
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
}
