//! The XML reader for provisioning documents (`text/vnd.wap.connectivity-xml`).
//!
//! quick-xml tokenises; this module keeps the element stack, enforces the depth limit
//! and hands the element tree to [`tree::build`](super::tree) for the PROV checks.
//!
//! Entities: only the five predefined entities and character references are expanded
//! (in attribute values). A DOCTYPE is accepted and its external DTD is never fetched;
//! a DOCTYPE whose internal subset declares entities (`<!ENTITY`) is rejected, so no
//! document can expand to more than its own size. Other declarations of an internal
//! subset (attribute defaults included) are ignored: the tree is what the document says. PROV elements hold no text, so text
//! other than whitespace (entity references included) is an error.
//!
//! Input must be UTF-8 (an optional byte-order mark is skipped); a declaration naming
//! another encoding is rejected rather than misread.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::tree::{self, DocError, Element, Location, MAX_ATTRS, MAX_DEPTH, MAX_NODES, ProvDoc};

/// Parses an XML provisioning document. Malformed input gives an error naming the line
/// and column; nothing panics.
pub fn parse(input: &[u8]) -> Result<ProvDoc, DocError> {
    let root = parse_elements(input)?;
    tree::build(root).map_err(|mut err| {
        // Elements carry byte offsets (turning each into a line and column as it is
        // read would cost O(n^2)); an error found in the tree is placed here.
        if let (Location::Byte(offset), Ok(text)) = (err.at, std::str::from_utf8(input)) {
            err.at = Location::in_text(text, offset);
        }
        err
    })
}

/// Reads the element tree, without the PROV checks. Errors name a line and column;
/// the elements' own locations are byte offsets into `input`.
fn parse_elements(input: &[u8]) -> Result<Element, DocError> {
    const BOM: &str = "\u{feff}";
    let whole = match std::str::from_utf8(input) {
        Ok(text) => text,
        Err(err) => {
            let valid = &input[..err.valid_up_to()];
            // `valid` is valid UTF-8 by construction; fall back to an empty prefix anyway.
            let prefix = std::str::from_utf8(valid).unwrap_or("");
            return Err(DocError::new(
                Location::in_text(prefix, prefix.len()),
                "the document is not valid UTF-8 (only UTF-8 is accepted)",
            ));
        }
    };
    let skipped = if whole.starts_with(BOM) { BOM.len() } else { 0 };
    Parser {
        whole,
        skipped,
        reader: Reader::from_str(&whole[skipped..]),
        stack: Vec::new(),
        root: None,
        seen_doctype: false,
        nodes: 0,
    }
    .run()
}

struct Parser<'a> {
    whole: &'a str,
    /// Bytes before what the reader sees (a byte-order mark).
    skipped: usize,
    reader: Reader<&'a [u8]>,
    stack: Vec<Element>,
    root: Option<Element>,
    seen_doctype: bool,
    /// Elements and attributes read so far.
    nodes: usize,
}

impl<'a> Parser<'a> {
    fn run(mut self) -> Result<Element, DocError> {
        {
            let config = self.reader.config_mut();
            config.check_end_names = true;
            config.check_comments = true;
            config.expand_empty_elements = false;
            config.trim_text(false);
        }
        loop {
            let start = self.position();
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(err) => {
                    let at = self.location(self.reader.error_position());
                    return Err(DocError::new(at, err.to_string()));
                }
            };
            match event {
                Event::Decl(decl) => {
                    if let Some(encoding) = decl.encoding() {
                        let encoding = encoding
                            .map_err(|err| DocError::new(self.location(start), err.to_string()))?;
                        let name = String::from_utf8_lossy(&encoding).to_ascii_lowercase();
                        if !matches!(name.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii") {
                            return Err(DocError::new(
                                self.location(start),
                                format!("encoding {name:?} is not supported (use UTF-8)"),
                            ));
                        }
                    }
                }
                Event::DocType(doctype) => {
                    if self.seen_doctype || self.root.is_some() || !self.stack.is_empty() {
                        return Err(DocError::new(
                            self.location(start),
                            "a DOCTYPE may only appear once, before the root element",
                        ));
                    }
                    self.seen_doctype = true;
                    if doctype.windows(8).any(|w| w == b"<!ENTITY") {
                        return Err(DocError::new(
                            self.location(start),
                            "entity declarations in the DOCTYPE are not supported",
                        ));
                    }
                }
                Event::Start(tag) => {
                    let element = self.element(&tag, start)?;
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(DocError::new(
                            self.location(start),
                            format!("elements are nested deeper than {MAX_DEPTH} levels"),
                        ));
                    }
                    self.stack.push(element);
                }
                Event::Empty(tag) => {
                    let element = self.element(&tag, start)?;
                    self.attach(element, start)?;
                }
                Event::End(_) => {
                    // quick-xml has checked that the name matches the open element.
                    let Some(element) = self.stack.pop() else {
                        return Err(DocError::new(
                            self.location(start),
                            "end tag without a start tag",
                        ));
                    };
                    self.attach(element, start)?;
                }
                Event::Text(text) => {
                    if !text
                        .iter()
                        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    {
                        return Err(self.text_error(start));
                    }
                }
                Event::CData(data) => {
                    if !data.is_empty() {
                        return Err(self.text_error(start));
                    }
                }
                Event::GeneralRef(_) => return Err(self.text_error(start)),
                Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = self.stack.last() {
            return Err(DocError::new(
                self.location(self.whole.len() - self.skipped),
                format!("the document ends inside <{}>", open.name),
            ));
        }
        let end = self.location(self.whole.len() - self.skipped);
        self.root
            .ok_or_else(|| DocError::new(end, "the document has no root element"))
    }

