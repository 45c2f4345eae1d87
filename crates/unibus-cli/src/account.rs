//! Your own key and account: `keygen`, `register` (redeeming an invite,
//! whose link may name the server), `whoami`, and the block list (`block`,
//! `unblock`, `blocked`).

use std::path::Path;

use crate::error::{CliError, with_cause};
use crate::output::Out;
use crate::session::connect;
use unibus::Identity;
use unibus::proto::subjects::INVITE_LINK_PREFIX;

/// Creates a new identity file (refusing to overwrite one).
///
/// # Errors
/// [`CliError::Local`] when the file exists or cannot be written.
pub(crate) fn keygen(path: &Path, out: &Out) -> Result<(), CliError> {
    let id = Identity::generate();
    id.save(path).map_err(|e| CliError::Local(with_cause(&e)))?;
    let v = serde_json::json!({
        "identity": path, "sign_pub": id.sign_pub_hex(), "kex_pub": id.kex_pub_hex(), "nkey": id.nkey_public(),
    });
    out.emit(&v, || {
        format!(
            "new identity in {} (mode 0600; also usable as `nats --nkey`)\n  sign_pub: {}\n  kex_pub:  {}\n  nkey:     {}",
            path.display(),
            id.sign_pub_hex(),
            id.kex_pub_hex(),
            id.nkey_public()
        )
    });
    Ok(())
}

/// Redeems `invite` (token or link) for the identity's key. A link's
/// `?url=` is used unless `--url` or `UNIBUS_URL` names the server.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, the service's codes.
pub(crate) async fn register(
    url: &str,
    identity: &Path,
    invite: &str,
    name: Option<&str>,
    out: &Out,
) -> Result<(), CliError> {
    let url = link_url(invite)
        .filter(|_| std::env::var_os("UNIBUS_URL").is_none() && !url_flag_given())
        .unwrap_or_else(|| url.to_string());
    let c = connect(&url, identity).await?;
    let user = c.register(invite, name).await?;
    out.user(&user);
    Ok(())
}

fn url_flag_given() -> bool {
    std::env::args().any(|a| a == "--url" || a.starts_with("--url="))
}

/// The `?url=` of an invite link, percent-decoded.
fn link_url(invite: &str) -> Option<String> {
    let query = invite.strip_prefix(INVITE_LINK_PREFIX)?.split_once('?')?.1;
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("url="))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let h = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            out.push(h);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

/// Prints this device's account record.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, the service's codes.
pub(crate) async fn whoami(url: &str, identity: &Path, out: &Out) -> Result<(), CliError> {
    out.account(&connect(url, identity).await?.whoami_device().await?);
    Ok(())
}

/// A change to, or a listing of, the block list.
pub(crate) enum BlockOp<'a> {
    /// Block a key.
    Add(&'a str),
    /// Unblock a key.
    Remove(&'a str),
    /// List the blocked keys.
    List,
}

/// Applies `op` and prints the block list as it is after it.
///
/// # Errors
/// [`CliError`]: the identity file, the connection, the service's codes.
pub(crate) async fn block(url: &str, identity: &Path, op: BlockOp<'_>, out: &Out) -> Result<(), CliError> {
    let c = connect(url, identity).await?;
    let keys = match op {
        BlockOp::Add(sign_pub) => c.block_add(sign_pub).await?,
        BlockOp::Remove(sign_pub) => c.block_remove(sign_pub).await?,
        BlockOp::List => c.block_list().await?,
    };
    out.blocked(&keys);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::link_url;

    #[test]
    fn link_url_is_percent_decoded() {
        let t = "ab".repeat(32);
        let link = format!("unibus://invite/{t}?url=nats%3A%2F%2F127.0.0.1%3A4222%2Cnats%3A%2F%2Fh2%3A4222");
        assert_eq!(link_url(&link).as_deref(), Some("nats://127.0.0.1:4222,nats://h2:4222"));
        assert_eq!(link_url(&format!("unibus://invite/{t}")), None);
        assert_eq!(link_url(&t), None);
    }
}
