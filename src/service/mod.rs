//! The control plane as a NATS micro service named `unibus` (queue group
//! `unibus`). One way in, one way out: a request is checked for a
//! server-stamped caller identity, its body decoded strictly, handed to one
//! handler that never sees NATS types, and the result encoded here, with
//! errors mapped to wire codes in one place ([`reply_error`]).

mod handlers;

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::error::Error;
use crate::keys;
use crate::proto::{self, ErrorReply};
use crate::store::Store;
use crate::subjects;

/// What handlers may use.
pub struct Ctx {
    /// The KV store.
    pub store: Store,
}

/// The authenticated caller: the `sign_pub` the server stamped into
/// `Nats-Request-Info` (the user JWT's `name`).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Lowercase hex Ed25519 key.
    pub sign_pub: String,
}

#[derive(serde::Deserialize)]
struct RequestInfo {
    #[serde(default)]
    acc: String,
    #[serde(default)]
    user: String,
}

/// Reads the caller from the server-stamped header. Only requests that
/// crossed the APP import carry it; the server overwrites client copies.
///
/// # Errors
/// `unauthenticated` when absent, from another account, or not a key.
pub fn caller_from_headers(headers: Option<&HeaderMap>) -> Result<Caller, Error> {
    let raw = headers
        .and_then(|h| h.get(subjects::HDR_REQUEST_INFO))
        .ok_or_else(|| Error::Unauthenticated("no Nats-Request-Info identity".into()))?;
    let info: RequestInfo = serde_json::from_str(raw.as_str())
        .map_err(|_| Error::Unauthenticated("unreadable Nats-Request-Info".into()))?;
    if info.acc != subjects::ACCOUNT_APP {
        return Err(Error::Unauthenticated("request not from the APP account".into()));
    }
    keys::parse_sign_pub("caller", &info.user)
        .map_err(|_| Error::Unauthenticated("caller is not a user key".into()))?;
    Ok(Caller { sign_pub: info.user.to_ascii_lowercase() })
}

/// Runs one request through identity, decoding and its handler.
async fn dispatch(
    ctx: &Ctx,
    subject: &str,
    headers: Option<&HeaderMap>,
    body: &[u8],
) -> Result<Bytes, Error> {
    let caller = caller_from_headers(headers)?;
    match subject {
        subjects::REGISTER => ok(handlers::register(ctx, &caller, proto::decode(body)?).await?),
        subjects::WHOAMI => {
            let _: proto::Empty = proto::decode(body)?;
            ok(handlers::whoami(ctx, &caller).await?)
        }
        subjects::USER_LOOKUP => ok(handlers::lookup(ctx, &caller, proto::decode(body)?).await?),
        subjects::ADMIN_INVITE_CREATE => {
            ok(handlers::invite_create(ctx, &caller, proto::decode(body)?).await?)
        }
        other => Err(Error::Internal(format!("no handler for {other}"))),
    }
}

fn ok<T: Serialize>(reply: T) -> Result<Bytes, Error> {
    serde_json::to_vec(&reply).map(Bytes::from).map_err(|e| Error::Internal(e.to_string()))
}

/// The one mapping from [`Error`] to the wire: headers plus JSON body.
pub fn reply_error(err: &Error) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    headers.insert(subjects::HDR_SERVICE_ERROR, err.public_message().as_str());
    headers.insert(subjects::HDR_SERVICE_ERROR_CODE, err.number().to_string().as_str());
    let body = serde_json::to_vec(&ErrorReply::from(err)).unwrap_or_default();
    (headers, Bytes::from(body))
}

/// Starts the micro service and subscribes its endpoints; the returned
/// future answers requests until the connection closes.
///
/// # Errors
/// When the service or an endpoint cannot subscribe.
pub async fn start(
    client: async_nats::Client,
    ctx: Arc<Ctx>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, async_nats::Error> {
    let service = client
        .service_builder()
        .description("unibus membership and admission control plane")
        .queue_group(subjects::SERVICE_NAME)
        .start(subjects::SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await?;
    let mut endpoints = Vec::new();
    for subject in subjects::CONTROL_SUBJECTS {
        let name = subject.trim_start_matches("unibus.").replace('.', "_");
        endpoints.push(service.endpoint_builder().name(name).add(*subject).await?);
    }
    Ok(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for mut endpoint in endpoints {
            let ctx = ctx.clone();
            tasks.spawn(async move {
                while let Some(request) = endpoint.next().await {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { answer(&ctx, request).await });
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        drop(service);
    })
}

async fn answer(ctx: &Ctx, request: async_nats::service::Request) {
    let msg = &request.message;
    let subject = msg.subject.to_string();
    let result = dispatch(ctx, &subject, msg.headers.as_ref(), &msg.payload).await;
    let sent = match result {
        Ok(body) => {
            debug!(%subject, "request ok");
            request.respond(Ok(body)).await
        }
        Err(err) => {
            match &err {
                Error::Internal(detail) => error!(%subject, %detail, "request failed"),
                Error::Unavailable(detail) => warn!(%subject, %detail, "store unavailable"),
                other => info!(%subject, code = other.code(), "request refused"),
            }
            let (headers, body) = reply_error(&err);
            request.respond_with_headers(Ok(body), headers).await
        }
    };
    if let Err(e) = sent {
        warn!(%subject, error = %e, "cannot send reply");
    }
}
