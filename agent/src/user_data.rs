//! The agent's config as Bottlerocket carries it: base64 in `settings.host-containers.<name>.user-data`.
//!
//! Bottlerocket decodes that value into the file the agent reads at start, so an operator needs
//! the exact base64 of a config file that passes [`Config::parse`], and a settings block whose
//! name and fields the settings model accepts. This module produces both, and reads a whole
//! user-data document back so the shipped examples can be checked against the same rules.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, ConfigError};

/// The settings model's limit on a host-container name.
pub const MAX_NAME_LEN: usize = 76;

/// The fields the settings model renders for a host container; anything else is refused so that
/// a document never relies on a field a given OS version might ignore.
const HOST_CONTAINER_FIELDS: &[&str] = &["source", "enabled", "superpowered", "user-data"];

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a config or a user-data document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    /// The agent config file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The agent config does not pass the agent's own validation.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A host-container name the settings model refuses.
    #[error("host-container name `{0}`: use 1-{MAX_NAME_LEN} ASCII letters, digits or `-`")]
    Name(String),
    /// Text that is not standard, padded base64.
    #[error("invalid base64 at byte {at}: {reason}")]
    Base64 {
        /// Offset of the offending character.
        at: usize,
        /// What is wrong there.
        reason: &'static str,
    },
    /// The user-data document is not TOML.
    #[error("user-data is not TOML: {0}")]
    Toml(String),
    /// A field of the document has the wrong type or is not allowed.
    #[error("`{key}`: {reason}")]
    Field {
        /// The full dotted key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn field(key: impl Into<String>, reason: impl Into<String>) -> UserDataError {
    UserDataError::Field { key: key.into(), reason: reason.into() }
}

/// True if Bottlerocket accepts `name` as a key under `settings.host-containers`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Standard base64 with `=` padding, the form the settings model validates.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is required where the length calls for it, whitespace is not
/// allowed (the settings model would refuse it too).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, UserDataError> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(UserDataError::Base64 { at: bytes.len(), reason: "length is not a multiple of 4" });
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (q, quad) in bytes.chunks(4).enumerate() {
        let last = (q + 1) * 4 == bytes.len();
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(UserDataError::Base64 { at: q * 4 + 4 - pad, reason: "padding in the wrong place" });
        }
        let mut n = 0u32;
        for (i, &c) in quad[..4 - pad].iter().enumerate() {
            let v = sextet(c).ok_or(UserDataError::Base64 { at: q * 4 + i, reason: "not a base64 character" })?;
            n |= u32::from(v) << (18 - 6 * i);
        }
        // A canonical encoder leaves the bits below the last whole byte zero; others are refused.
        if pad > 0 && n & (0xFFFF >> (8 * (2 - pad))) != 0 {
            return Err(UserDataError::Base64 { at: q * 4 + 3 - pad, reason: "trailing bits are not zero" });
        }
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Ok(out)
}

fn sextet(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// The base64 user-data for an agent config text, after checking that the agent accepts it.
///
/// The exact bytes are encoded, comments and all, so the decoded file is the one the operator wrote.
pub fn encode_config(text: &str, origin: &str) -> Result<String, UserDataError> {
    Config::parse(text, origin)?;
    Ok(encode_base64(text.as_bytes()))
}

/// [`encode_config`] of a file; unlike the agent's own load, a missing file is an error here.
pub fn encode_config_file(path: &Path) -> Result<String, UserDataError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| UserDataError::Read { path: path.display().to_string(), source })?;
    encode_config(&text, &path.display().to_string())
}

/// A complete `[settings.host-containers.<name>]` block running `source` with `user_data`.
pub fn host_container_block(name: &str, source: &str, user_data: &str) -> Result<String, UserDataError> {
    if !valid_name(name) {
        return Err(UserDataError::Name(name.to_owned()));
    }
    if source.trim().is_empty() {
        return Err(field(format!("settings.host-containers.{name}.source"), "must name an image"));
    }
    decode_base64(user_data)?;
    // The API socket is usable from control_t, so the agent never needs superpowers.
    Ok(format!(
        "[settings.host-containers.{name}]\nsource = {}\nenabled = true\nsuperpowered = false\nuser-data = \"{user_data}\"\n",
        toml::Value::String(source.to_owned())
    ))
}