    /// Reader offset of the next event.
    fn position(&self) -> usize {
        usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    fn location(&self, offset: impl TryInto<usize>) -> Location {
        let offset = offset.try_into().unwrap_or(usize::MAX);
        Location::in_text(self.whole, offset.saturating_add(self.skipped))
    }

    fn text_error(&self, start: usize) -> DocError {
        let inside = self.stack.last().map_or_else(
            || "outside the root element".to_owned(),
            |e| format!("inside <{}>", e.name),
        );
        DocError::new(
            self.location(start),
            format!("text is not allowed {inside}"),
        )
    }

    fn element(&mut self, tag: &BytesStart<'_>, start: usize) -> Result<Element, DocError> {
        let offset = start.saturating_add(self.skipped);
        let at = Location::Byte(offset);
        let result = self.read_element(tag, at);
        // Only a failure pays for the line and column.
        result.map_err(|mut err| {
            err.at = self.location(start);
            err
        })
    }

    fn read_element(&mut self, tag: &BytesStart<'_>, at: Location) -> Result<Element, DocError> {
        // Counted without quick-xml's duplicate checks, which cost O(n^2).
        let attr_count = tag.attributes().with_checks(false).count();
        if attr_count > MAX_ATTRS {
            return Err(DocError::new(
                at,
                format!("more than {MAX_ATTRS} attributes"),
            ));
        }
        self.nodes += 1 + attr_count;
        if self.nodes > MAX_NODES {
            return Err(DocError::new(
                at,
                format!("more than {MAX_NODES} elements and attributes"),
            ));
        }
        let name = std::str::from_utf8(tag.name().as_ref())
            .map_err(|_| DocError::new(at, "element name is not UTF-8"))?
            .to_owned();
        let mut attrs = Vec::new();
        for attr in tag.attributes().with_checks(true) {
            let attr = attr.map_err(|err| {
                DocError::new(at, format!("malformed attribute in <{name}>: {err}"))
            })?;
            let key = std::str::from_utf8(attr.key.as_ref())
                .map_err(|_| DocError::new(at, "attribute name is not UTF-8"))?
                .to_owned();
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| {
                    DocError::new(
                        at,
                        format!("attribute {key} of <{name}>: {err} (only &lt; &gt; &amp; &apos; &quot; and character references are expanded)"),
                    )
                })?
                .into_owned();
            attrs.push((key, value));
        }
        Ok(Element {
            name,
            attrs,
            children: Vec::new(),
            at,
        })
    }

