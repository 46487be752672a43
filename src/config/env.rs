//! `TRUSTGATE_<SECTION>__<KEY>` environment overrides, applied to the parsed file before it is
//! deserialised so that they go through the same validation as the file.
//!
//! A value's type is taken from the key's default (an integer key gets an integer); list keys
//! take comma-separated values; keys with no default (optional strings) are strings. Unknown
//! keys then fail deserialisation exactly as they would in the file, naming the variable's key.

use toml::Value;

const PREFIX: &str = "TRUSTGATE_";

/// Applies every `TRUSTGATE_*` variable to `config`, typed by `defaults`.
pub(super) fn apply(
    config: &mut toml::Table,
    defaults: &toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), String> {
    for (name, raw) in vars {
        // Only TRUSTGATE_<SECTION>__<KEY> is an override; other TRUSTGATE_* names (a test
        // harness's, a deployment's) are not configuration and are left alone.
        let Some(path) = name.strip_prefix(PREFIX).filter(|p| p.contains("__")) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("{name}: expected TRUSTGATE_<SECTION>__<KEY>"));
        }
        let default = lookup(defaults, &parts);
        let value = typed(&raw, default).map_err(|e| format!("{name}: {e}"))?;
        insert(config, &parts, value).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        lookup(value.as_table()?, rest)
    }
}

fn insert(table: &mut toml::Table, path: &[String], value: Value) -> Result<(), String> {
    let (first, rest) = path.split_first().expect("path has at least two parts");
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let child = table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(toml::Table::new()));
    match child {
        Value::Table(t) => insert(t, rest, value),
        _ => Err(format!("{first} is not a section")),
    }
}

fn typed(raw: &str, default: Option<&Value>) -> Result<Value, String> {
    match default {
        Some(Value::Array(items)) => raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| typed(item, items.first()).or_else(|_| Ok(guess(item))))
            .collect::<Result<Vec<_>, String>>()
            .map(Value::Array),
        Some(Value::Integer(_)) => raw
            .trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        Some(Value::Float(_)) => raw
            .trim()
            .parse()
            .map(Value::Float)
            .map_err(|_| format!("{raw:?} is not a number")),
        Some(Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" => Ok(Value::Boolean(false)),
            _ => Err(format!("{raw:?} is not a boolean")),
        },
        Some(Value::Table(_)) => Err("is a section, not a key".into()),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// For list items with no typed default (an empty default list): integers stay integers.
fn guess(item: &str) -> Value {
    item.parse()
        .map(Value::Integer)
        .unwrap_or_else(|_| Value::String(item.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> toml::Table {
        toml::from_str("[kafka]\nbrokers = \"x\"\nlinger_ms = 0\n[topics]\nlist = [1]\n[webhook]\nsecrets = []\nenabled = false").unwrap()
    }

    #[test]
    fn values_take_the_defaults_types() {
        let mut cfg = toml::Table::new();
        let vars = [
            ("TRUSTGATE_KAFKA__BROKERS", "a:1,b:2"),
            ("TRUSTGATE_KAFKA__LINGER_MS", "5"),
            ("TRUSTGATE_TOPICS__LIST", "1, 2,3"),
            ("TRUSTGATE_WEBHOOK__SECRETS", "whsec_a,whsec_b"),
            ("TRUSTGATE_WEBHOOK__ENABLED", "true"),
            ("TRUSTGATE_POLLER__CLIENT_ID", "1234"),
            ("OTHER", "ignored"),
            ("TRUSTGATE_TEST_BROKERS", "not an override"),
        ];
        apply(
            &mut cfg,
            &defaults(),
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(cfg["kafka"]["brokers"].as_str(), Some("a:1,b:2"));
        assert_eq!(cfg["kafka"]["linger_ms"].as_integer(), Some(5));
        assert_eq!(cfg["topics"]["list"].as_array().unwrap().len(), 3);
        assert_eq!(cfg["webhook"]["secrets"][1].as_str(), Some("whsec_b"));
        assert_eq!(cfg["webhook"]["enabled"].as_bool(), Some(true));
        assert_eq!(
            cfg["poller"]["client_id"].as_str(),
            Some("1234"),
            "no default: stays a string"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let mut cfg = toml::Table::new();
        let err = apply(
            &mut cfg,
            &defaults(),
            std::iter::once(("TRUSTGATE_KAFKA__LINGER_MS".into(), "soon".into())),
        )
        .unwrap_err();
        assert!(err.contains("TRUSTGATE_KAFKA__LINGER_MS"));
    }
}
