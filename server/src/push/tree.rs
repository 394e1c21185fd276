//! The one tree both decoders produce: an OMA Client Provisioning document
//! (`wap-provisioningdoc`) as nested characteristics holding parameters.
//!
//! [`crate::push::xml`] and [`crate::push::wbxml`] each turn their input into a neutral
//! element tree (`Element`); `build` checks the PROV structure once, for both, so the
//! two encodings of a document cannot be read differently.

use std::fmt;

/// Deepest element nesting either decoder accepts. A PROV document needs five levels
/// (document, characteristic, characteristic, characteristic, parm); the bound keeps the
/// recursive decoders and the drop of the tree far from the stack's limits.
pub const MAX_DEPTH: usize = 32;

/// Most elements and attributes, counted together, either decoder accepts in one
/// document. A whitelist of 1000 entries needs a few thousand; the bound keeps a small
/// input from becoming a large tree.
pub const MAX_NODES: usize = 100_000;

/// Most attributes on one element (PROV uses at most three).
pub const MAX_ATTRS: usize = 16;

/// A provisioning document.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvDoc {
    /// The `version` attribute of `wap-provisioningdoc`, if any.
    pub version: Option<String>,
    /// The top-level characteristics, in document order.
    pub characteristics: Vec<Characteristic>,
}

/// A `characteristic` element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Characteristic {
    /// The `type` attribute (`APPLICATION`, `PXLOGICAL`, `NAPDEF`, ...), as written.
    pub type_: String,
    /// Its `parm` children, in document order.
    pub parms: Vec<Parm>,
    /// Its `characteristic` children, in document order.
    pub children: Vec<Characteristic>,
}

/// A `parm` element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parm {
    /// The `name` attribute, as written.
    pub name: String,
    /// The `value` attribute, as written; `None` when absent.
    pub value: Option<String>,
}

impl ProvDoc {
    /// Top-level characteristics of the given type (surrounding blanks ignored).
    pub fn characteristics_of<'a>(
        &'a self,
        type_: &'a str,
    ) -> impl Iterator<Item = &'a Characteristic> + 'a {
        self.characteristics.iter().filter(move |c| c.is(type_))
    }
}

impl Characteristic {
    /// Whether this characteristic has the given type (surrounding blanks ignored).
    pub fn is(&self, type_: &str) -> bool {
        self.type_.trim() == type_
    }

    /// The trimmed values of every parm with this name (name compared trimmed).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.parms
            .iter()
            .filter(move |p| p.name.trim() == name)
            .map(|p| p.value.as_deref().unwrap_or("").trim())
    }

    /// The trimmed value of the first parm with this name.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.parms
            .iter()
            .find(|p| p.name.trim() == name)
            .map(|p| p.value.as_deref().unwrap_or("").trim())
    }

    /// Child characteristics of the given type.
    pub fn children_of<'a>(
        &'a self,
        type_: &'a str,
    ) -> impl Iterator<Item = &'a Characteristic> + 'a {
        self.children.iter().filter(move |c| c.is(type_))
    }
}

/// Where in the input something was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A text document: 1-based line and column (in characters).
    Text {
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
    },
    /// A binary document: the byte offset from the start.
    Byte(usize),
}

impl Location {
    /// The line and column of byte `offset` in `text`.
    pub fn in_text(text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location::Text { line, column }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Text { line, column } => write!(f, "line {line}, column {column}"),
            Location::Byte(offset) => write!(f, "byte offset {offset} (0x{offset:x})"),
        }
    }
}

/// A malformed document: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct DocError {
    /// Where the problem was found.
    pub at: Location,
    /// What is wrong, for a human.
    pub problem: String,
}

impl DocError {
    /// A problem at a location.
    pub fn new(at: Location, problem: impl Into<String>) -> DocError {
        DocError {
            at,
            problem: problem.into(),
        }
    }
}

