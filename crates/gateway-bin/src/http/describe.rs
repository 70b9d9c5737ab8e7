//! Without an upstream: answer every request with a JSON description of its caller,
//! so that an operator (or a test) can see what the gateway knows about them.

use bytes::Bytes;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::{RequestContext, ResponseBody, fixed_response, text_response};

/// `{"transport":..,"caller":{"peer","id","name","verified"},"principal":..,"method":..,"path":..}`.
#[derive(Debug, Serialize)]
struct Description<'a> {
    transport: &'static str,
    caller: CallerView<'a>,
    principal: Option<PrincipalView<'a>>,
    method: &'a str,
    path: &'a str,
}

#[derive(Debug, Serialize)]
struct CallerView<'a> {
    peer: &'a str,
    id: Option<&'a str>,
    name: Option<&'a str>,
    /// Whether the overlay vouched for `id`/`name`, rather than the caller claiming them.
    verified: bool,
}

#[derive(Debug, Serialize)]
struct PrincipalView<'a> {
    name: &'a str,
    role_attributes: &'a [String],
}

pub(super) fn describe<B>(request: &Request<B>, context: &RequestContext) -> Response<ResponseBody> {
    let caller = &context.caller;
    let identity = caller.identity.as_ref();
    let description = Description {
        transport: caller.transport.as_str(),
        caller: CallerView {
            peer: &caller.peer,
            id: identity.and_then(|identity| identity.id.as_deref()),
            name: identity.and_then(|identity| identity.name.as_deref()),
            verified: identity.is_some_and(|identity| identity.verified),
        },
        principal: context
            .principal
            .as_ref()
            .map(|principal| PrincipalView { name: &principal.name, role_attributes: &principal.role_attributes }),
        method: request.method().as_str(),
        path: request.uri().path(),
    };
    match serde_json::to_vec(&description) {
        Ok(json) => fixed_response(StatusCode::OK, "application/json", Bytes::from(json)),
        // Serializing strings cannot fail; answer rather than panic if it ever does.
        Err(err) => {
            tracing::error!(%err, "cannot serialize the caller description");
            text_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use domain::{Caller, CallerIdentity, Principal, Transport};
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn describes_an_overlay_caller_with_its_principal() {
        let context = RequestContext {
            caller: Caller {
                transport: Transport::Overlay,
                peer: "circuit-1".into(),
                identity: Some(CallerIdentity { id: Some("id-1".into()), name: Some("alice".into()), verified: true }),
            },
            principal: Some(Principal { name: "Alice".into(), role_attributes: vec!["admins".into()] }),
            refusal: None,
        };
        let request = Request::post("/a/b?c=d").body(()).unwrap();
        let response = describe(&request, &context);
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "transport": "overlay",
                "caller": {"peer": "circuit-1", "id": "id-1", "name": "alice", "verified": true},
                "principal": {"name": "Alice", "role_attributes": ["admins"]},
                "method": "POST",
                "path": "/a/b",
            })
        );
    }
}
