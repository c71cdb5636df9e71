//! The Omaha response: written by the update server, parsed and validated
//! by the engine into an [`UpdateOffer`].

use std::fmt::Write;

use super::OmahaError;
use super::xml::{self, esc};

/// A `<package>` of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// base64 SHA-1 of the payload (informational).
    pub hash: String,
    pub size: u64,
}

/// The `postinstall` action's attributes the engine uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostInstall {
    /// base64 SHA-256 of the payload.
    pub sha256: String,
}

/// The `<updatecheck>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateCheck {
    /// `ok`, `noupdate` or `error-*`.
    pub status: String,
    pub urls: Vec<String>,
    pub version: String,
    pub packages: Vec<Package>,
    pub postinstall: Option<PostInstall>,
}

impl UpdateCheck {
    /// An `updatecheck` with only a status (noupdate or an error).
    pub fn status_only(status: &str) -> Self {
        UpdateCheck {
            status: status.into(),
            urls: Vec::new(),
            version: String::new(),
            packages: Vec::new(),
            postinstall: None,
        }
    }
}

/// One `<app>` of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppResponse {
    pub appid: String,
    pub status: String,
    pub updatecheck: Option<UpdateCheck>,
    /// Events are acknowledged with `<event status="ok">`.
    pub events_acked: usize,
}

/// A whole response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub elapsed_seconds: u64,
    pub apps: Vec<AppResponse>,
}

/// What the engine takes from an `ok` update check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateOffer {
    pub version: String,
    /// codebase + package name.
    pub url: String,
    pub size: u64,
    /// The raw 32-byte SHA-256 of the payload.
    pub sha256: Vec<u8>,
}

impl Response {
    /// The response as an Omaha server writes it.
    pub fn to_xml(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        s.push_str("<response protocol=\"3.0\" server=\"update-server\">\n");
        let _ = writeln!(
            s,
            "  <daystart elapsed_seconds=\"{}\"></daystart>",
            self.elapsed_seconds
        );
        for app in &self.apps {
            let _ = writeln!(
                s,
                "  <app appid=\"{}\" status=\"{}\">",
                esc(&app.appid),
                esc(&app.status)
            );
            for _ in 0..app.events_acked {
                s.push_str("    <event status=\"ok\"></event>\n");
            }
            if let Some(uc) = &app.updatecheck {
                let _ = writeln!(s, "    <updatecheck status=\"{}\">", esc(&uc.status));
                if !uc.urls.is_empty() {
                    s.push_str("      <urls>\n");
                    for u in &uc.urls {
                        let _ = writeln!(s, "        <url codebase=\"{}\"></url>", esc(u));
                    }
                    s.push_str("      </urls>\n");
                }
                if !uc.packages.is_empty() || uc.postinstall.is_some() {
                    let _ = writeln!(s, "      <manifest version=\"{}\">", esc(&uc.version));
                    s.push_str("        <packages>\n");
                    for p in &uc.packages {
                        let _ = writeln!(
                            s,
                            "          <package name=\"{}\" hash=\"{}\" size=\"{}\" required=\"true\"></package>",
                            esc(&p.name),
                            esc(&p.hash),
                            p.size
                        );
                    }
                    s.push_str("        </packages>\n        <actions>\n");
                    if let Some(pi) = &uc.postinstall {
                        let _ = writeln!(
                            s,
                            "          <action event=\"postinstall\" sha256=\"{}\" DisplayVersion=\"{}\" IsDeltaPayload=\"false\" needsadmin=\"false\" DisablePayloadBackoff=\"true\"></action>",
                            esc(&pi.sha256),
                            esc(&uc.version)
                        );
                    }
                    s.push_str("        </actions>\n      </manifest>\n");
                }
                s.push_str("    </updatecheck>\n");
            }
            s.push_str("  </app>\n");
        }
        s.push_str("</response>\n");
        s
    }

