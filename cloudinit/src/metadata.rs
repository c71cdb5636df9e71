//! Metadata from a datasource (hostname, SSH keys, addresses), its merge into the config, and `$var` substitution.

use crate::config::CloudConfig;

/// What a datasource knows about the machine besides user-data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The platform's hostname for the machine.
    pub hostname: Option<String>,
    /// SSH public keys for `core`.
    pub ssh_public_keys: Vec<String>,
    /// `$public_ipv4`
    pub public_ipv4: Option<String>,
    /// `$private_ipv4`
    pub private_ipv4: Option<String>,
    /// `$public_ipv6`
    pub public_ipv6: Option<String>,
    /// `$private_ipv6`
    pub private_ipv6: Option<String>,
}

/// The substitution variables, their metadata field and their `COREOS_*` environment fallback.
const VARIABLES: [(&str, &str); 4] = [
    ("$public_ipv4", "COREOS_PUBLIC_IPV4"),
    ("$private_ipv4", "COREOS_PRIVATE_IPV4"),
    ("$public_ipv6", "COREOS_PUBLIC_IPV6"),
    ("$private_ipv6", "COREOS_PRIVATE_IPV6"),
];

impl Metadata {
    /// Fills unknown addresses from `COREOS_*` variables (looked up through `env`, so tests need no process env).
    pub fn with_env_fallback(mut self, env: impl Fn(&str) -> Option<String>) -> Metadata {
        for (i, (_, name)) in VARIABLES.iter().enumerate() {
            let slot = self.address_mut(i);
            if slot.as_deref().is_none_or(str::is_empty) {
                *slot = env(name).filter(|v| !v.is_empty());
            }
        }
        self
    }

    fn address_mut(&mut self, i: usize) -> &mut Option<String> {
        match i {
            0 => &mut self.public_ipv4,
            1 => &mut self.private_ipv4,
            2 => &mut self.public_ipv6,
            _ => &mut self.private_ipv6,
        }
    }

    fn address(&self, i: usize) -> Option<&str> {
        match i {
            0 => self.public_ipv4.as_deref(),
            1 => self.private_ipv4.as_deref(),
            2 => self.public_ipv6.as_deref(),
            _ => self.private_ipv6.as_deref(),
        }
    }

    /// The `COREOS_*` variables with known values, for `/etc/environment`.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        VARIABLES
            .iter()
            .enumerate()
            .filter_map(|(i, (_, name))| {
                self.address(i)
                    .filter(|v| !v.is_empty())
                    .map(|v| (*name, v.to_string()))
            })
            .collect()
    }

    /// Replaces `$public_ipv4` and friends in raw user-data; `\$name` stays a literal `$name`, unknown `$vars`
    /// are left alone, and unknown addresses become empty.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while let Some(pos) = rest.find('$') {
            let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'\\';
            let after = &rest[pos..];
            for (i, (var, _)) in VARIABLES.iter().enumerate() {
                if let Some(tail) = after.strip_prefix(var) {
                    if escaped {
                        out.push_str(&rest[..pos - 1]);
                        out.push_str(var);
                    } else {
                        out.push_str(&rest[..pos]);
                        out.push_str(self.address(i).unwrap_or_default());
                    }
                    rest = tail;
                    continue 'scan;
                }
            }
            out.push_str(&rest[..=pos]);
            rest = &rest[pos + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Merges metadata into a config: the metadata hostname only when the config has none, keys appended.
    pub fn merge_into(&self, config: &mut CloudConfig) {
        if let Some(hostname) = self.hostname.as_ref().filter(|h| !h.is_empty()) {
            if config.hostname.is_none() {
                config.hostname = Some(hostname.clone());
            } else {
                tracing::info!("user-data hostname overrides metadata hostname");
            }
        }
        config
            .ssh_authorized_keys
            .extend(self.ssh_public_keys.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_and_escapes() {
        let md = Metadata {
            private_ipv4: Some("10.0.0.5".into()),
            ..Default::default()
        };
        assert_eq!(
            md.substitute(
                "a: $private_ipv4:2379\nb: \\$private_ipv4\nc: $public_ipv4\nd: $HOME $\n"
            ),
            "a: 10.0.0.5:2379\nb: $private_ipv4\nc: \nd: $HOME $\n"
        );
    }

    #[test]
    fn env_fallback_and_environment() {
        let md = Metadata {
            public_ipv4: Some("1.2.3.4".into()),
            ..Default::default()
        }
        .with_env_fallback(|name| (name == "COREOS_PRIVATE_IPV4").then(|| "10.1.1.1".to_string()));
        assert_eq!(
            md.environment(),
            vec![
                ("COREOS_PUBLIC_IPV4", "1.2.3.4".to_string()),
                ("COREOS_PRIVATE_IPV4", "10.1.1.1".to_string())
            ]
        );
    }

    #[test]
    fn merge_hostname_and_keys() {
        let md = Metadata {
            hostname: Some("md".into()),
            ssh_public_keys: vec!["k2".into()],
            ..Default::default()
        };
        let mut c = CloudConfig {
            ssh_authorized_keys: vec!["k1".into()],
            ..Default::default()
        };
        md.merge_into(&mut c);
        assert_eq!(c.hostname.as_deref(), Some("md"));
        assert_eq!(c.ssh_authorized_keys, vec!["k1", "k2"]);
        let mut c = CloudConfig {
            hostname: Some("ud".into()),
            ..Default::default()
        };
        md.merge_into(&mut c);
        assert_eq!(c.hostname.as_deref(), Some("ud"));
    }
}
