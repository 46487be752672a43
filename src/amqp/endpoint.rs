//! Where the consumer connects and as whom: the stream's `amqp_credentials` (as SE returns them
//! from `POST /v1/event_streams` and `trustgate stream create` writes them to
//! `[amqp] credentials_path`) and `[amqp] url`, resolved into one [`Endpoint`].
//!
//! The password is a secret from the file to the socket: it is held as a [`SecretString`],
//! neither [`Credentials`] nor [`Endpoint`] prints it, and no error quotes a URL or the file's
//! contents. The file is written mode 0600, because SE shows the password only once.

use crate::config::AmqpSettings;
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why no endpoint could be made.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The credentials file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The credentials file is not SE's `amqp_credentials` object.
    #[error("{path} is not an amqp_credentials JSON object ({reason})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, without its values.
        reason: String,
    },
    /// Something needed is missing or unusable (no queue, no host, an unknown `proto`, …).
    #[error("{0}")]
    Invalid(String),
}

/// SE's `data.amqp_credentials` (every field a string, as SE sends them).
#[derive(Serialize, Deserialize, Clone)]
pub struct Credentials {
    /// The stream's RabbitMQ user.
    pub user_name: String,
    /// Shown by SE only when the stream is created.
    #[serde(serialize_with = "expose")]
    pub password: SecretString,
    /// The stream's queue.
    pub queue_name: String,
    /// `export-streaming.amp.cisco.com`, …
    pub host: String,
    /// A string (`"443"`), as SE sends it.
    pub port: String,
    /// `https` / `amqps` (TLS) or `http` / `amqp`.
    pub proto: String,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user_name", &self.user_name)
            .field("password", &"[REDACTED]")
            .field("queue_name", &self.queue_name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("proto", &self.proto)
            .finish()
    }
}

impl Credentials {
    /// Reads a credentials file.
    pub fn read(path: &Path) -> Result<Credentials, EndpointError> {
        let text = std::fs::read(path).map_err(|source| EndpointError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| EndpointError::Format {
            path: path.to_owned(),
            // serde_json's message names the field and position, never the value.
            reason: crate::config::scrub(&e.to_string()),
        })
    }

    /// Writes the file mode 0600 (created so, never widened in between), replacing any
    /// previous one through a temporary file in the same directory.
    pub fn write(&self, path: &Path) -> Result<(), EndpointError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| EndpointError::Io {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).expect("credentials serialise");
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn scheme(&self) -> Result<AMQPScheme, EndpointError> {
        match self.proto.to_ascii_lowercase().as_str() {
            "https" | "amqps" => Ok(AMQPScheme::AMQPS),
            "http" | "amqp" => Ok(AMQPScheme::AMQP),
            _ => Err(EndpointError::Invalid(
                "the credentials' proto is not https, amqps, http or amqp".into(),
            )),
        }
    }
}

/// Everything a connection needs. Prints without the password.
#[derive(Clone)]
pub struct Endpoint {
    pub(super) uri: AMQPUri,
    pub(super) queue: String,
    /// Extra CA certificates (PEM text) for TLS.
    pub(super) ca_pem: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.target())
            .field("queue", &self.queue)
            .finish()
    }
}

impl Endpoint {
    /// `amqps://host:port` without user or password: what logs may name.
    pub fn target(&self) -> String {
        format!(
            "{}://{}:{}",
            self.uri.scheme, self.uri.authority.host, self.uri.authority.port
        )
    }