    /// Parses a response.
    pub fn parse(text: &str) -> Result<Self, OmahaError> {
        let root = xml::parse(text)?;
        if root.name != "response" {
            return Err(OmahaError::Invalid(format!(
                "root element is <{}>, not <response>",
                root.name
            )));
        }
        let mut resp = Response {
            elapsed_seconds: root
                .child("daystart")
                .and_then(|d| d.attr("elapsed_seconds"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            apps: Vec::new(),
        };
        for app in root.children("app") {
            let updatecheck = app.child("updatecheck").map(|uc| {
                let manifest = uc.child("manifest");
                UpdateCheck {
                    status: uc.attr("status").unwrap_or_default().into(),
                    urls: uc
                        .child("urls")
                        .map(|u| {
                            u.children("url")
                                .filter_map(|c| c.attr("codebase").map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    version: manifest
                        .and_then(|m| m.attr("version"))
                        .unwrap_or_default()
                        .into(),
                    packages: manifest
                        .and_then(|m| m.child("packages"))
                        .map(|p| {
                            p.children("package")
                                .map(|pk| Package {
                                    name: pk.attr("name").unwrap_or_default().into(),
                                    hash: pk.attr("hash").unwrap_or_default().into(),
                                    size: pk.attr("size").and_then(|s| s.parse().ok()).unwrap_or(0),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    postinstall: manifest
                        .and_then(|m| m.child("actions"))
                        .and_then(|a| {
                            a.children("action")
                                .find(|ac| ac.attr("event") == Some("postinstall"))
                        })
                        .map(|ac| PostInstall {
                            sha256: ac.attr("sha256").unwrap_or_default().into(),
                        }),
                }
            });
            resp.apps.push(AppResponse {
                appid: app.attr("appid").unwrap_or_default().into(),
                status: app.attr("status").unwrap_or_default().into(),
                updatecheck,
                events_acked: app.children("event").count(),
            });
        }
        Ok(resp)
    }

    /// The engine's reading of an update-check response for `appid`:
    /// `Ok(None)` for `noupdate`, an offer for a complete `ok`, and an error
    /// (ActionExitCode 34) for anything else.
    pub fn offer(&self, appid: &str) -> Result<Option<UpdateOffer>, OmahaError> {
        use base64::Engine;
        let app = self
            .apps
            .iter()
            .find(|a| a.appid.eq_ignore_ascii_case(appid))
            .or(self.apps.first())
            .ok_or_else(|| OmahaError::Invalid("no app in the response".into()))?;
        if app.status != "ok" {
            return Err(OmahaError::Invalid(format!("app status {:?}", app.status)));
        }
        let uc = app
            .updatecheck
            .as_ref()
            .ok_or_else(|| OmahaError::Invalid("no updatecheck in the response".into()))?;
        match uc.status.as_str() {
            "noupdate" => return Ok(None),
            "ok" => {}
            other => {
                return Err(OmahaError::Invalid(format!("updatecheck status {other:?}")));
            }
        }
        let codebase = uc
            .urls
            .first()
            .ok_or_else(|| OmahaError::Invalid("no url codebase".into()))?;
        let pkg = uc
            .packages
            .first()
            .ok_or_else(|| OmahaError::Invalid("no package".into()))?;
        if pkg.name.is_empty() || pkg.size == 0 {
            return Err(OmahaError::Invalid("package without name or size".into()));
        }
        let sha = uc
            .postinstall
            .as_ref()
            .map(|p| p.sha256.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OmahaError::Invalid("no postinstall sha256".into()))?;
        let sha256 = base64::engine::general_purpose::STANDARD
            .decode(sha)
            .map_err(|e| OmahaError::Invalid(format!("postinstall sha256: {e}")))?;
        Ok(Some(UpdateOffer {
            version: uc.version.clone(),
            url: format!("{codebase}{}", pkg.name),
            size: pkg.size,
            sha256,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_response() -> Response {
        Response {
            elapsed_seconds: 100,
            apps: vec![AppResponse {
                appid: "{app}".into(),
                status: "ok".into(),
                events_acked: 0,
                updatecheck: Some(UpdateCheck {
                    status: "ok".into(),
                    urls: vec!["http://127.0.0.1:1/p/".into()],
                    version: "2.0.0".into(),
                    packages: vec![Package {
                        name: "update.gz".into(),
                        hash: "x".into(),
                        size: 42,
                    }],
                    postinstall: Some(PostInstall {
                        sha256: "AAAA".into(),
                    }),
                }),
            }],
        }
    }

    #[test]
    fn ok_response_round_trips_into_an_offer() {
        let resp = ok_response();
        let parsed = Response::parse(&resp.to_xml()).unwrap();
        assert_eq!(parsed, resp);
        let offer = parsed.offer("{APP}").unwrap().unwrap();
        assert_eq!(offer.url, "http://127.0.0.1:1/p/update.gz");
        assert_eq!(offer.size, 42);
        assert_eq!(offer.sha256, vec![0, 0, 0]);
        assert_eq!(offer.version, "2.0.0");
    }

    #[test]
    fn noupdate_and_errors() {
        let mut resp = ok_response();
        resp.apps[0].updatecheck = Some(UpdateCheck::status_only("noupdate"));
        assert_eq!(
            Response::parse(&resp.to_xml())
                .unwrap()
                .offer("{app}")
                .unwrap(),
            None
        );
        resp.apps[0].updatecheck = Some(UpdateCheck::status_only("error-noPackageFound"));
        assert!(resp.offer("{app}").is_err());
        let mut no_sha = ok_response();
        if let Some(uc) = no_sha.apps[0].updatecheck.as_mut() {
            uc.postinstall = None;
        }
        assert!(no_sha.offer("{app}").is_err());
        let mut no_url = ok_response();
        if let Some(uc) = no_url.apps[0].updatecheck.as_mut() {
            uc.urls.clear();
        }
        assert!(no_url.offer("{app}").is_err());
    }
}
