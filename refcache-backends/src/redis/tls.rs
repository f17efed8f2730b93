//! TLS to Redis (`rediss://`, feature `redis-tls`): the certificates a [`RedisConfig`](super::RedisConfig) carries,
//! and the client built from them.

/// The certificates for a `rediss://` connection, as PEM. With none set, the server's certificate is checked
/// against the system's roots. `Debug` shows only which are set: keys end up in logs otherwise.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisTls {
    /// The CA certificate(s) that signed the server's certificate (a private CA, a managed Redis's CA bundle).
    pub root_cert: Option<Vec<u8>>,
    /// This client's certificate, for a server that requires one (`tls-auth-clients yes`); with `client_key`.
    pub client_cert: Option<Vec<u8>>,
    /// The key of `client_cert`.
    pub client_key: Option<Vec<u8>>,
}

impl RedisTls {
    /// Trust the CA certificate(s) in `pem` for the server's certificate.
    pub fn root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_cert = Some(pem.into());
        self
    }

    /// Present this client certificate and its key (mutual TLS).
    pub fn client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_cert = Some(cert_pem.into());
        self.client_key = Some(key_pem.into());
        self
    }

    /// Whether any certificate is set.
    pub fn is_set(&self) -> bool {
        self.root_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |v: &Option<Vec<u8>>| if v.is_some() { "<set>" } else { "<not set>" };
        f.debug_struct("RedisTls")
            .field("root_cert", &shown(&self.root_cert))
            .field("client_cert", &shown(&self.client_cert))
            .field("client_key", &shown(&self.client_key))
            .finish()
    }
}

/// The client for `url` with these certificates. The URL and the settings were checked by
/// [`RedisConfig::validate`](super::RedisConfig::validate).
pub(super) fn client(url: &str, tls: &RedisTls) -> redis::RedisResult<redis::Client> {
    #[cfg(feature = "redis-tls")]
    if tls.is_set() {
        let client_tls = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            _ => None,
        };
        let certs = redis::TlsCertificates {
            client_tls,
            root_cert: tls.root_cert.clone(),
        };
        return redis::Client::build_with_tls(url, certs);
    }
    #[cfg(not(feature = "redis-tls"))]
    let _ = tls;
    redis::Client::open(url)
}