    /// Adds a finished element to its parent, or makes it the root.
    fn attach(&mut self, element: Element, start: usize) -> Result<(), DocError> {
        if let Some(parent) = self.stack.last_mut() {
            parent.children.push(element);
            return Ok(());
        }
        if self.root.is_some() {
            return Err(DocError::new(
                self.location(start),
                format!("<{}> follows the root element", element.name),
            ));
        }
        self.root = Some(element);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn err(input: &str) -> DocError {
        parse(input.as_bytes()).unwrap_err()
    }

    #[test]
    fn minimal_document() {
        let doc = parse(
            br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE wap-provisioningdoc PUBLIC "-//WAPFORUM//DTD PROV 1.0//EN" "http://www.wapforum.org/DTD/prov.dtd">
<wap-provisioningdoc version="1.0"><!-- c --><?pi x?>
  <characteristic type="A"><parm name="N" value="a &amp; b &#x41;&#10;c
d"/><parm name="E"></parm></characteristic>
</wap-provisioningdoc>
"#,
        )
        .unwrap();
        assert_eq!(doc.version.as_deref(), Some("1.0"));
        let c = &doc.characteristics[0];
        assert_eq!(c.type_, "A");
        // Character references keep their newline; a literal newline becomes a space.
        assert_eq!(c.parms[0].value.as_deref(), Some("a & b A\nc d"));
        assert_eq!(c.parms[1].value, None);
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        let mut input = "\u{feff}".as_bytes().to_vec();
        input.extend_from_slice(b"<wap-provisioningdoc>\n<x/></wap-provisioningdoc>");
        let e = parse(&input).unwrap_err();
        assert_eq!(e.at, Location::Text { line: 2, column: 1 });
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = err("<wap-provisioningdoc>\n  <characteristic type=\"A\">\n    <parm name=\"X\"\n");
        assert!(matches!(e.at, Location::Text { line: 3, column: 5 }), "{e}");
        let e = err("<wap-provisioningdoc>\n</characteristic>");
        assert!(matches!(e.at, Location::Text { line: 2, .. }), "{e}");
        let e = err("<wap-provisioningdoc>\n  <characteristic type=\"A\">\n");
        assert!(e.problem.contains("ends inside <characteristic>"), "{e}");
        let e = err("<wap-provisioningdoc>\n  hello\n</wap-provisioningdoc>");
        assert!(e.problem.contains("text is not allowed"), "{e}");
        assert_eq!(
            e.at,
            Location::Text {
                line: 1,
                column: 22
            }
        );
        let e = err("<wap-provisioningdoc/><wap-provisioningdoc/>");
        assert!(e.problem.contains("follows the root"), "{e}");
        let e = err("");
        assert!(e.problem.contains("no root element"), "{e}");
        let e =
            err("<wap-provisioningdoc><characteristic type='A' type='B'/></wap-provisioningdoc>");
        assert!(e.problem.contains("malformed attribute"), "{e}");
        let e = parse(b"<wap-provisioningdoc>\xff</wap-provisioningdoc>").unwrap_err();
        assert!(e.problem.contains("UTF-8"), "{e}");
        let e = err("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><wap-provisioningdoc/>");
        assert!(e.problem.contains("not supported"), "{e}");
    }

    #[test]
    fn entities_are_bounded() {
        // A billion-laughs style document is refused at the declaration.
        let e = err(r#"<!DOCTYPE wap-provisioningdoc [
<!ENTITY a "aaaaaaaaaa">
<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
]>
<wap-provisioningdoc><characteristic type="&b;"/></wap-provisioningdoc>"#);
        assert!(e.problem.contains("entity declarations"), "{e}");
        assert_eq!(e.at, Location::Text { line: 1, column: 1 });
        // An undeclared entity is an error, not an empty string.
        let e = err(r#"<wap-provisioningdoc><characteristic type="&x;"/></wap-provisioningdoc>"#);
        assert!(e.problem.contains("attribute type"), "{e}");
        // External entities are never fetched: a SYSTEM DOCTYPE is just accepted.
        parse(
            br#"<!DOCTYPE wap-provisioningdoc SYSTEM "file:///etc/passwd"><wap-provisioningdoc/>"#,
        )
        .unwrap();
        // Entity references in text are text, which PROV does not allow.
        let e = err("<wap-provisioningdoc>&amp;</wap-provisioningdoc>");
        assert!(e.problem.contains("text"), "{e}");
    }

    #[test]
    fn node_count_is_bounded() {
        let mut doc = String::from("<wap-provisioningdoc><characteristic type=\"X\">");
        for _ in 0..60_000 {
            doc.push_str("<parm name=\"N\"/>");
        }
        let e = err(&doc);
        assert!(e.problem.contains("more than 100000"), "{e}");
    }

    #[test]
    fn attributes_per_element_are_bounded() {
        let attrs: String = (0..17).map(|i| format!(" a{i}=\"\"")).collect();
        let e = err(&format!("<wap-provisioningdoc{attrs}/>"));
        assert!(e.problem.contains("more than 16 attributes"), "{e}");
    }

    #[test]
    fn depth_is_bounded() {
        let mut doc = String::from("<wap-provisioningdoc>");
        for _ in 0..100 {
            doc.push_str("<characteristic type=\"X\">");
        }
        let e = err(&doc);
        assert!(e.problem.contains("nested deeper"), "{e}");
    }
}
