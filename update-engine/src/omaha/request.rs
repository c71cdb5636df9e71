//! The Omaha request: written by the engine, parsed by the update server.

use std::fmt::Write;

use super::OmahaError;
use super::xml::{self, esc};

/// One `<event>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub event_type: u32,
    pub event_result: u32,
    pub error_code: Option<u32>,
    pub previous_version: Option<String>,
}

/// One `<app>` element of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppRequest {
    pub appid: String,
    pub version: String,
    pub track: String,
    pub bootid: String,
    pub oem: String,
    pub oemversion: String,
    pub alephversion: String,
    pub machineid: String,
    pub board: String,
    pub ping: bool,
    pub updatecheck: bool,
    pub events: Vec<Event>,
}

/// A whole request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `update_engine-<version>`.
    pub updater_version: String,
    /// `ondemandupdate` or `scheduler`.
    pub install_source: String,
    /// `<version>_<uname -m>`.
    pub os_sp: String,
    pub apps: Vec<AppRequest>,
}

impl Request {
    /// The request as the original wrote it.
    pub fn to_xml(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            s,
            "<request protocol=\"3.0\" version=\"{v}\" updaterversion=\"{v}\" installsource=\"{src}\" ismachine=\"1\">",
            v = esc(&self.updater_version),
            src = esc(&self.install_source)
        );
        let _ = writeln!(
            s,
            "    <os version=\"Chateau\" platform=\"CoreOS\" sp=\"{}\"></os>",
            esc(&self.os_sp)
        );
        for app in &self.apps {
            let _ = writeln!(
                s,
                "    <app appid=\"{}\" version=\"{}\" track=\"{}\" bootid=\"{}\" oem=\"{}\" oemversion=\"{}\" alephversion=\"{}\" machineid=\"{}\" lang=\"en-US\" board=\"{}\" hardware_class=\"\" delta_okay=\"false\" >",
                esc(&app.appid),
                esc(&app.version),
                esc(&app.track),
                esc(&app.bootid),
                esc(&app.oem),
                esc(&app.oemversion),
                esc(&app.alephversion),
                esc(&app.machineid),
                esc(&app.board),
            );
            if app.ping {
                s.push_str("        <ping active=\"1\"></ping>\n");
            }
            if app.updatecheck {
                s.push_str("        <updatecheck></updatecheck>\n");
            }
            for ev in &app.events {
                let _ = write!(
                    s,
                    "        <event eventtype=\"{}\" eventresult=\"{}\"",
                    ev.event_type, ev.event_result
                );
                if let Some(code) = ev.error_code {
                    let _ = write!(s, " errorcode=\"{code}\"");
                }
                if let Some(prev) = &ev.previous_version {
                    let _ = write!(s, " previousversion=\"{}\"", esc(prev));
                }
                s.push_str("></event>\n");
            }
            s.push_str("    </app>\n");
        }
        s.push_str("</request>\n");
        s
    }

    /// Parses a request (server side).
    pub fn parse(text: &str) -> Result<Self, OmahaError> {
        let root = xml::parse(text)?;
        if root.name != "request" {
            return Err(OmahaError::Invalid(format!(
                "root element is <{}>, not <request>",
                root.name
            )));
        }
        let get = |el: &xml::Element, k: &str| el.attr(k).unwrap_or_default().to_owned();
        let mut req = Request {
            updater_version: get(&root, "version"),
            install_source: get(&root, "installsource"),
            os_sp: root.child("os").map(|o| get(o, "sp")).unwrap_or_default(),
            apps: Vec::new(),
        };
        for app in root.children("app") {
            let mut events = Vec::new();
            for ev in app.children("event") {
                let num = |k: &str| -> Result<Option<u32>, OmahaError> {
                    ev.attr(k)
                        .map(|v| {
                            v.parse()
                                .map_err(|_| OmahaError::Invalid(format!("event {k}={v:?}")))
                        })
                        .transpose()
                };
                events.push(Event {
                    event_type: num("eventtype")?
                        .ok_or_else(|| OmahaError::Invalid("event without eventtype".into()))?,
                    event_result: num("eventresult")?.unwrap_or(0),
                    error_code: num("errorcode")?,
                    previous_version: ev.attr("previousversion").map(str::to_owned),
                });
            }
            req.apps.push(AppRequest {
                appid: get(app, "appid"),
                version: get(app, "version"),
                track: get(app, "track"),
                bootid: get(app, "bootid"),
                oem: get(app, "oem"),
                oemversion: get(app, "oemversion"),
                alephversion: get(app, "alephversion"),
                machineid: get(app, "machineid"),
                board: get(app, "board"),
                ping: app.child("ping").is_some(),
                updatecheck: app.child("updatecheck").is_some(),
                events,
            });
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_escapes() {
        let req = Request {
            updater_version: "update_engine-0.4.10".into(),
            install_source: "scheduler".into(),
            os_sp: "1.0.0_x86_64".into(),
            apps: vec![AppRequest {
                appid: "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}".into(),
                version: "1.0.0".into(),
                track: "we<ird\"&".into(),
                machineid: "abc".into(),
                ping: true,
                updatecheck: true,
                events: vec![Event {
                    event_type: 3,
                    event_result: 2,
                    error_code: None,
                    previous_version: Some("0.0.0.0".into()),
                }],
                ..Default::default()
            }],
        };
        let xml = req.to_xml();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(xml.contains("<request protocol=\"3.0\""));
        assert!(xml.contains("<os version=\"Chateau\" platform=\"CoreOS\" sp=\"1.0.0_x86_64\">"));
        assert!(
            xml.contains("<event eventtype=\"3\" eventresult=\"2\" previousversion=\"0.0.0.0\">")
        );
        assert_eq!(Request::parse(&xml).unwrap(), req);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Request::parse("<nope/>").is_err());
        assert!(Request::parse("<request><app>").is_err());
        assert!(Request::parse("<request><app><event eventtype=\"x\"/></app></request>").is_err());
    }
}
