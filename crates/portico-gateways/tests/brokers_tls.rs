//! The broker gateways' TLS and authentication, against private brokers (`nats-server`,
//! `mosquitto`) started with certificates made at test time (rcgen): the right CA connects
//! and messages flow, a wrong CA is refused with a node error that says why, mutual TLS with
//! a client certificate, and tokens and users with passwords from files; wrong credentials
//! are refused, and no secret shows in the node's message.

mod broker_support;

use std::sync::Arc;
use std::time::Duration;

use broker_support::{Pki, PrivateBroker, Rig, data, path, unique, wait_until};
use portico::Phase;
use portico_gateways::mqtt::Mqtt;
use portico_gateways::nats::Nats;

fn rig() -> Rig {
    Rig::new("natstls", "nats", Arc::new(Nats))
}

/// Runs configuration `c` and publishes one message to it over `client`; the message's event.
async fn one_message(rig: &mut Rig, config: &str, client: &async_nats::Client, subject: &str) {
    rig.apply(&[("c", config)]).await;
    rig.wait_phase("c", Phase::Running).await;
    client
        .publish(subject.to_string(), "hello".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let got = rig.exactly(1, Duration::from_millis(200)).await;
    assert_eq!(data(&got[0]), "hello");
    assert_eq!(got[0].source, "natstls/c");
}

/// Waits until node `c` is in `Error` with a message containing `needle`; the message.
async fn error_saying(rig: &Rig, needle: &str) -> String {
    wait_until(&format!("an Error node saying `{needle}`"), || async {
        rig.node("c")
            .filter(|n| n.phase == Phase::Error && n.message.contains(needle))
            .map(|n| n.message)
    })
    .await
}

/// A private `nats-server` with TLS, its certificate signed by `pki`'s CA for localhost and
/// 127.0.0.1: the server, its `tls://` URL, and the test's own client.
async fn nats_tls(pki: &Pki) -> (PrivateBroker, String, async_nats::Client) {
    let (cert, key) = pki.issue("server", &["localhost", "127.0.0.1"]);
    let server = PrivateBroker::start(
        "nats-server",
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "{port}",
            "--tls",
            "--tlscert",
            &path(&cert),
            "--tlskey",
            &path(&key),
        ],
    )
    .await;
    let url = format!("tls://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca_file())
        .require_tls(true)
        .connect(url.as_str())
        .await
        .expect("the test's own client connects");
    (server, url, client)
}

#[tokio::test]
async fn tls_with_the_right_ca_connects_and_a_wrong_ca_is_refused_clearly() {
    let pki = Pki::new();
    let (_server, url, client) = nats_tls(&pki).await;
    let subject = unique("portico.tls.");
    let mut rig = rig();
    let config = format!(
        "url: {url}\nsubject: {subject}\ntls:\n  caFile: {}",
        path(&pki.ca_file())
    );
    one_message(&mut rig, &config, &client, &subject).await;

    // Another CA: the server's certificate is refused, and the node says why.
    let other = Pki::new();
    let config = format!(
        "url: {url}\nsubject: {subject}\ntls:\n  caFile: {}",
        path(&other.ca_file())
    );
    rig.apply(&[("c", &config)]).await;
    let said = error_saying(&rig, "cannot connect to NATS").await;
    assert!(
        said.to_lowercase().contains("certificate") || said.to_lowercase().contains("tls"),
        "{said}"
    );
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn server_name_checks_the_certificate_against_another_name_than_the_host() {
    let pki = Pki::new();
    // A certificate for `nats.test` and `localhost`, not for 127.0.0.1.
    let (cert, key) = pki.issue("server", &["nats.test", "localhost"]);
    let server = PrivateBroker::start(
        "nats-server",
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "{port}",
            "--tls",
            "--tlscert",
            &path(&cert),
            "--tlskey",
            &path(&key),
        ],
    )
    .await;
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca_file())
        .require_tls(true)
        .connect(format!("tls://localhost:{}", server.port))
        .await
        .expect("the test's own client connects");
    let subject = unique("portico.tls.");
    let url = format!("tls://127.0.0.1:{}", server.port);
    let config = |server_name: &str| {
        format!(
            "url: {url}\nsubject: {subject}\ntls:\n  caFile: {}\n{server_name}",
            path(&pki.ca_file())
        )
    };
    let mut rig = rig();
    one_message(
        &mut rig,
        &config("  serverName: nats.test"),
        &client,
        &subject,
    )
    .await;

    // Without it, 127.0.0.1 is not a name the certificate carries.
    rig.apply(&[("c", &config(""))]).await;
    let said = error_saying(&rig, "cannot connect to NATS").await;
    assert!(
        said.to_lowercase().contains("certificate") || said.to_lowercase().contains("tls"),
        "{said}"
    );
    rig.supervisor.stop_all().await;
}