/// One host container as a user-data document declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostContainer {
    /// The image.
    pub source: String,
    /// Whether it runs (the model's default is false).
    pub enabled: bool,
    /// Whether it runs privileged (the model's default is false).
    pub superpowered: bool,
    /// The decoded user-data, if any.
    pub user_data: Option<Vec<u8>>,
}

/// The parts of a Bottlerocket user-data document that concern the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Document {
    /// `settings.host-containers`, by name.
    pub host_containers: BTreeMap<String, HostContainer>,
    /// `settings.ecs.cluster`, the cluster the ECS agent joins.
    pub ecs_cluster: Option<String>,
}

/// Reads a user-data document, checking host containers the way the settings model does.
pub fn parse_document(text: &str) -> Result<Document, UserDataError> {
    let root: toml::Table = toml::from_str(text).map_err(|e| UserDataError::Toml(e.to_string()))?;
    let settings = optional_table(&root, "settings", "settings")?;
    let mut doc = Document::default();
    let Some(settings) = settings else { return Ok(doc) };
    if let Some(ecs) = optional_table(settings, "ecs", "settings.ecs")? {
        doc.ecs_cluster = optional(ecs, "cluster", "settings.ecs.cluster", toml::Value::as_str)?.map(str::to_owned);
    }
    if let Some(containers) = optional_table(settings, "host-containers", "settings.host-containers")? {
        for (name, entry) in containers {
            let key = format!("settings.host-containers.{name}");
            if !valid_name(name) {
                return Err(UserDataError::Name(name.clone()));
            }
            let table = entry.as_table().ok_or_else(|| field(&key, "must be a table"))?;
            doc.host_containers.insert(name.clone(), host_container(table, &key)?);
        }
    }
    Ok(doc)
}

fn host_container(table: &toml::Table, key: &str) -> Result<HostContainer, UserDataError> {
    if let Some(unknown) = table.keys().find(|k| !HOST_CONTAINER_FIELDS.contains(&k.as_str())) {
        return Err(field(format!("{key}.{unknown}"), "not a host-container field"));
    }
    let source = optional(table, "source", &format!("{key}.source"), toml::Value::as_str)?
        .ok_or_else(|| field(format!("{key}.source"), "is required"))?;
    let user_data = optional(table, "user-data", &format!("{key}.user-data"), toml::Value::as_str)?
        .map(decode_base64)
        .transpose()?;
    Ok(HostContainer {
        source: source.to_owned(),
        enabled: optional(table, "enabled", &format!("{key}.enabled"), toml::Value::as_bool)?.unwrap_or(false),
        superpowered: optional(table, "superpowered", &format!("{key}.superpowered"), toml::Value::as_bool)?
            .unwrap_or(false),
        user_data,
    })
}

fn optional_table<'a>(t: &'a toml::Table, name: &str, key: &str) -> Result<Option<&'a toml::Table>, UserDataError> {
    optional(t, name, key, toml::Value::as_table)
}