    /// Whether the connection is TLS (always verified).
    pub fn tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// The queue to drain.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Resolves `[amqp]`: the URL when set (its user and password unless the file gives
    /// them), else the credentials file; the queue from `[amqp] queue`, else the file.
    pub fn resolve(settings: &AmqpSettings) -> Result<Endpoint, EndpointError> {
        let credentials = settings
            .credentials_path
            .as_deref()
            .map(Credentials::read)
            .transpose()?;
        let from_url = settings
            .url
            .as_ref()
            .map(|u| parse_url(u.expose_secret()))
            .transpose()?;
        let mut uri = match (&from_url, &credentials) {
            (Some((uri, _)), _) => uri.clone(),
            (None, Some(c)) => AMQPUri {
                scheme: c.scheme()?,
                authority: AMQPAuthority {
                    userinfo: AMQPUserInfo {
                        username: c.user_name.clone(),
                        password: c.password.expose_secret().to_owned(),
                    },
                    host: c.host.clone(),
                    port: c.port.trim().parse().map_err(|_| {
                        EndpointError::Invalid("the credentials' port is not a number".into())
                    })?,
                },
                vhost: "/".into(),
                query: AMQPQueryString::default(),
            },
            (None, None) => {
                return Err(EndpointError::Invalid(
                    "set amqp.credentials_path or amqp.url".into(),
                ))
            }
        };
        // A URL without user info takes the file's user and password.
        if let (Some((_, false)), Some(c)) = (&from_url, &credentials) {
            uri.authority.userinfo = AMQPUserInfo {
                username: c.user_name.clone(),
                password: c.password.expose_secret().to_owned(),
            };
        }
        if uri.query.heartbeat.is_none() {
            // Notices a dead connection (no TCP reset) within about a minute.
            uri.query.heartbeat = Some(30);
        }
        let queue = settings
            .queue
            .clone()
            .or_else(|| credentials.as_ref().map(|c| c.queue_name.clone()))
            .filter(|q| !q.is_empty())
            .ok_or_else(|| {
                EndpointError::Invalid(
                    "no queue: set amqp.queue or amqp.credentials_path (queue_name)".into(),
                )
            })?;
        let ca_pem = settings
            .ca_file
            .as_deref()
            .map(|p| {
                std::fs::read_to_string(p).map_err(|source| EndpointError::Io {
                    path: p.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Ok(Endpoint { uri, queue, ca_pem })
    }
}

/// Parses `[amqp] url`; also says whether it carried user info. lapin's parser takes an IP
/// address host for `localhost` (it reads only domain names), so the host is read here.
fn parse_url(text: &str) -> Result<(AMQPUri, bool), EndpointError> {
    let invalid = || EndpointError::Invalid("amqp.url is not an amqp:// or amqps:// URL".into());
    let url = reqwest::Url::parse(text).map_err(|_| invalid())?;
    let mut uri: AMQPUri = text.parse().map_err(|_| invalid())?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(invalid)?;
    uri.authority.host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((uri, !url.username().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(url: Option<&str>, credentials: Option<&Path>) -> AmqpSettings {
        AmqpSettings {
            enabled: true,
            url: url.map(|u| SecretString::from(u.to_owned())),
            credentials_path: credentials.map(Path::to_owned),
            queue: None,
            prefetch: 500,
            ca_file: None,
            heartbeat_interval: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(30),
        }
    }

    fn se_credentials() -> Credentials {
        Credentials {
            user_name: "stream-user".into(),
            password: SecretString::from("SENTINEL-PW".to_owned()),
            queue_name: "event_stream_7".into(),
            host: "export-streaming.amp.cisco.com".into(),
            port: "443".into(),
            proto: "https".into(),
        }
    }

    #[test]
    fn se_credentials_make_a_tls_endpoint_and_never_print_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        se_credentials().write(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let endpoint = Endpoint::resolve(&settings(None, Some(&path))).unwrap();
        assert!(endpoint.tls());
        assert_eq!(endpoint.queue(), "event_stream_7");
        assert_eq!(
            endpoint.target(),
            "amqps://export-streaming.amp.cisco.com:443"
        );
        assert_eq!(endpoint.uri.authority.userinfo.password, "SENTINEL-PW");
        let printed = format!("{endpoint:?} {:?}", Credentials::read(&path).unwrap());
        assert!(!printed.contains("SENTINEL"), "{printed}");
    }

    #[test]
    fn a_url_gives_host_port_and_user_and_an_ip_host_is_kept() {
        let mut s = settings(Some("amqp://u:p%40ss@127.0.0.1:5673/%2f"), None);
        s.queue = Some("q".into());
        let e = Endpoint::resolve(&s).unwrap();
        assert_eq!(e.target(), "amqp://127.0.0.1:5673");
        assert_eq!(e.uri.authority.userinfo.username, "u");
        assert_eq!(e.uri.authority.userinfo.password, "p@ss");
        assert_eq!(e.uri.vhost, "/");
        assert!(!e.tls());
    }

    #[test]
    fn a_url_without_user_takes_the_files_and_no_queue_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        se_credentials().write(&path).unwrap();
        let e = Endpoint::resolve(&settings(Some("amqps://localhost:5671"), Some(&path))).unwrap();
        assert_eq!(e.uri.authority.userinfo.username, "stream-user");
        assert_eq!(e.target(), "amqps://localhost:5671");
        let err = Endpoint::resolve(&settings(Some("amqp://localhost"), None)).unwrap_err();
        assert!(err.to_string().contains("no queue"), "{err}");
    }

    #[test]
    fn an_unreadable_file_is_named_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.json");
        std::fs::write(&path, r#"{"user_name":"u","password":"SENTINEL"}"#).unwrap();
        let err = Endpoint::resolve(&settings(None, Some(&path)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("creds.json"), "{err}");
        assert!(!err.contains("SENTINEL"), "{err}");
    }
}
