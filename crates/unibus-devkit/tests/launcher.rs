//! The nats-server launcher against a real nats-server: the repository's
//! config with and without the callout's xkey, a port the server picks and
//! reports, pause/resume, and stop freeing the port.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use unibus_devkit::natsserver::{self, NatsServer, RANDOM_PORT};
use unibusd::secrets::Secrets;

#[test]
fn config_without_xkey_drops_only_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let with = std::fs::read_to_string(natsserver::write_config(dir.path(), true).unwrap()).unwrap();
    assert_eq!(with, unibus_devkit::NATS_CONF);
    let without = std::fs::read_to_string(natsserver::write_config(dir.path(), false).unwrap()).unwrap();
    let dropped: Vec<&str> = with.lines().filter(|l| !without.lines().any(|w| w == *l)).collect();
    assert!(
        !dropped.is_empty() && dropped.iter().all(|l| l.trim_start().starts_with("xkey:")),
        "{dropped:?}"
    );
}

#[tokio::test]
async fn starts_on_its_own_port_pauses_resumes_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::generate();
    let spec = natsserver::unibus_spec(dir.path(), &secrets, true, RANDOM_PORT, "devkit-test")
        .unwrap_or_else(|e| panic!("{e}"));
    let server = NatsServer::start(&spec).await.unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(server.port, RANDOM_PORT);
    assert_eq!(server.url, format!("nats://127.0.0.1:{}", server.port));

    // A new connection is accepted by the kernel either way; the server
    // greets it with INFO only while it runs.
    server.pause();
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let mut greeting = [0u8; 4];
    let paused = { tokio::time::timeout(Duration::from_millis(300), socket.read_exact(&mut greeting)).await };
    assert!(paused.is_err(), "a paused server greeted: {greeting:?}");
    server.resume();
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut greeting))
        .await
        .expect("greets after resume")
        .unwrap();
    assert_eq!(&greeting, b"INFO");
    drop(socket);

    let port = server.port;
    server.stop().await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open");
}
