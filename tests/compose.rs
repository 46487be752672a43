//! `compose/docker-compose.yml` cannot run here (no Docker engine), so its structure is checked:
//! it parses, has the services the README promises, and every TRUSTGATE_* variable it sets is a
//! configuration key trustgate accepts (the same loader rejects unknown keys by name).

use serde_yaml::Value;

fn compose() -> Value {
    let path = format!("{}/compose/docker-compose.yml", env!("CARGO_MANIFEST_DIR"));
    let mut doc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).expect("compose file parses");
    doc.apply_merge().expect("merge keys resolve");
    doc
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["services"]
        .get(name)
        .unwrap_or_else(|| panic!("service {name} is missing"))
}

/// `${VAR:-default}` → default; `${VAR:?message}` → a placeholder (compose would demand it).
fn interpolate(value: &str) -> String {
    if let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        if let Some((_, default)) = inner.split_once(":-") {
            return default.to_owned();
        }
        return "placeholder".to_owned();
    }
    value.to_owned()
}

fn env_of(svc: &Value) -> Vec<(String, String)> {
    svc["environment"]
        .as_mapping()
        .expect("environment is a mapping")
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => interpolate(s),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

#[test]
fn kafka_is_single_node_kraft_from_the_official_image() {
    let doc = compose();
    let kafka = service(&doc, "kafka");
    assert!(kafka["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    assert!(kafka["environment"]["KAFKA_PROCESS_ROLES"]
        .as_str()
        .unwrap()
        .contains("controller"));
}

#[test]
fn topic_creation_matches_the_default_topic_names() {
    let doc = compose();
    let script = serde_yaml::to_string(&service(&doc, "kafka-topics")["command"]).unwrap();
    let defaults = trustgate::config::load_str("", "defaults", std::iter::empty())
        .unwrap()
        .settings
        .topics;
    for topic in [
        &defaults.events,
        &defaults.requests,
        &defaults.responses,
        &defaults.dlq,
    ] {
        assert!(
            script.contains(topic.as_str()),
            "kafka-topics creates {topic}"
        );
    }
}

#[test]
fn trustgate_services_use_only_real_config_keys() {
    let doc = compose();
    for name in ["trustgate", "trustgate-tenant"] {
        let env = env_of(service(&doc, name));
        assert!(
            env.iter().all(|(k, _)| k.starts_with("TRUSTGATE_")),
            "{name}: only TRUSTGATE_* variables"
        );
        let loaded = trustgate::config::load_str("", name, env.clone().into_iter());
        let settings = loaded.unwrap_or_else(|e| panic!("{name}: {e}")).settings;
        assert!(settings.poller.enabled, "{name} polls");
        assert_eq!(settings.kafka.brokers, "kafka:9092");
    }
    assert_eq!(service(&doc, "trustgate-tenant")["profiles"][0], "tenant");
}

#[test]
fn the_stream_path_runs_against_the_simulator() {
    let doc = compose();
    let env: std::collections::HashMap<_, _> =
        env_of(service(&doc, "trustgate")).into_iter().collect();
    let settings = trustgate::config::load_str("", "trustgate", env.clone().into_iter())
        .unwrap()
        .settings;
    assert!(settings.amqp.enabled);
    let create: std::collections::HashMap<_, _> =
        env_of(service(&doc, "stream-create")).into_iter().collect();
    assert_eq!(
        create["TRUSTGATE_AMQP__CREDENTIALS_PATH"], env["TRUSTGATE_AMQP__CREDENTIALS_PATH"],
        "stream create writes where run reads"
    );
    let simulator = serde_yaml::to_string(&service(&doc, "simulator")["command"]).unwrap();
    assert!(simulator.contains("--amqp-url") && simulator.contains("@rabbitmq:5672"));
    assert!(doc["services"].get("rabbitmq").is_some());
}

#[test]
fn the_poller_points_at_the_simulator_with_its_credentials() {
    let doc = compose();
    let env: std::collections::HashMap<_, _> =
        env_of(service(&doc, "trustgate")).into_iter().collect();
    let command: Vec<String> = service(&doc, "simulator")["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let flag = |name: &str| {
        command
            .iter()
            .position(|c| c == name)
            .map(|i| command[i + 1].clone())
    };
    assert_eq!(command[0], "simulate");
    assert_eq!(
        env["TRUSTGATE_POLLER__BASE_URL"],
        format!(
            "http://simulator:{}",
            flag("--listen").unwrap().rsplit(':').next().unwrap()
        )
    );
    assert_eq!(
        flag("--client-id").as_ref(),
        Some(&env["TRUSTGATE_POLLER__CLIENT_ID"])
    );
    assert_eq!(
        flag("--api-key").as_ref(),
        Some(&env["TRUSTGATE_POLLER__API_KEY"])
    );
}

/// Each service's command line, checked by the built binary's own parser: `--help` appended
/// makes clap stop after reading every argument before it (an unknown flag or an invalid value
/// is still an error) instead of running the command.
#[test]
fn service_commands_are_valid_trustgate_command_lines() {
    let doc = compose();
    for name in [
        "simulator",
        "stream-create",
        "trustgate",
        "trustgate-tenant",
    ] {
        let args: Vec<String> = service(&doc, name)["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_trustgate"))
            .args(&args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_command_line_check_refuses_a_bad_value() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trustgate"))
        .args(["simulate", "--devices", "many", "--help"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an invalid value must not pass");
}
