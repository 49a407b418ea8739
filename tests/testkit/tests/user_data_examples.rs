//! The user-data examples an operator pastes: each is a valid Bottlerocket user-data document whose
//! host-container user-data is exactly its neighbouring `*.agent.toml`, a config the agent accepts,
//! and exactly what `br-update-agent user-data` prints for that file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use agent::config::Config;
use agent::user_data::{decode_base64, parse_document, HostContainer};

/// Examples that must exist: deleting or renaming one is a change the docs must follow.
const REQUIRED: &[&str] = &["basic", "three-at-a-time", "dry-run", "maintenance-window"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples_dir() -> PathBuf {
    root().join("user-data-examples")
}

/// Every `<stem>.toml` that is not an agent config, by stem.
fn examples() -> Vec<(String, PathBuf)> {
    let dir = std::fs::read_dir(examples_dir()).expect("user-data-examples/ exists");
    let mut found: Vec<(String, PathBuf)> = dir
        .map(|e| e.expect("readable entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let stem = name.strip_suffix(".toml")?;
            (!stem.ends_with(".agent")).then(|| (stem.to_owned(), p.clone()))
        })
        .collect();
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The name rule, restated here rather than taken from the module under test.
fn name_ok(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The `user-data = "..."` string exactly as written in the document.
fn raw_user_data(text: &str, name: &str) -> String {
    let header = format!("[settings.host-containers.{name}]");
    let section = &text[text.find(&header).unwrap_or_else(|| panic!("no {header}"))..];
    let line = section.lines().find(|l| l.starts_with("user-data")).expect("a user-data line");
    let value = line.split_once('=').expect("key = value").1.trim();
    value.trim_matches('"').to_owned()
}

/// The agent binary of this workspace, built on demand (integration tests of another crate do not
/// get it built for them).
fn agent_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "br-update-agent", "--bin", "br-update-agent", "--message-format=json"])
            .current_dir(root())
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "building br-update-agent failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "br-update-agent")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the br-update-agent executable")
    })
    .clone()
}

fn run_agent(args: &[&str]) -> Output {
    Command::new(agent_binary()).args(args).output().expect("run br-update-agent")
}

/// Decodes with the system's `base64` tool when there is one, as a second opinion on the decoder.
fn coreutils_decode(encoded: &str) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(encoded.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

#[test]
fn the_required_examples_exist_with_their_agent_configs() {
    let stems: BTreeSet<String> = examples().into_iter().map(|(s, _)| s).collect();
    for required in REQUIRED {
        assert!(stems.contains(*required), "user-data-examples/{required}.toml is missing");
    }
    for stem in &stems {
        let config = examples_dir().join(format!("{stem}.agent.toml"));
        assert!(config.is_file(), "{stem}.toml has no {stem}.agent.toml beside it");
    }
}

#[test]
fn every_example_carries_its_agent_config_and_follows_the_settings_model() {
    for (stem, path) in examples() {
        let text = read(&path);
        assert!(text.starts_with('#'), "{stem}.toml must open with a comment saying what it is for");
        let doc = parse_document(&text).unwrap_or_else(|e| panic!("{stem}.toml: {e}"));
        assert_eq!(doc.host_containers.len(), 1, "{stem}.toml: exactly one agent host container");
        let (name, hc) = doc.host_containers.iter().next().expect("one entry");
        assert!(name_ok(name), "{stem}.toml: host-container name `{name}`");
        assert!(hc.enabled, "{stem}.toml: the agent must be enabled");
        assert!(!hc.superpowered, "{stem}.toml: the agent needs no superpowers");
        assert!(!hc.source.trim().is_empty(), "{stem}.toml: source");

        let expected = read(&examples_dir().join(format!("{stem}.agent.toml")));
        let decoded = hc.user_data.clone().unwrap_or_else(|| panic!("{stem}.toml: no user-data"));
        assert_eq!(String::from_utf8_lossy(&decoded), expected, "{stem}.toml: user-data is not {stem}.agent.toml");
        if let Some(second) = coreutils_decode(&raw_user_data(&text, name)) {
            assert_eq!(second, decoded, "{stem}.toml: the system base64 decodes it differently");
        }
        let cfg = Config::parse(&expected, &format!("{stem}.agent.toml"))
            .unwrap_or_else(|e| panic!("{stem}.agent.toml is refused by the agent: {e}"));
        if cfg.cluster.enabled {
            let cluster = doc.ecs_cluster.as_deref().unwrap_or_default();
            assert!(!cluster.is_empty(), "{stem}.toml coordinates through ECS but sets no settings.ecs.cluster");
        }
    }
}

#[test]
fn the_user_data_subcommand_prints_what_the_examples_carry() {
    for (stem, path) in examples() {
        let text = read(&path);
        let doc = parse_document(&text).expect("valid document");
        let (name, hc) = doc.host_containers.iter().next().expect("one entry");
        let config = examples_dir().join(format!("{stem}.agent.toml"));
        let config = config.to_str().expect("utf-8 path");

        let out = run_agent(&["user-data", "--config", config]);
        assert!(out.status.success(), "{stem}: {}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).expect("utf-8");
        assert_eq!(printed.trim_end(), raw_user_data(&text, name), "{stem}.toml is stale: regenerate its user-data");

        let out = run_agent(&["user-data", "--config", config, "--toml", name, "--source", &hc.source]);
        assert!(out.status.success(), "{stem}: {}", String::from_utf8_lossy(&out.stderr));
        let block = parse_document(&String::from_utf8(out.stdout).expect("utf-8")).expect("the block parses");
        assert_eq!(block.host_containers.get(name.as_str()), Some(hc), "{stem}: --toml block differs from the example");
    }
}

#[test]
fn the_user_data_subcommand_refuses_what_bottlerocket_or_the_agent_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cluster]\nmax-concurrent = 0\n").expect("write");
    let out = run_agent(&["user-data", "--config", bad.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(78), "an invalid config is a config error");
    assert!(out.stdout.is_empty(), "nothing printed for an invalid config");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-concurrent"));

    let missing = dir.path().join("absent.toml");
    let out = run_agent(&["user-data", "--config", missing.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(78), "a missing file is not the defaults here");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "dry-run = true\n").expect("write");
    let good = good.to_str().expect("utf-8");
    let out = run_agent(&["user-data", "--config", good, "--toml", "br_update_agent", "--source", "img"]);
    assert_eq!(out.status.code(), Some(64), "`_` is not allowed in a host-container name");
    let out = run_agent(&["user-data", "--config", good, "--toml", "agent"]);
    assert_eq!(out.status.code(), Some(64), "--toml without --source is a usage error");

    let out = run_agent(&["user-data", "--config", good]);
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(decode_base64(printed.trim_end()).expect("base64"), b"dry-run = true\n");
}

#[test]
fn a_document_the_settings_model_would_refuse_is_refused() {
    // The checks above must be able to fail: the same document with a bad name or bad base64.
    let text = read(&examples_dir().join("basic.toml"));
    let renamed = text.replace("[settings.host-containers.br-update-agent]", "[settings.host-containers.br_update_agent]");
    assert!(parse_document(&renamed).is_err());
    let corrupted = text.replace("user-data = \"", "user-data = \"*");
    assert!(parse_document(&corrupted).is_err());
    let doc = parse_document(&text).expect("valid");
    let hc: &HostContainer = &doc.host_containers["br-update-agent"];
    assert_ne!(hc.user_data.as_deref(), Some(&b""[..]));
}
