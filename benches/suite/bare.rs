//! The cheapest correct callout responder: open, verify the request JWT,
//! admit everyone with a member-shaped user JWT, sign, seal (with the same
//! cached box keys as unibusd). No store, no
//! nonce check. Its connect rate is what nats-server's callout machinery
//! alone allows, the bound for unibus's own.

use std::sync::Arc;

use futures::StreamExt as _;
use unibus_proto::records::Role;
use unibus_proto::subjects;
use unibusd::callout::claims::{AuthResponse, RequestClaims, ResponseClaims, UserClaims, grant};
use unibusd::callout::jwt;
use unibusd::callout::sealing::Sealer;
use unibusd::metrics::Histogram;

/// Answers callout requests on `client` until it closes.
pub async fn serve(
    client: async_nats::Client,
    issuer: nkeys::KeyPair,
    xkey: Sealer,
    latency: Arc<Histogram>,
) {
    let issuer = std::sync::Arc::new(issuer);
    let xkey = std::sync::Arc::new(xkey);
    let mut sub = client.queue_subscribe(subjects::AUTH_CALLOUT, "bare".into()).await.unwrap();
    while let Some(msg) = sub.next().await {
        let (client, issuer, xkey, latency) = (client.clone(), issuer.clone(), xkey.clone(), latency.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let Some(reply) = msg.reply.clone() else { return };
            let Some(server_key) = msg.headers.as_ref().and_then(|h| h.get(subjects::HDR_SERVER_XKEY)) else {
                return;
            };
            let token = xkey.open(server_key.as_str(), &msg.payload).unwrap();
            let (req, _): (RequestClaims, String) =
                jwt::decode_verified(std::str::from_utf8(&token).unwrap(), 13 << 3).unwrap();
            let name = req.nats.connect_opts.nkey.clone().unwrap_or_default();
            let (_, raw) = nkeys::from_public_key(&name).unwrap();
            let key = unibus_proto::Key::from_bytes(raw);
            let perms = grant(Some(Role::Member), key, key, &[]);
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let user =
                UserClaims::new(issuer.public_key(), req.nats.user_nkey.clone(), name, perms, now, 3600);
            let resp = ResponseClaims {
                iss: issuer.public_key(),
                sub: req.nats.user_nkey.clone(),
                aud: req.nats.server_id.id.clone(),
                iat: now,
                nats: AuthResponse {
                    kind: "authorization_response",
                    version: 2,
                    jwt: Some(jwt::encode_signed(&user, &issuer).unwrap()),
                    error: None,
                },
            };
            let signed = jwt::encode_signed(&resp, &issuer).unwrap();
            let sealed = xkey.seal(server_key.as_str(), signed.as_bytes()).unwrap();
            latency.record(started.elapsed());
            let _ = client.publish(reply, sealed.into()).await;
        });
    }
}