fn optional<'a, T>(
    t: &'a toml::Table,
    name: &str,
    key: &str,
    get: fn(&'a toml::Value) -> Option<T>,
) -> Result<Option<T>, UserDataError> {
    match t.get(name) {
        None => Ok(None),
        Some(v) => get(v).map(Some).ok_or_else(|| field(key, format!("has the wrong type ({})", v.type_str()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("mode = \"auto\"\n", "bW9kZSA9ICJhdXRvIgo="),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(encode_base64(plain.as_bytes()), encoded, "{plain:?}");
            assert_eq!(decode_base64(encoded).expect("decodes"), plain.as_bytes(), "{encoded:?}");
        }
        let all: Vec<u8> = (0..=255).collect();
        let encoded = encode_base64(&all);
        assert!(encoded.contains('+') && encoded.contains('/'), "standard alphabet, not URL-safe");
        assert_eq!(decode_base64(&encoded).expect("round trip"), all);
    }

    #[test]
    fn malformed_base64_is_refused_with_its_position() {
        for (bad, at) in [("Zh==", 1), ("Zm9=", 2), ("Zg=", 3), ("Zm9v\n", 5), ("Zg==Zg==", 2), ("Z===", 1), ("Zm-v", 2), ("Zm_v", 2)] {
            match decode_base64(bad) {
                Err(UserDataError::Base64 { at: got, .. }) => assert_eq!(got, at, "{bad:?}"),
                other => panic!("{bad:?} must be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn names_follow_the_settings_model() {
        assert!(valid_name("br-update-agent"));
        assert!(valid_name("Agent2"));
        assert!(valid_name(&"a".repeat(76)));
        assert!(!valid_name(&"a".repeat(77)));
        assert!(!valid_name(""));
        assert!(!valid_name("br_update_agent"));
        assert!(!valid_name("agent.1"));
    }

    #[test]
    fn only_configs_the_agent_accepts_are_encoded() {
        let good = "# comment kept\ndry-run = true\n";
        let encoded = encode_config(good, "t").expect("valid config");
        assert_eq!(decode_base64(&encoded).expect("decodes"), good.as_bytes());
        assert!(matches!(encode_config("dry-run = \"yes\"", "t"), Err(UserDataError::Config(_))));
        assert!(matches!(encode_config("[cluster]\nmax-concurrent = 0", "t"), Err(UserDataError::Config(_))));
    }

    #[test]
    fn a_missing_config_file_is_an_error_not_the_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = encode_config_file(&dir.path().join("absent.toml")).expect_err("missing file");
        assert!(matches!(err, UserDataError::Read { .. }), "{err}");
    }

    #[test]
    fn the_block_parses_back_to_what_was_asked() {
        let user_data = encode_config("dry-run = true\n", "t").expect("valid");
        let source = "111122223333.dkr.ecr.us-west-2.amazonaws.com/br-update-agent:v0.1.0";
        let block = host_container_block("br-update-agent", source, &user_data).expect("block");
        let doc = parse_document(&block).expect("the block is a valid document");
        let hc = &doc.host_containers["br-update-agent"];
        assert_eq!(hc.source, source);
        assert!(hc.enabled && !hc.superpowered);
        assert_eq!(hc.user_data.as_deref(), Some(&b"dry-run = true\n"[..]));
        assert!(matches!(host_container_block("br_agent", source, &user_data), Err(UserDataError::Name(_))));
        assert!(host_container_block("a", " ", &user_data).is_err());
        assert!(host_container_block("a", source, "not base64!").is_err());
    }

    #[test]
    fn documents_are_checked_like_the_settings_model() {
        let doc = parse_document("[settings.ecs]\ncluster = \"prod\"\n[settings.host-containers.a]\nsource = \"img\"\n")
            .expect("valid");
        assert_eq!(doc.ecs_cluster.as_deref(), Some("prod"));
        assert_eq!(doc.host_containers["a"], HostContainer { source: "img".into(), enabled: false, superpowered: false, user_data: None });
        let refused = [
            "[settings.host-containers.a_b]\nsource = \"img\"\n",
            "[settings.host-containers.a]\nenabled = true\n",
            "[settings.host-containers.a]\nsource = \"img\"\nenabled = \"yes\"\n",
            "[settings.host-containers.a]\nsource = \"img\"\nuser-data = \"%%%%\"\n",
            "[settings.host-containers.a]\nsource = \"img\"\ncommand = [\"x\"]\n",
            "[settings.ecs]\ncluster = 3\n",
            "settings = [\n",
        ];
        for text in refused {
            assert!(parse_document(text).is_err(), "{text:?} must be refused");
        }
    }
}
