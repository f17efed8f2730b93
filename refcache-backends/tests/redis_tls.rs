//! TLS to Redis (`rediss://`, feature `redis-tls`): against a `redis-server` of its own with a TLS port, whose CA
//! and certificates each test makes with rcgen. A task runs and its value is read back over TLS; a server the
//! client cannot verify, a missing client certificate, and TLS settings that cannot work are refused with errors
//! that say why.
#![cfg(feature = "redis-tls")]

use std::time::Duration;

use futures::future::BoxFuture;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use refcache_backends::redis::{
    RedisConfig, RedisConfigError, RedisServer, RedisServerOptions, RedisServerTls,
    RedisTaskBackend, RedisTls,
};
use refcache_core::registry::TaskRegistration;
use refcache_core::{
    BackendError, CacheKey, RefId, Submission, TaskBackend, TaskContext, TaskError, TaskOptions,
    TaskSpec, TaskStatus,
};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);
const DOUBLE: &str = "it.redis.tls.double";

fn double(
    args: Value,
    _ctx: TaskContext,
) -> BoxFuture<'static, Result<refcache_core::JsonText, TaskError>> {
    Box::pin(async move {
        Ok(refcache_core::JsonText::from(json!(
            args["n"].as_i64().unwrap_or_default() * 2
        )))
    })
}

inventory::submit!(TaskRegistration::new(|| DOUBLE, double));

/// A CA, and a certificate with its key signed by it.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = params.self_signed(&key).unwrap();
        Self {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (an IP address becomes an IP SAN), as (cert PEM, key PEM).
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn tls_server(pki: &Pki, auth_clients: bool) -> RedisServer {
    let (cert, key) = pki.issue(
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let tls = RedisServerTls::new(cert, key, pki.ca_pem.clone()).auth_clients(auth_clients);
    RedisServer::start_with(RedisServerOptions::default().tls(tls)).expect("redis-server with TLS")
}

/// Runs a task through `backend` and returns its value.
async fn run_double(backend: &RedisTaskBackend, n: i64) -> Value {
    let args = json!({ "n": n });
    let key = CacheKey::from_json(DOUBLE, "it", &args).unwrap();
    let ref_id = RefId::generate("it");
    let spec = TaskSpec::new(ref_id.clone(), key, DOUBLE, "it", args)
        .with_options(TaskOptions::default().ttl(Some(Duration::from_secs(600))));
    backend.submit(Submission::new(spec, None)).await.unwrap();
    let snapshot = backend
        .wait(&ref_id, Some(tokio::time::Instant::now() + PATIENCE))
        .await
        .unwrap()
        .expect("the task is known");
    assert_eq!(snapshot.info.status, TaskStatus::Complete);
    snapshot
        .value
        .expect("a complete task has its value")
        .value
        .to_value()
}

/// `rediss://` with the test CA: the backend connects, runs a task and reads its value over TLS. The same with the
/// CA given as `tls_ca_file` in the URL, as `REFCACHE_BACKEND` would carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_over_tls_with_the_ca_in_code_or_in_the_url() {
    let pki = Pki::new("refcache test CA");
    let server = tls_server(&pki, false);
    let url = server.tls_url().unwrap();
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");

    let config = RedisConfig::from_url(&url)
        .unwrap()
        .tls(RedisTls::default().root_cert(pki.ca_pem.clone()));
    let backend = RedisTaskBackend::new(config).unwrap();
    backend.start().await.expect("PING over TLS");
    assert_eq!(run_double(&backend, 21).await, json!(42));

    let dir = tempdir();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let config =
        RedisConfig::from_url(&format!("{url}?tls_ca_file={}", ca_file.display())).unwrap();
    assert_eq!(config.tls.root_cert.as_deref(), Some(pki.ca_pem.as_bytes()));
    assert!(
        format!("{config:?}").contains("root_cert: \"<set>\""),
        "Debug says a certificate is set, and nothing more: {config:?}"
    );
    let backend = RedisTaskBackend::new(config).unwrap();
    assert_eq!(run_double(&backend, 5).await, json!(10));
}

/// A server whose certificate the client cannot verify is refused: with the system's roots (the test CA is not
/// among them), and with another CA of the same name. The error is `Unavailable`, naming the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_client_cannot_verify_is_refused() {
    let pki = Pki::new("refcache test CA");
    let server = tls_server(&pki, false);
    let url = server.tls_url().unwrap();

    let system_roots = RedisTaskBackend::new(RedisConfig::from_url(&url).unwrap()).unwrap();
    let err = system_roots.start().await.unwrap_err();
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");

    let impostor = Pki::new("refcache test CA");
    let config = RedisConfig::from_url(&url)
        .unwrap()
        .tls(RedisTls::default().root_cert(impostor.ca_pem.clone()));
    let err = RedisTaskBackend::new(config)
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// A server that requires client certificates (`tls-auth-clients yes`) refuses a client without one, and accepts
/// one signed by its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new("refcache test CA");
    let server = tls_server(&pki, true);
    let url = server.tls_url().unwrap();
    let ca_only = RedisTls::default().root_cert(pki.ca_pem.clone());

    let without =
        RedisTaskBackend::new(RedisConfig::from_url(&url).unwrap().tls(ca_only.clone())).unwrap();
    assert!(without.start().await.is_err(), "no client certificate");

    let (cert, key) = pki.issue(&["refcache client"], ExtendedKeyUsagePurpose::ClientAuth);
    let with = RedisTaskBackend::new(
        RedisConfig::from_url(&url)
            .unwrap()
            .tls(ca_only.client_cert(cert, key)),
    )
    .unwrap();
    with.start().await.expect("PING with a client certificate");
    assert_eq!(run_double(&with, 4).await, json!(8));
}

/// Settings that cannot work are refused when the backend is built, with the fix in the message.
#[test]
fn tls_settings_that_cannot_work_are_refused() {
    let ca = Pki::new("refcache test CA").ca_pem;
    let plain = RedisConfig::from_url("redis://127.0.0.1:6379/0")
        .unwrap()
        .tls(RedisTls::default().root_cert(ca.clone()));
    let err = RedisTaskBackend::new(plain).unwrap_err();
    assert!(err.to_string().contains("use `rediss://`"), "{err}");

    let mut half = RedisTls::default();
    half.client_cert = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
    let err = RedisConfig::from_url("rediss://127.0.0.1:6379/0")
        .unwrap()
        .tls(half)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("set both"), "{err}");

    let err = RedisConfig::from_url("rediss://127.0.0.1:6379/0?tls_ca_file=/nonexistent/ca.pem")
        .unwrap_err();
    assert!(
        matches!(&err, RedisConfigError::TlsFile { name, .. } if name == "tls_ca_file"),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "refcache-redis-tls-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
