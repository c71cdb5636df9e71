//! A small element tree over quick-xml, enough for Omaha documents (elements
//! and attributes; text is ignored), and attribute escaping for writers.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::OmahaError;

/// One element with its attributes and child elements.
#[derive(Clone, Debug, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
}

impl Element {
    /// An attribute's unescaped value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Child elements named `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child element named `name`.
    pub fn child<'a>(&'a self, name: &'a str) -> Option<&'a Element> {
        self.children(name).next()
    }
}

fn element(start: &BytesStart<'_>) -> Result<Element, OmahaError> {
    let name = start.name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for a in start.attributes() {
        let a = a.map_err(|e| OmahaError::Xml(e.to_string()))?;
        let key = a.key.as_ref().to_owned();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| OmahaError::Xml(e.to_string()))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
    })
}

/// Parses a document into its root element.
pub fn parse(text: &str) -> Result<Element, OmahaError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        match reader
            .read_event()
            .map_err(|e| OmahaError::Xml(e.to_string()))?
        {
            Event::Start(s) => stack.push(element(&s)?),
            Event::Empty(s) => {
                let el = element(&s)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| OmahaError::Xml("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Ok(el),
                }
            }
            Event::Eof => {
                return Err(OmahaError::Xml(
                    "document ends before its root closes".into(),
                ));
            }
            _ => {}
        }
    }
}

/// Escapes a value for a double-quoted attribute.
pub fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}