/// A decoded element, before the PROV structure is checked. Produced by the decoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub at: Location,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks the PROV structure of a decoded element tree and builds the document.
///
/// The root must be `wap-provisioningdoc` holding only `characteristic`s; a
/// `characteristic` needs a `type` and holds `parm`s and `characteristic`s; a `parm`
/// needs a `name` and holds nothing. Attributes PROV does not define are ignored.
pub(crate) fn build(root: Element) -> Result<ProvDoc, DocError> {
    if root.name != "wap-provisioningdoc" {
        return Err(DocError::new(
            root.at,
            format!(
                "the root element is <{}>, not <wap-provisioningdoc>",
                root.name
            ),
        ));
    }
    let version = root.attr("version").map(str::to_owned);
    let mut characteristics = Vec::with_capacity(root.children.len());
    for child in root.children {
        if child.name != "characteristic" {
            return Err(unexpected(&child, "wap-provisioningdoc"));
        }
        characteristics.push(characteristic(child)?);
    }
    Ok(ProvDoc {
        version,
        characteristics,
    })
}

fn characteristic(element: Element) -> Result<Characteristic, DocError> {
    let Some(type_) = element.attr("type").map(str::to_owned) else {
        return Err(DocError::new(
            element.at,
            "<characteristic> has no type attribute",
        ));
    };
    let mut parms = Vec::new();
    let mut children = Vec::new();
    for child in element.children {
        match child.name.as_str() {
            "parm" => parms.push(parm(child)?),
            "characteristic" => children.push(characteristic(child)?),
            _ => return Err(unexpected(&child, "characteristic")),
        }
    }
    Ok(Characteristic {
        type_,
        parms,
        children,
    })
}

fn parm(element: Element) -> Result<Parm, DocError> {
    if let Some(child) = element.children.first() {
        return Err(unexpected(child, "parm"));
    }
    let Some(name) = element.attr("name").map(str::to_owned) else {
        return Err(DocError::new(element.at, "<parm> has no name attribute"));
    };
    let value = element.attr("value").map(str::to_owned);
    Ok(Parm { name, value })
}

fn unexpected(child: &Element, parent: &str) -> DocError {
    DocError::new(
        child.at,
        format!("<{}> is not allowed inside <{parent}>", child.name),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn el(name: &str, attrs: &[(&str, &str)], children: Vec<Element>) -> Element {
        Element {
            name: name.into(),
            attrs: attrs
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
            children,
            at: Location::Byte(0),
        }
    }

    #[test]
    fn builds_and_queries() {
        let root = el(
            "wap-provisioningdoc",
            &[("version", "1.1")],
            vec![el(
                "characteristic",
                &[("type", "APPLICATION ")],
                vec![
                    el("parm", &[("name", "APPID"), ("value", " x ")], vec![]),
                    el("parm", &[("name", "EMPTY")], vec![]),
                    el("characteristic", &[("type", "APPADDR")], vec![]),
                ],
            )],
        );
        let doc = build(root).unwrap();
        assert_eq!(doc.version.as_deref(), Some("1.1"));
        let app = doc.characteristics_of("APPLICATION").next().unwrap();
        assert_eq!(app.value("APPID"), Some("x"));
        assert_eq!(app.value("EMPTY"), Some(""));
        assert_eq!(app.value("NONE"), None);
        assert_eq!(app.children_of("APPADDR").count(), 1);
    }

    #[test]
    fn structure_errors() {
        let bad_root = el("wml", &[], vec![]);
        assert!(build(bad_root).unwrap_err().problem.contains("<wml>"));
        let parm_at_root = el(
            "wap-provisioningdoc",
            &[],
            vec![el("parm", &[("name", "X")], vec![])],
        );
        assert!(
            build(parm_at_root)
                .unwrap_err()
                .problem
                .contains("not allowed inside <wap-provisioningdoc>")
        );
        let untyped = el(
            "wap-provisioningdoc",
            &[],
            vec![el("characteristic", &[], vec![])],
        );
        assert!(build(untyped).unwrap_err().problem.contains("no type"));
        let nameless = el(
            "wap-provisioningdoc",
            &[],
            vec![el(
                "characteristic",
                &[("type", "T")],
                vec![el("parm", &[], vec![])],
            )],
        );
        assert!(build(nameless).unwrap_err().problem.contains("no name"));
    }

    #[test]
    fn text_locations() {
        let text = "ab\ncdé\nf";
        assert_eq!(
            Location::in_text(text, 0),
            Location::Text { line: 1, column: 1 }
        );
        assert_eq!(
            Location::in_text(text, 3),
            Location::Text { line: 2, column: 1 }
        );
        // After "cdé" (é is two bytes): column 4.
        assert_eq!(
            Location::in_text(text, 7),
            Location::Text { line: 2, column: 4 }
        );
        assert_eq!(Location::Byte(28).to_string(), "byte offset 28 (0x1c)");
    }
}
