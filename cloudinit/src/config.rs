//! The typed cloud-config (`CloudConfig`) decoded from the YAML node tree.
//!
//! Decoding is lenient, like the original's: a value of the wrong type leaves the field at its zero value (the
//! validator reports it), and string fields keep the text as written, so `reboot_strategy: off` is `"off"` and
//! `permissions: 0644` is `"0644"`.

use crate::schema::{self, Field, Ty};
use crate::yaml::{self, Node, SyntaxError, Value};

/// A whole `#cloud-config` document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudConfig {
    /// `hostname`
    pub hostname: Option<String>,
    /// `ssh_authorized_keys`, for user `core`.
    pub ssh_authorized_keys: Vec<String>,
    /// `users`
    pub users: Vec<User>,
    /// `write_files`
    pub write_files: Vec<WriteFile>,
    /// `manage_etc_hosts`
    pub manage_etc_hosts: Option<String>,
    /// `coreos`
    pub coreos: CoreOs,
}

/// The `coreos` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreOs {
    /// `coreos.etcd` (the deprecated etcd 0.4 schema).
    pub etcd: EnvSection,
    /// `coreos.etcd2`
    pub etcd2: EnvSection,
    /// `coreos.fleet`
    pub fleet: EnvSection,
    /// `coreos.flannel`
    pub flannel: EnvSection,
    /// `coreos.locksmith`
    pub locksmith: EnvSection,
    /// `coreos.oem`
    pub oem: Oem,
    /// `coreos.update`
    pub update: Update,
    /// `coreos.units`
    pub units: Vec<Unit>,
}

/// A section that becomes environment variables: the non-zero settings in schema declaration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvSection {
    /// Whether the section was present in the document.
    pub present: bool,
    /// The settings with non-zero values.
    pub settings: Vec<EnvSetting>,
}

/// One setting of an [`EnvSection`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSetting {
    /// The normalised YAML key.
    pub key: &'static str,
    /// The environment variable name.
    pub env: &'static str,
    /// The value as the daemon sees it (booleans `true`, floats as Go's `%v`, strings as written).
    pub value: String,
}

impl EnvSection {
    /// The value of a key, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.value.as_str())
    }

    /// Whether there is anything to write.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }
}

/// A `users[]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    /// `name`; entries without one are skipped.
    pub name: String,
    /// `passwd`: a crypt(3) hash.
    pub passwd: Option<String>,
    /// `gecos`
    pub gecos: Option<String>,
    /// `homedir`
    pub homedir: Option<String>,
    /// `no_create_home`
    pub no_create_home: bool,
    /// `primary_group`
    pub primary_group: Option<String>,
    /// `groups`
    pub groups: Vec<String>,
    /// `no_user_group`
    pub no_user_group: bool,
    /// `ssh_authorized_keys`
    pub ssh_authorized_keys: Vec<String>,
    /// `system`
    pub system: bool,
    /// `no_log_init`
    pub no_log_init: bool,
    /// `shell`
    pub shell: Option<String>,
    /// Deprecated remote key imports, kept so apply can say it skips them.
    pub deprecated_imports: bool,
}

/// A `write_files[]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteFile {
    /// `path`
    pub path: String,
    /// `content`, still encoded.
    pub content: String,
    /// `encoding`
    pub encoding: Option<String>,
    /// `permissions` as written (octal text).
    pub permissions: Option<String>,
    /// `owner`: `user`, or `user:group`.
    pub owner: Option<String>,
}

/// `coreos.oem`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Oem {
    /// `id`; `/etc/oem-release` is written only when set.
    pub id: Option<String>,
    /// `name`
    pub name: Option<String>,
    /// `version_id`
    pub version_id: Option<String>,
    /// `home_url`
    pub home_url: Option<String>,
    /// `bug_report_url`
    pub bug_report_url: Option<String>,
}

/// `coreos.update`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// `reboot_strategy`: `etcd-lock`, `reboot` or `off`.
    pub reboot_strategy: Option<String>,
    /// `group`
    pub group: Option<String>,
    /// `server`
    pub server: Option<String>,
}

/// A `coreos.units[]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unit {
    /// `name`; entries without one are skipped.
    pub name: String,
    /// `mask`
    pub mask: bool,
    /// `enable`
    pub enable: bool,
    /// `runtime`: write under /run instead of /etc.
    pub runtime: bool,
    /// `content`
    pub content: Option<String>,
    /// `command`
    pub command: Option<String>,
    /// `drop_ins`
    pub drop_ins: Vec<DropIn>,
}

/// A unit's `drop_ins[]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DropIn {
    /// `name`, e.g. `10-limits.conf`.
    pub name: String,
    /// `content`
    pub content: String,
}

