//! Configuration: the TOML file, `TRUSTGATE_<SECTION>__<KEY>` overrides, and validation into
//! typed [`Settings`] once, at start. Everything after `main` receives `Settings`; nothing reads
//! the environment or the file again.

mod env;
mod raw;
mod secrets;
mod settings;

pub use settings::{
    AdminSettings, AmqpSettings, AuditSettings, KafkaSettings, LogFormat, LogSettings,
    PollerSettings, Settings, StoreSettings, TopicSettings, WebhookSettings,
};

/// Scrubs quoted values out of a parser's message (for files other than the configuration that
/// may hold secrets, such as the AMQP credentials file).
pub(crate) use secrets::scrub_values as scrub;

use raw::RawConfig;
use std::path::Path;

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// Not TOML, or a key that is unknown or has the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file, or the name [`load_str`] was given.
        path: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A `TRUSTGATE_<SECTION>__<KEY>` variable that is malformed or does not fit its key's
    /// type; the message names the variable.
    #[error("environment override {0}")]
    Env(String),
    /// Values that parse but cannot be used, alone or together (an empty broker list, SASL
    /// without credentials, an enabled poller without an API key, …).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A loaded configuration: validated settings plus the effective TOML (for `check-config`).
pub struct Loaded {
    /// What trustgate runs on.
    pub settings: Settings,
    effective: toml::Table,
}

impl Loaded {
    /// The effective configuration (file + environment + defaults) with secrets redacted.
    pub fn redacted_toml(&self) -> String {
        let mut table = self.effective.clone();
        redact(&mut table);
        toml::to_string_pretty(&table).unwrap_or_default()
    }
}

/// Loads `path` (or only defaults and environment when `None`) with the process environment.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.display().to_string(),
            source,
        })?,
        None => String::new(),
    };
    let name = path.map_or("<defaults>".to_owned(), |p| p.display().to_string());
    load_str(&text, &name, std::env::vars())
}

/// Loads from text with the given environment (tests pass their own).
pub fn load_str(
    text: &str,
    name: &str,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Loaded, ConfigError> {
    let parse_err = |message: String| ConfigError::Parse {
        path: name.to_owned(),
        message,
    };
    // Every message is scrubbed of quoted values: a secret written under the wrong type would
    // otherwise be echoed back (`invalid type: string "…"`), to a terminal or a CI log.
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| parse_err(secrets::scrub_values(e.message())))?;
    let defaults = toml::Table::try_from(RawConfig::default()).expect("defaults serialise");
    env::apply(&mut table, &defaults, vars)
        .map_err(|e| ConfigError::Env(secrets::scrub_values(&e)))?;
    let raw: RawConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| parse_err(secrets::scrub_values(e.message())))?;
    let effective = toml::Table::try_from(&raw).expect("config serialises");
    let settings = Settings::from_raw(raw)?;
    Ok(Loaded {
        settings,
        effective,
    })
}

/// Loads a candidate policy set (`trustgate what-if --policy FILE`): a TOML file holding only a
/// `[policy]` table, in the main configuration's shape, validated exactly as the live policies
/// are. What it leaves out takes the defaults, not the live values: a candidate is a whole
/// policy set. No `TRUSTGATE_*` override applies to it (those are for the running
/// configuration).
pub fn load_policies(path: &Path) -> Result<crate::policy::Policies, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: name.clone(),
        source,
    })?;
    policies_from_str(&text, &name)
}

/// [`load_policies`] from text.
pub fn policies_from_str(text: &str, name: &str) -> Result<crate::policy::Policies, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: name.to_owned(),
        message: secrets::scrub_values(e.message()),
    })?;
    if let Some(other) = table.keys().find(|k| k.as_str() != "policy") {
        return Err(ConfigError::Parse {
            path: name.to_owned(),
            message: format!(
                "a candidate policy file holds only [policy] (global and [[policy.custom]]), not [{other}]"
            ),
        });
    }
    Ok(load_str(text, name, std::iter::empty())?.settings.policies)
}

fn redact(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        let secret = secrets::is_secret_key(key);
        match value {
            toml::Value::Table(t) => redact(t),
            toml::Value::Array(items) if secret => items
                .iter_mut()
                .for_each(|i| *i = toml::Value::String("[REDACTED]".into())),
            toml::Value::Array(items) => items.iter_mut().for_each(|i| {
                if let toml::Value::Table(t) = i {
                    redact(t)
                }
            }),
            _ if secret => *value = toml::Value::String("[REDACTED]".into()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