/// Replaces `path`'s contents the way a renewal does: a new file renamed over the old one.
fn renew(path: &std::path::Path, contents: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test]
async fn a_changed_tls_file_is_taken_while_connected() {
    let pki = Pki::new();
    let (_server, url, client) = nats_tls(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let right = std::fs::read(pki.ca_file()).unwrap();
    std::fs::write(&ca, &right).unwrap();
    let subject = unique("portico.renew.");
    let mut rig = rig();
    let config = format!(
        "url: {url}\nsubject: {subject}\ntls:\n  caFile: {}",
        path(&ca)
    );
    one_message(&mut rig, &config, &client, &subject).await;

    // The server stays up; only the file changes. The gateway connects again with the new
    // CA, which does not sign the server's certificate: the node says so.
    renew(&ca, &std::fs::read(Pki::new().ca_file()).unwrap());
    let said = error_saying(&rig, "cannot connect to NATS").await;
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    // The right CA again: connected and consuming, without the configuration changing.
    renew(&ca, &right);
    rig.wait_phase("c", Phase::Running).await;
    client
        .publish(subject.clone(), "again".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let got = rig.exactly(1, Duration::from_millis(200)).await;
    assert_eq!(data(&got[0]), "again");
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = pki.issue("client", &["portico-client"]);
    let ca = path(&pki.ca_file());
    let server = PrivateBroker::start(
        "nats-server",
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "{port}",
            "--tlsverify",
            "--tlscert",
            &path(&cert),
            "--tlskey",
            &path(&key),
            "--tlscacert",
            &ca,
        ],
    )
    .await;
    let url = format!("tls://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca_file())
        .add_client_certificate(client_cert.clone(), client_key.clone())
        .require_tls(true)
        .connect(url.as_str())
        .await
        .expect("the test's own client connects");
    let subject = unique("portico.mtls.");
    let mut rig = rig();
    // Without the client certificate the server refuses the connection.
    let without = format!("url: {url}\nsubject: {subject}\ntls:\n  caFile: {ca}");
    rig.apply(&[("c", &without)]).await;
    error_saying(&rig, "cannot connect to NATS").await;
    let with = format!(
        "url: {url}\nsubject: {subject}\ntls:\n  caFile: {ca}\n  certFile: {}\n  keyFile: {}",
        path(&client_cert),
        path(&client_key)
    );
    one_message(&mut rig, &with, &client, &subject).await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn a_token_and_a_user_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let server = PrivateBroker::start(
        "nats-server",
        &["-a", "127.0.0.1", "-p", "{port}", "--auth", "s3cret-token"],
    )
    .await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .token("s3cret-token".into())
        .connect(url.as_str())
        .await
        .unwrap();
    let subject = unique("portico.token.");
    let mut rig = rig();
    let config = format!(
        "url: {url}\nsubject: {subject}\ntokenFile: {}",
        path(&token_file)
    );
    one_message(&mut rig, &config, &client, &subject).await;
    // A wrong token: refused, and the node's message never shows a token.
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "not-the-token").unwrap();
    let config = format!(
        "url: {url}\nsubject: {subject}\ntokenFile: {}",
        path(&wrong_file)
    );
    rig.apply(&[("c", &config)]).await;
    let said = error_saying(&rig, "cannot connect to NATS").await;
    assert!(
        !said.contains("not-the-token") && !said.contains("s3cret"),
        "{said}"
    );
    rig.supervisor.stop_all().await;
    drop(server);

    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pa55\n").unwrap();
    let server = PrivateBroker::start(
        "nats-server",
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "{port}",
            "--user",
            "gateway",
            "--pass",
            "pa55",
        ],
    )
    .await;
    let url = format!("nats://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .user_and_password("gateway".into(), "pa55".into())
        .connect(url.as_str())
        .await
        .unwrap();
    let config = format!(
        "url: {url}\nsubject: {subject}\nuser: gateway\npasswordFile: {}",
        path(&password_file)
    );
    one_message(&mut rig, &config, &client, &subject).await;
    rig.supervisor.stop_all().await;
}

#[test]
fn settings_name_the_field() {
    let check = |yaml: &str| {
        portico::testing::parse_config::<portico_gateways::nats::NatsConfig>(yaml)
            .and_then(|c| c.check())
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let base = "url: nats://127.0.0.1:4222\nsubject: s\n";
    assert!(
        check(&format!("{base}tls: {{certFile: c}}"))
            .unwrap_err()
            .contains("tls.keyFile")
    );
    assert!(
        check(&format!("{base}user: u"))
            .unwrap_err()
            .contains("passwordFile")
    );
    assert!(
        check(&format!("{base}tokenFile: t\ncredentialsFile: c"))
            .unwrap_err()
            .contains("give one")
    );
    assert!(check(&format!("{base}tls: {{caFile: /ca.pem}}\ntokenEnv: T")).is_ok());
}

/// A private Mosquitto with a TLS listener (and, given `extra`, more of its configuration).
async fn mosquitto_tls(pki: &Pki, extra: &str) -> PrivateBroker {
    let (cert, key) = pki.issue("mosquitto", &["localhost", "127.0.0.1"]);
    let config = format!(
        "listener {{port}} 127.0.0.1\ncertfile {}\nkeyfile {}\n{extra}\n",
        path(&cert),
        path(&key)
    );
    PrivateBroker::start_with_config("mosquitto", &config, &["-c", "{dir}/broker.conf"]).await
}

/// Publishes `hello` to `topic` with `mosquitto_pub` over TLS, with `args` added.
fn publish_tls(port: u16, pki: &Pki, topic: &str, args: &[&str]) {
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args([
            "--cafile",
            &path(&pki.ca_file()),
            "-t",
            topic,
            "-m",
            "hello",
        ])
        .args(args)
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn mqtt_over_tls_with_a_password_and_a_wrong_ca_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c", &path(&passwords), "gateway", "pa55"])
        .output()
        .expect("mosquitto_passwd");
    assert!(made.status.success());
    let broker = mosquitto_tls(
        &pki,
        &format!("allow_anonymous false\npassword_file {}", path(&passwords)),
    )
    .await;
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pa55\n").unwrap();
    let topic = unique("portico/tls/");
    let mut rig = Rig::new("mqtttls", "mqtt", Arc::new(Mqtt));
    let config = |ca: &Pki, password: &std::path::Path| {
        format!(
            "url: mqtts://127.0.0.1:{}\ntopic: '{topic}'\nclientId: {}\nqos: 1\nuser: gateway\npasswordFile: {}\ntls:\n  caFile: {}",
            broker.port,
            unique("tls"),
            path(password),
            path(&ca.ca_file())
        )
    };
    rig.apply(&[("c", &config(&pki, &password_file))]).await;
    rig.wait_phase("c", Phase::Running).await;
    publish_tls(broker.port, &pki, &topic, &["-u", "gateway", "-P", "pa55"]);
    let got = rig.exactly(1, Duration::from_millis(200)).await;
    assert_eq!(data(&got[0]), "hello");

    // A wrong password: refused, and not shown.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it").unwrap();
    rig.apply(&[("c", &config(&pki, &wrong))]).await;
    let said = error_saying(&rig, "MQTT broker").await;
    assert!(!said.contains("not-it") && !said.contains("pa55"), "{said}");
    // Another CA: the broker's certificate is refused.
    let other = Pki::new();
    rig.apply(&[("c", &config(&other, &password_file))]).await;
    let said = error_saying(&rig, "MQTT broker").await;
    assert!(
        said.to_lowercase().contains("certificate") || said.to_lowercase().contains("tls"),
        "{said}"
    );
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn mqtt_mutual_tls() {
    let pki = Pki::new();
    let broker = mosquitto_tls(
        &pki,
        &format!(
            "allow_anonymous true\ncafile {}\nrequire_certificate true",
            path(&pki.ca_file())
        ),
    )
    .await;
    let (cert, key) = pki.issue("client", &["portico-client"]);
    let topic = unique("portico/mtls/");
    let mut rig = Rig::new("mqttmtls", "mqtt", Arc::new(Mqtt));
    let config = format!(
        "url: mqtts://127.0.0.1:{}\ntopic: '{topic}'\nclientId: {}\nqos: 1\ntls:\n  caFile: {}\n  certFile: {}\n  keyFile: {}",
        broker.port,
        unique("mtls"),
        path(&pki.ca_file()),
        path(&cert),
        path(&key)
    );
    rig.apply(&[("c", &config)]).await;
    rig.wait_phase("c", Phase::Running).await;
    publish_tls(
        broker.port,
        &pki,
        &topic,
        &["--cert", &path(&cert), "--key", &path(&key)],
    );
    let got = rig.exactly(1, Duration::from_millis(200)).await;
    assert_eq!(data(&got[0]), "hello");
    rig.supervisor.stop_all().await;
}

/// A private redis-server with TLS only (and, given `extra`, more arguments).
async fn redis_tls(pki: &Pki, extra: &[&str]) -> PrivateBroker {
    let (cert, key) = pki.issue("redis", &["localhost", "127.0.0.1"]);
    let (cert, key) = (path(&cert), path(&key));
    let mut args = vec![
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-auth-clients",
        "no",
    ];
    args.extend_from_slice(extra);
    PrivateBroker::start("redis-server", &args).await
}

#[tokio::test]
async fn redis_over_tls_with_an_acl_user() {
    let pki = Pki::new();
    let broker = redis_tls(
        &pki,
        &["--user", "gateway", "on", ">pa55", "~*", "&*", "+@all"],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pa55\n").unwrap();
    let channel = unique("portico.tls.");
    let mut rig = Rig::new(
        "redistls",
        "redis",
        Arc::new(portico_gateways::redis::Redis),
    );
    let config = |ca: &Pki, password: &std::path::Path| {
        format!(
            "url: rediss://127.0.0.1:{}\nchannels: ['{channel}']\nuser: gateway\npasswordFile: {}\ntls:\n  caFile: {}",
            broker.port,
            path(password),
            path(&ca.ca_file())
        )
    };
    rig.apply(&[("c", &config(&pki, &password_file))]).await;
    rig.wait_phase("c", Phase::Running).await;
    let publish = std::process::Command::new("redis-cli")
        .args(["-p", &broker.port.to_string(), "--tls", "--cacert"])
        .arg(pki.ca_file())
        .args(["--user", "gateway", "--pass", "pa55", "--no-auth-warning"])
        .args(["PUBLISH", &channel, "hello"])
        .output()
        .expect("redis-cli");
    assert!(publish.status.success());
    let got = rig.exactly(1, Duration::from_millis(200)).await;
    assert_eq!(data(&got[0]), "hello");

    // A wrong password, then another CA: refused, the node says so, no secret shown.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it").unwrap();
    rig.apply(&[("c", &config(&pki, &wrong))]).await;
    let said = error_saying(&rig, "Redis").await;
    assert!(!said.contains("not-it") && !said.contains("pa55"), "{said}");
    let other = Pki::new();
    rig.apply(&[("c", &config(&other, &password_file))]).await;
    let said = error_saying(&rig, "Redis").await;
    assert!(
        said.to_lowercase().contains("certificate") || said.to_lowercase().contains("tls"),
        "{said}"
    );
    rig.supervisor.stop_all().await;
}

/// A private RabbitMQ node (its own node name, Erlang distribution port, database and logs in
/// a temporary directory) with only a TLS listener, which asks for a client certificate
/// signed by `pki`'s CA, and one user `gateway` with password `pa55`. RabbitMQ's start script
/// forks the Erlang VM, so the node runs in a process group of its own, killed whole on drop.
struct RabbitTls {
    port: u16,
    group: Option<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl RabbitTls {
    async fn start(pki: &Pki, cert_names: &[&str]) -> RabbitTls {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let port = broker_support::free_port();
        let (cert, key) = pki.issue("rabbit", cert_names);
        let conf = dir.path().join("rabbitmq.conf");
        std::fs::write(
            &conf,
            format!(
                "listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n\
                 default_user = gateway\ndefault_pass = pa55\nloopback_users = none\n",
                path(&pki.ca_file()),
                path(&cert),
                path(&key)
            ),
        )
        .unwrap();
        let plugins = dir.path().join("enabled_plugins");
        std::fs::write(&plugins, "[].\n").unwrap();
        let child = std::process::Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("RABBITMQ_NODENAME", unique("portico") + "@localhost")
            .env(
                "RABBITMQ_DIST_PORT",
                broker_support::free_port().to_string(),
            )
            .env("RABBITMQ_CONFIG_FILE", dir.path().join("rabbitmq"))
            .env("RABBITMQ_MNESIA_BASE", dir.path().join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.path().join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_PID_FILE", dir.path().join("pid"))
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("RabbitMQ (Debian package rabbitmq-server)");
        let rabbit = RabbitTls {
            port,
            group: Some(child),
            _dir: dir,
        };
        // An Erlang VM and RabbitMQ's boot: tens of seconds on a busy machine.
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "RabbitMQ did not listen on {port} within 180 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rabbit
    }
}

impl Drop for RabbitTls {
    fn drop(&mut self) {
        if let Some(mut child) = self.group.take() {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Publishes `hello` to fanout exchange `exchange` over TLS with lapin's own TLS (not the
/// gateway's code), presenting `client` as its certificate.
async fn publish_amqps(
    port: u16,
    pki: &Pki,
    client: (&std::path::Path, &std::path::Path),
    exchange: &str,
) {
    use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
    use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
    let tls = OwnedTLSConfig {
        identity: Some(OwnedIdentity::PKCS8 {
            pem: std::fs::read(client.0).unwrap(),
            key: std::fs::read(client.1).unwrap(),
        }),
        cert_chain: Some(std::fs::read_to_string(pki.ca_file()).unwrap()),
    };
    let conn = lapin::Connection::connect_with_config(
        &format!("amqps://gateway:pa55@localhost:{port}/%2f"),
        lapin::ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime().unwrap(),
    )
    .await
    .expect("the test's own AMQP connection over TLS");
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        exchange.into(),
        "".into(),
        BasicPublishOptions::default(),
        b"hello",
        Default::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn amqp_over_mutual_tls_with_a_server_name_and_a_password_file() {
    let pki = Pki::new();
    // The broker's certificate names `rabbit.test` and `localhost`, not 127.0.0.1, which the
    // gateway connects to: only `serverName` makes it acceptable.
    let rabbit = RabbitTls::start(&pki, &["rabbit.test", "localhost"]).await;
    let (cert, key) = pki.issue("client", &["portico-client"]);
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pa55\n").unwrap();
    let exchange = unique("portico.tls.");
    let mut rig = Rig::new("amqptls", "amqp", Arc::new(portico_gateways::amqp::Amqp));
    let config = |ca: &Pki, password: &std::path::Path, server_name: &str| {
        format!(
            "url: amqps://127.0.0.1:{}/%2f\nexchangeName: {exchange}\nexchangeType: fanout\n\
             user: gateway\npasswordFile: {}\ntls:\n  caFile: {}\n  certFile: {}\n  keyFile: {}\n{server_name}",
            rabbit.port,
            path(password),
            path(&ca.ca_file()),
            path(&cert),
            path(&key)
        )
    };
    rig.apply(&[(
        "c",
        &config(&pki, &password_file, "  serverName: rabbit.test"),
    )])
    .await;
    // RabbitMQ may take a moment after listening before it takes logins.
    wait_until("the amqp node Running", || async {
        rig.node("c")
            .filter(|n| n.phase == Phase::Running)
            .map(|_| ())
    })
    .await;
    publish_amqps(rabbit.port, &pki, (&cert, &key), &exchange).await;
    let got = rig.exactly(1, Duration::from_millis(200)).await;
    assert_eq!(data(&got[0]), "hello");

    // Without the server name, the certificate does not match 127.0.0.1.
    rig.apply(&[("c", &config(&pki, &password_file, ""))]).await;
    let said = error_saying(&rig, "AMQP broker").await;
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    // A wrong password: refused, and not shown.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it").unwrap();
    rig.apply(&[("c", &config(&pki, &wrong, "  serverName: rabbit.test"))])
        .await;
    let said = error_saying(&rig, "AMQP broker").await;
    assert!(!said.contains("not-it") && !said.contains("pa55"), "{said}");
    // Another CA: the broker's certificate is refused.
    let other = Pki::new();
    rig.apply(&[(
        "c",
        &config(&other, &password_file, "  serverName: rabbit.test"),
    )])
    .await;
    let said = error_saying(&rig, "AMQP broker").await;
    assert!(said.to_lowercase().contains("certificate"), "{said}");
    rig.supervisor.stop_all().await;
}