impl CloudConfig {
    /// Parses the YAML text of a cloud-config (the header line is a comment to YAML).
    pub fn parse(text: &str) -> Result<CloudConfig, SyntaxError> {
        let text = text.replace('\r', "");
        Ok(CloudConfig::from_node(yaml::parse(&text)?.as_ref()))
    }

    /// Decodes a parsed document; `None` (an empty document) is the empty config.
    pub fn from_node(root: Option<&Node>) -> CloudConfig {
        let Some(root) = root else {
            return CloudConfig::default();
        };
        let coreos = root.get("coreos");
        CloudConfig {
            hostname: string(root, "hostname"),
            ssh_authorized_keys: strings(root, "ssh_authorized_keys"),
            users: items(root, "users").map(decode_user).collect(),
            write_files: items(root, "write_files").map(decode_write_file).collect(),
            manage_etc_hosts: string(root, "manage_etc_hosts"),
            coreos: coreos.map(decode_coreos).unwrap_or_default(),
        }
    }
}

fn decode_coreos(node: &Node) -> CoreOs {
    let oem = node.get("oem");
    let update = node.get("update");
    CoreOs {
        etcd: env_section(node.get("etcd"), schema::ETCD),
        etcd2: env_section(node.get("etcd2"), schema::ETCD2),
        fleet: env_section(node.get("fleet"), schema::FLEET),
        flannel: env_section(node.get("flannel"), schema::FLANNEL),
        locksmith: env_section(node.get("locksmith"), schema::LOCKSMITH),
        oem: oem.map_or_else(Oem::default, |n| Oem {
            id: string(n, "id"),
            name: string(n, "name"),
            version_id: string(n, "version_id"),
            home_url: string(n, "home_url"),
            bug_report_url: string(n, "bug_report_url"),
        }),
        update: update.map_or_else(Update::default, |n| Update {
            reboot_strategy: string(n, "reboot_strategy"),
            group: string(n, "group"),
            server: string(n, "server"),
        }),
        units: items(node, "units").map(decode_unit).collect(),
    }
}

fn decode_user(n: &Node) -> User {
    User {
        name: string(n, "name").unwrap_or_default(),
        passwd: string(n, "passwd"),
        gecos: string(n, "gecos"),
        homedir: string(n, "homedir"),
        no_create_home: boolean(n, "no_create_home"),
        primary_group: string(n, "primary_group"),
        groups: strings(n, "groups"),
        no_user_group: boolean(n, "no_user_group"),
        ssh_authorized_keys: strings(n, "ssh_authorized_keys"),
        system: boolean(n, "system"),
        no_log_init: boolean(n, "no_log_init"),
        shell: string(n, "shell"),
        deprecated_imports: n.get("coreos_ssh_import_github").is_some()
            || n.get("coreos_ssh_import_github_users").is_some()
            || n.get("coreos_ssh_import_url").is_some(),
    }
}

fn decode_write_file(n: &Node) -> WriteFile {
    WriteFile {
        path: string(n, "path").unwrap_or_default(),
        content: string(n, "content").unwrap_or_default(),
        encoding: string(n, "encoding"),
        permissions: string(n, "permissions"),
        owner: string(n, "owner"),
    }
}

fn decode_unit(n: &Node) -> Unit {
    Unit {
        name: string(n, "name").unwrap_or_default(),
        mask: boolean(n, "mask"),
        enable: boolean(n, "enable"),
        runtime: boolean(n, "runtime"),
        content: string(n, "content"),
        command: string(n, "command"),
        drop_ins: items(n, "drop_ins")
            .map(|d| DropIn {
                name: string(d, "name").unwrap_or_default(),
                content: string(d, "content").unwrap_or_default(),
            })
            .collect(),
    }
}

fn env_section(node: Option<&Node>, fields: &'static [Field]) -> EnvSection {
    let Some(node) = node else {
        return EnvSection::default();
    };
    let mut settings = Vec::new();
    for field in fields {
        let (Some(env), Some(value)) = (field.env, node.get(field.key)) else {
            continue;
        };
        let Some(scalar) = value.as_scalar() else {
            continue;
        };
        let rendered = match (field.ty, scalar.resolve()) {
            (_, Value::Null) => None,
            (Ty::Str, _) => Some(scalar.text.clone()).filter(|s| !s.is_empty()),
            (Ty::Bool, Value::Bool(true)) => Some("true".to_string()),
            (Ty::Int, Value::Int(i)) if i != 0 => Some(i.to_string()),
            (Ty::Float, Value::Int(i)) if i != 0 => Some(i.to_string()),
            (Ty::Float, Value::Float(x)) if x != 0.0 => Some(x.to_string()),
            _ => None,
        };
        if let Some(value) = rendered {
            settings.push(EnvSetting {
                key: field.key,
                env,
                value,
            });
        }
    }
    EnvSection {
        present: true,
        settings,
    }
}

