//! A raw-protocol NATS client: a plain TCP socket writing NATS frames as an
//! attacker would, with no client library to normalise what goes out. It
//! signs the server's nonce with an identity's key, so it is admitted by the
//! callout like any other client, then sends arbitrary header blocks.

use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use unibus::Identity;

/// One message received: subject, reply subject, raw header block, body.
#[derive(Debug, Clone)]
pub struct Frame {
    pub subject: String,
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The wire error code of a control-plane reply (`None` on success).
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.payload).ok()?;
        v.pointer("/error/code")?.as_str().map(str::to_string)
    }

    /// The reply body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_default()
    }
}

/// A raw connection, admitted through the callout.
pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    /// The identity's inbox prefix (`_INBOX.<sign_pub>`).
    pub inbox: String,
}

impl Raw {
    /// Connects to `url` (`nats://127.0.0.1:port`) as `id`, signing the
    /// nonce; `Err` carries the server's `-ERR` line or the I/O error.
    pub async fn connect(url: &str, id: &Identity) -> Result<Raw, String> {
        let addr = url.trim_start_matches("nats://");
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut raw = Raw { stream, buf: BytesMut::new(), inbox: format!("_INBOX.{}", id.sign_pub_hex()) };
        let info = raw.line().await?;
        let info: serde_json::Value =
            serde_json::from_str(info.strip_prefix("INFO ").ok_or("no INFO")?).map_err(|e| e.to_string())?;
        let nonce = info["nonce"].as_str().ok_or("no nonce")?.to_string();
        let kp = nkeys::KeyPair::from_seed(&id.nkey_seed()).map_err(|e| e.to_string())?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(kp.sign(nonce.as_bytes()).map_err(|e| e.to_string())?);
        let connect = serde_json::json!({
            "verbose": false, "pedantic": false, "lang": "raw", "version": "0", "protocol": 1,
            "headers": true, "no_responders": true, "nkey": kp.public_key(), "sig": sig,
        });
        raw.send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes()).await?;
        loop {
            let line = raw.line().await?;
            if line == "PONG" {
                return Ok(raw);
            }
            if line.starts_with("-ERR") {
                return Err(line);
            }
        }
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).await.map_err(|e| e.to_string())
    }

    /// Subscribes `sid` to `subject`.
    pub async fn sub(&mut self, subject: &str, sid: u32) -> Result<(), String> {
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes()).await
    }

    /// Publishes with a header block given byte for byte.
    pub async fn hpub(
        &mut self,
        subject: &str,
        reply: &str,
        header: &[u8],
        body: &[u8],
    ) -> Result<(), String> {
        let mut frame =
            format!("HPUB {subject} {reply} {} {}\r\n", header.len(), header.len() + body.len()).into_bytes();
        frame.extend_from_slice(header);
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\r\n");
        self.send(&frame).await
    }

    /// Round trip: every frame sent before has been processed by the server.
    pub async fn ping(&mut self) -> Result<(), String> {
        self.send(b"PING\r\n").await?;
        while self.next_op().await? != Op::Pong {}
        Ok(())
    }

    /// The next message within `wait` (answering server PINGs); `Ok(None)`
    /// when none came, `Err` when the server closed the connection.
    pub async fn next_msg(&mut self, wait: Duration) -> Result<Option<Frame>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.next_op()).await {
                Err(_) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Op::Msg(f))) => return Ok(Some(f)),
                Ok(Ok(Op::Err(line))) => return Err(line),
                Ok(Ok(_)) => {}
            }
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        Ok(())
    }

    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.advance(at + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n + 2 {
            self.fill().await?;
        }
        let out = self.buf.split_to(n).to_vec();
        self.buf.advance(2);
        Ok(out)
    }

    async fn next_op(&mut self) -> Result<Op, String> {
        let line = self.line().await?;
        let args: Vec<&str> = line.split_whitespace().collect();
        match args.first().copied() {
            Some("PING") => {
                self.send(b"PONG\r\n").await?;
                Ok(Op::Other)
            }
            Some("PONG") => Ok(Op::Pong),
            Some("-ERR") => Ok(Op::Err(line)),
            Some("MSG") => {
                let n: usize = args.last().and_then(|n| n.parse().ok()).ok_or("bad MSG")?;
                let payload = self.take(n).await?;
                Ok(Op::Msg(Frame { subject: args[1].into(), header: Vec::new(), payload }))
            }
            Some("HMSG") => {
                let total: usize = args[args.len() - 1].parse().map_err(|_| "bad HMSG")?;
                let hlen: usize = args[args.len() - 2].parse().map_err(|_| "bad HMSG")?;
                let mut all = self.take(total).await?;
                let payload = all.split_off(hlen);
                Ok(Op::Msg(Frame { subject: args[1].into(), header: all, payload }))
            }
            _ => Ok(Op::Other),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Op {
    Msg(Frame),
    Pong,
    Err(String),
    Other,
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.subject == other.subject && self.header == other.header && self.payload == other.payload
    }
}
