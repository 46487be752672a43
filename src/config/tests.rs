use super::*;

fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>()
        .into_iter()
}

#[test]
fn defaults_load() {
    let loaded = load_str("", "t", env(&[])).unwrap();
    assert_eq!(loaded.settings.topics.events, "secure-endpoint.events");
    assert_eq!(loaded.settings.fold.resolution_grace.as_secs(), 600);
    assert!(loaded.settings.policies.global.require_trusted);
}

#[test]
fn unknown_keys_are_named() {
    let err = load_str("[kafka]\nbrokerz = \"x\"\n", "t", env(&[]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("brokerz"), "{err}");
}

#[test]
fn env_overrides_the_file() {
    let loaded = load_str(
        "[kafka]\nbrokers = \"file:1\"\n",
        "t",
        env(&[
            ("TRUSTGATE_KAFKA__BROKERS", "env:2"),
            ("TRUSTGATE_STORE__PATH", "/tmp/x"),
        ]),
    )
    .unwrap();
    assert_eq!(loaded.settings.kafka.brokers, "env:2");
    assert_eq!(loaded.settings.store.path.to_str(), Some("/tmp/x"));
}

#[test]
fn custom_policies_inherit_and_select_by_application() {
    let loaded = load_str(
        "[[policy.custom]]\nname = \"wiki\"\napplications = [\"wiki\"]\nrequire_trusted = false\n",
        "t",
        env(&[]),
    )
    .unwrap();
    let p = &loaded.settings.policies;
    assert_eq!(&*p.for_application("wiki").name, "wiki");
    assert!(!p.for_application("wiki").require_trusted);
    assert!(
        p.for_application("wiki").block_compromised,
        "inherited from global"
    );
    assert_eq!(&*p.for_application("vpn").name, "global");
}

#[test]
fn secrets_never_print() {
    let loaded = load_str(
        "[kafka]\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\nsasl_username = \"u\"\nsasl_password = \"SENTINEL-1\"\n[kafka.properties]\n\"ssl.keystore.password\" = \"SENTINEL-2\"\n[poller]\napi_key = \"SENTINEL-3\"\n[webhook]\nsecrets = [\"whsec_SENTINEL4\"]\n",
        "t",
        env(&[]),
    )
    .unwrap();
    let printed = format!("{:?}\n{}", loaded.settings, loaded.redacted_toml());
    assert!(!printed.contains("SENTINEL"), "{printed}");
    assert!(printed.contains("[REDACTED]"));
}

#[test]
fn bad_durations_say_how_to_write_them() {
    let err = load_str(
        "[compromise]\nresolution_grace = \"ten minutes\"\n",
        "t",
        env(&[]),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("resolution_grace"));
}

/// Issue #10 item 6: a `base_url` that is not a URL is refused at load (so by `check-config`).
#[test]
fn poller_base_url_must_be_a_url() {
    for bad in [
        "api.amp.cisco.com",
        "not a url",
        "ftp://api.amp.cisco.com",
        "https://",
        "https://h/?q=1",
    ] {
        let toml = format!("[poller]\nbase_url = \"{bad}\"\n");
        let err = load_str(&toml, "t", env(&[])).err().unwrap();
        assert!(err.to_string().contains("poller.base_url"), "{bad}: {err}");
    }
    let ok = load_str(
        "[poller]\nbase_url = \"http://127.0.0.1:8080/\"\n",
        "t",
        env(&[]),
    )
    .unwrap();
    assert_eq!(ok.settings.poller.base_url, "http://127.0.0.1:8080");
}

/// Issue #10 item 6: the poller's cursor lives beside the store, not in the working directory.
#[test]
fn poller_state_path_defaults_beside_the_store() {
    let loaded = load_str("[store]\npath = \"/var/lib/tg/a/store\"\n", "t", env(&[])).unwrap();
    assert_eq!(
        loaded.settings.poller.state_path.to_str(),
        Some("/var/lib/tg/a/store-poller")
    );
    let explicit = load_str("[poller]\nstate_path = \"/x/p\"\n", "t", env(&[])).unwrap();
    assert_eq!(explicit.settings.poller.state_path.to_str(), Some("/x/p"));
}

#[test]
fn secret_bearing_kafka_properties_are_redacted_by_type() {
    let loaded = load_str(
        "[kafka.properties]\n\
         \"ssl.key.pem\" = \"SENTINEL-pem\"\n\
         \"sasl.oauthbearer.config\" = \"principal=SENTINEL-oauth\"\n\
         \"ssl.keystore.password\" = \"SENTINEL-ks\"\n\
         \"sasl.password\" = \"SENTINEL-sasl\"\n\
         \"ssl.key.password\" = \"SENTINEL-key\"\n\
         \"ssl_engine_callback_data\" = \"SENTINEL-engine\"\n\
         \"sasl.oauthbearer.client.secret\" = \"SENTINEL-client\"\n\
         \"client.id\" = \"visible\"\n",
        "t",
        env(&[]),
    )
    .unwrap();
    let printed = format!("{:?}\n{}", loaded.settings, loaded.redacted_toml());
    assert!(!printed.contains("SENTINEL"), "{printed}");
    assert!(printed.contains("visible"), "{printed}");
}

#[test]
fn type_errors_never_echo_a_secret() {
    for text in [
        "[webhook]\nsecrets = \"whsec_SENTINEL\"\n",
        "[kafka]\nlinger_ms = \"SENTINEL\"\n",
        "[kafka]\nsasl_password = [\"SENTINEL\"]\n",
    ] {
        let err = load_str(text, "t", env(&[])).err().unwrap().to_string();
        assert!(!err.contains("SENTINEL"), "{err}");
        assert!(
            err.contains("invalid type"),
            "still says what is wrong: {err}"
        );
    }
    let err = load_str("", "t", env(&[("TRUSTGATE_KAFKA__LINGER_MS", "SENTINEL")]))
        .err()
        .unwrap()
        .to_string();
    assert!(!err.contains("SENTINEL"), "{err}");
    assert!(err.contains("TRUSTGATE_KAFKA__LINGER_MS"), "{err}");
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    let err = load_str("[admin]\nlisten = \"0.0.0.0:9464\"\n", "t", env(&[]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("admin.listen") && err.contains("admin.token"),
        "{err}"
    );
    let loaded = load_str(
        "[admin]\nlisten = \"0.0.0.0:9464\"\n",
        "t",
        env(&[("TRUSTGATE_ADMIN__TOKEN", "SENTINEL-admin")]),
    )
    .unwrap();
    assert!(loaded.settings.admin.token.is_some());
    let printed = format!("{:?}\n{}", loaded.settings, loaded.redacted_toml());
    assert!(!printed.contains("SENTINEL"), "{printed}");
    for listen in ["127.0.0.1:0", "[::1]:9464"] {
        let text = format!("[admin]\nlisten = \"{listen}\"\n");
        assert!(load_str(&text, "t", env(&[])).is_ok(), "{listen}");
    }
}

/// Issue #12 items 4, 5: the audit topic and switch, and each policy's mode, with their
/// defaults; a custom policy inherits the global mode unless it sets its own.
#[test]
fn audit_and_policy_mode() {
    use crate::policy::PolicyMode;
    let defaults = load_str("", "t", env(&[])).unwrap().settings;
    assert_eq!(defaults.topics.audit, "trustgate.decisions");
    assert!(defaults.audit.enabled);
    assert_eq!(defaults.policies.global.mode, PolicyMode::Enforce);
    assert!(
        defaults.topics.is_own("trustgate.decisions"),
        "no reply may land on it"
    );

    let loaded = load_str(
        "[audit]\nenabled = false\n[topics]\naudit = \"decisions\"\n\
         [[policy.custom]]\nname = \"rollout\"\napplications = [\"wiki\"]\nmode = \"report_only\"\n\
         [[policy.custom]]\nname = \"vpn\"\napplications = [\"vpn\"]\n",
        "t",
        env(&[]),
    )
    .unwrap()
    .settings;
    assert!(!loaded.audit.enabled);
    assert_eq!(loaded.topics.audit, "decisions");
    let p = &loaded.policies;
    assert_eq!(p.for_application("wiki").mode, PolicyMode::ReportOnly);
    assert_eq!(p.for_application("vpn").mode, PolicyMode::Enforce);

    let global = load_str(
        "",
        "t",
        env(&[("TRUSTGATE_POLICY__GLOBAL__MODE", "report_only")]),
    )
    .unwrap()
    .settings;
    assert_eq!(global.policies.global.mode, PolicyMode::ReportOnly);

    let err = load_str("[policy.global]\nmode = \"audit\"\n", "t", env(&[]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("policy.global.mode"), "{err}");
    let err = load_str("[topics]\naudit = \"trustgate.dlq\"\n", "t", env(&[]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("two purposes"), "{err}");
}

#[test]
fn amqp_settings_are_checked_and_the_url_is_a_secret() {
    let loaded = load_str(
        "[amqp]\nenabled = true\nqueue = \"q\"\n",
        "t",
        env(&[(
            "TRUSTGATE_AMQP__URL",
            "amqps://u:SENTINEL-AMQP@stream.example:443",
        )]),
    )
    .unwrap();
    let amqp = &loaded.settings.amqp;
    assert!(amqp.enabled);
    assert_eq!(amqp.prefetch, 500, "the default bound");
    let printed = format!("{:?}\n{}", loaded.settings, loaded.redacted_toml());
    assert!(!printed.contains("SENTINEL"), "{printed}");

    for (text, why) in [
        ("[amqp]\nenabled = true\n", "credentials_path"),
        ("[amqp]\nurl = \"http://SENTINEL@x\"\n", "amqp.url"),
        ("[amqp]\nurl = \"amqp://x\"\nprefetch = 0\n", "prefetch"),
    ] {
        let err = load_str(text, "t", env(&[])).err().unwrap().to_string();
        assert!(err.contains(why), "{err}");
        assert!(!err.contains("SENTINEL"), "{err}");
    }
}

/// #12 item 6: a candidate policy set is validated exactly like the live one, and holds
/// nothing but policies.
#[test]
fn candidate_policies_are_validated_like_live_ones() {
    let p = policies_from_str(
        "[policy.global]\nblock_compromised = false\n[[policy.custom]]\nname = \"fin\"\n\
         applications = [\"ledger\"]\nblock_compromised = true\nmode = \"report_only\"\n",
        "c",
    )
    .unwrap();
    assert!(!p.global.block_compromised);
    let fin = p.for_application("ledger");
    assert_eq!(&*fin.name, "fin");
    assert!(fin.block_compromised);
    assert_eq!(fin.mode, crate::policy::PolicyMode::ReportOnly);
    let refused = |text: &str| policies_from_str(text, "c").unwrap_err().to_string();
    assert!(refused("[kafka]\nbrokers = \"x:1\"\n").contains("only [policy]"));
    assert!(refused("[policy.global]\nmode = \"sometimes\"\n").contains("mode"));
    assert!(refused("[policy.global]\nblock = true\n").contains("block"));
    assert!(refused(
        "[[policy.custom]]\nname = \"a\"\napplications = [\"x\"]\n\
         [[policy.custom]]\nname = \"b\"\napplications = [\"x\"]\n"
    )
    .contains("two custom policies"));
}
