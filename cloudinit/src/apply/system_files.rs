//! The generated files: /etc/oem-release, /etc/coreos/update.conf, /etc/hosts, /etc/environment and
//! /run/flannel/options.env, plus the environment drop-ins for etcd, etcd2, fleet and locksmith.

use std::path::Path;

use crate::config::{EnvSection, Oem, Update};
use crate::schema;
use crate::validate::matches_pattern;

use super::Error;

/// `/etc/oem-release` content, only when `id` is set.
pub fn oem_release(oem: &Oem) -> Option<String> {
    let id = oem.id.as_ref().filter(|s| !s.is_empty())?;
    let q = |v: &Option<String>| {
        serde_json::to_string(v.as_deref().unwrap_or_default()).unwrap_or_default()
    };
    Some(format!(
        "ID={id}\nVERSION_ID={}\nNAME={}\nHOME_URL={}\nBUG_REPORT_URL={}\n",
        oem.version_id.as_deref().unwrap_or_default(),
        q(&oem.name),
        q(&oem.home_url),
        q(&oem.bug_report_url),
    ))
}

/// The update.conf settings, after checking `reboot_strategy`.
pub fn update_settings(update: &Update) -> Result<Vec<(&'static str, String)>, Error> {
    let mut out = Vec::new();
    if let Some(strategy) = &update.reboot_strategy {
        if !matches_pattern(schema::REBOOT_STRATEGY_RE, strategy) {
            return Err(Error::Invalid(format!(
                "invalid value {strategy} for coreos.update.reboot_strategy"
            )));
        }
        out.push(("REBOOT_STRATEGY", strategy.clone()));
    }
    if let Some(group) = update.group.as_ref().filter(|s| !s.is_empty()) {
        out.push(("GROUP", group.clone()));
    }
    if let Some(server) = update.server.as_ref().filter(|s| !s.is_empty()) {
        out.push(("SERVER", server.clone()));
    }
    Ok(out)
}

/// Merges `KEY=value` settings into an env-style file: a line starting with a key is replaced, the keys not
/// found are appended in sorted order, every other line is kept.
pub fn merge_env_lines(existing: &str, settings: &[(&str, String)]) -> String {
    let mut seen = vec![false; settings.len()];
    let mut lines: Vec<String> = Vec::new();
    for line in existing.lines() {
        let hit = settings
            .iter()
            .position(|(k, _)| line.starts_with(&format!("{k}=")));
        match hit {
            Some(i) => {
                seen[i] = true;
                lines.push(format!("{}={}", settings[i].0, settings[i].1));
            }
            None => lines.push(line.to_string()),
        }
    }
    let mut missing: Vec<&(&str, String)> = settings
        .iter()
        .zip(&seen)
        .filter(|(_, s)| !**s)
        .map(|(kv, _)| kv)
        .collect();
    missing.sort_by_key(|(k, _)| *k);
    for (k, v) in missing {
        lines.push(format!("{k}={v}"));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The update.conf to write: the merge of the settings into `/etc/coreos/update.conf`, or into
/// `/usr/share/coreos/update.conf` when the first does not exist.
pub fn update_conf(root: &Path, settings: &[(&'static str, String)]) -> Result<String, Error> {
    let mut existing = String::new();
    for candidate in ["etc/coreos/update.conf", "usr/share/coreos/update.conf"] {
        let path = root.join(candidate);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                existing = text;
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path, source }),
        }
    }
    Ok(merge_env_lines(&existing, settings))
}

/// A `[Service]` drop-in with one `Environment="KEY=value"` line per setting.
pub fn env_dropin(section: &EnvSection) -> Option<String> {
    if section.is_empty() {
        return None;
    }
    let mut out = String::from("[Service]\n");
    for s in &section.settings {
        out.push_str(&format!("Environment=\"{}={}\"\n", s.env, s.value));
    }
    Some(out)
}

/// `/run/flannel/options.env`: plain `KEY=value` lines.
pub fn flannel_env(section: &EnvSection) -> Option<String> {
    if section.is_empty() {
        return None;
    }
    Some(
        section
            .settings
            .iter()
            .map(|s| format!("{}={}\n", s.env, s.value))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CloudConfig;

    #[test]
    fn update_conf_merge() {
        let existing = "GROUP=stable\nSERVER=https://old\n# comment\n";
        let settings = vec![
            ("REBOOT_STRATEGY", "off".to_string()),
            ("GROUP", "beta".to_string()),
        ];
        assert_eq!(
            merge_env_lines(existing, &settings),
            "GROUP=beta\nSERVER=https://old\n# comment\nREBOOT_STRATEGY=off\n"
        );
        assert_eq!(
            merge_env_lines("", &settings),
            "GROUP=beta\nREBOOT_STRATEGY=off\n"
        );
    }

    #[test]
    fn reboot_strategy_is_checked() {
        let bad = Update {
            reboot_strategy: Some("best-effort".into()),
            ..Default::default()
        };
        assert!(update_settings(&bad).is_err());
        let ok = Update {
            reboot_strategy: Some("off".into()),
            server: Some("s".into()),
            ..Default::default()
        };
        assert_eq!(
            update_settings(&ok).unwrap(),
            vec![("REBOOT_STRATEGY", "off".into()), ("SERVER", "s".into())]
        );
    }

    #[test]
    fn oem_release_format() {
        let oem = Oem {
            id: Some("rackspace".into()),
            name: Some("Rackspace \"Cloud\"".into()),
            ..Default::default()
        };
        assert_eq!(
            oem_release(&oem).unwrap(),
            "ID=rackspace\nVERSION_ID=\nNAME=\"Rackspace \\\"Cloud\\\"\"\nHOME_URL=\"\"\nBUG_REPORT_URL=\"\"\n"
        );
        assert_eq!(oem_release(&Oem::default()), None);
    }

    #[test]
    fn dropins_and_flannel() {
        let c = CloudConfig::parse(
            "#cloud-config\ncoreos:\n  etcd2:\n    name: n1\n    debug: true\n  flannel:\n    interface: eth1\n    etcd_prefix: /coreos.com/network\n",
        )
        .unwrap();
        assert_eq!(
            env_dropin(&c.coreos.etcd2).unwrap(),
            "[Service]\nEnvironment=\"ETCD_DEBUG=true\"\nEnvironment=\"ETCD_NAME=n1\"\n"
        );
        assert_eq!(
            flannel_env(&c.coreos.flannel).unwrap(),
            "FLANNELD_ETCD_PREFIX=/coreos.com/network\nFLANNELD_IFACE=eth1\n"
        );
        assert_eq!(env_dropin(&c.coreos.fleet), None);
    }
}