/// A string field: the scalar's source text, `None` when absent, null or not a scalar.
fn string(node: &Node, key: &str) -> Option<String> {
    let scalar = node.get(key)?.as_scalar()?;
    match scalar.resolve() {
        Value::Null => None,
        _ => Some(scalar.text.clone()),
    }
}

fn boolean(node: &Node, key: &str) -> bool {
    matches!(
        node.get(key).and_then(Node::as_scalar).map(|s| s.resolve()),
        Some(Value::Bool(true))
    )
}

fn strings(node: &Node, key: &str) -> Vec<String> {
    node.get(key)
        .and_then(Node::as_seq)
        .map(|items| {
            items
                .iter()
                .filter_map(Node::as_scalar)
                .filter(|s| s.resolve() != Value::Null)
                .map(|s| s.text.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn items<'a>(node: &'a Node, key: &str) -> impl Iterator<Item = &'a Node> {
    node.get(key)
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
        .filter(|n| n.as_map().is_some())
}

/// Why write_files content could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("content cannot be decoded as {encoding:?}")]
pub struct DecodeError {
    /// The encoding that failed.
    pub encoding: String,
}

/// Decodes write_files content with its `encoding` (b64/base64, gz/gzip, or both combined); `None` is plain text.
pub fn decode_content(content: &str, encoding: Option<&str>) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let Some(encoding) = encoding else {
        return Ok(content.as_bytes().to_vec());
    };
    let fail = || DecodeError {
        encoding: encoding.to_string(),
    };
    let b64 = |text: &str| {
        use base64::Engine;
        let compact: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|_| fail())
    };
    let gunzip = |data: &[u8]| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|_| fail())?;
        Ok::<_, DecodeError>(out)
    };
    match encoding {
        "b64" | "base64" => b64(content),
        "gz" | "gzip" => gunzip(content.as_bytes()),
        "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => gunzip(&b64(content)?),
        _ => Err(fail()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"#cloud-config
hostname: node1
ssh-authorized-keys:
  - ssh-ed25519 AAAA core@example
users:
  - name: alice
    groups: [sudo, docker]
    no-create-home: yes
write_files:
  - path: /etc/motd
    permissions: 0644
    content: hello
coreos:
  etcd2:
    name: node1
    heartbeat-interval: 100
    debug: on
    proxy: off
  fleet:
    engine_reconcile_interval: 2.5
  update:
    reboot-strategy: off
  units:
    - name: docker.service
      enable: yes
      command: start
      drop-ins:
        - name: 10-x.conf
          content: "[Service]\n"
"#;

    #[test]
    fn decodes_all_sections_with_source_text() {
        let c = CloudConfig::parse(SAMPLE).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("node1"));
        assert_eq!(c.ssh_authorized_keys, vec!["ssh-ed25519 AAAA core@example"]);
        assert_eq!(c.users[0].name, "alice");
        assert!(c.users[0].no_create_home);
        assert_eq!(c.users[0].groups, vec!["sudo", "docker"]);
        assert_eq!(c.write_files[0].permissions.as_deref(), Some("0644"));
        assert_eq!(c.coreos.update.reboot_strategy.as_deref(), Some("off"));
        assert_eq!(c.coreos.etcd2.get("proxy"), Some("off"));
        assert_eq!(c.coreos.etcd2.get("debug"), Some("true"));
        assert_eq!(c.coreos.etcd2.get("heartbeat_interval"), Some("100"));
        assert_eq!(c.coreos.fleet.get("engine_reconcile_interval"), Some("2.5"));
        let envs: Vec<_> = c.coreos.etcd2.settings.iter().map(|s| s.env).collect();
        assert_eq!(
            envs,
            vec![
                "ETCD_DEBUG",
                "ETCD_HEARTBEAT_INTERVAL",
                "ETCD_NAME",
                "ETCD_PROXY"
            ]
        );
        let unit = &c.coreos.units[0];
        assert!(unit.enable);
        assert_eq!(unit.command.as_deref(), Some("start"));
        assert_eq!(unit.drop_ins[0].content, "[Service]\n");
    }

    #[test]
    fn wrong_types_are_zero() {
        let c = CloudConfig::parse(
            "#cloud-config\nhostname: [a]\nusers: 3\ncoreos:\n  units:\n    - enable: maybe\n",
        )
        .unwrap();
        assert_eq!(c.hostname, None);
        assert!(c.users.is_empty());
        assert!(!c.coreos.units[0].enable);
    }
}
