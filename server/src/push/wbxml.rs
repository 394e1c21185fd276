//! A WBXML 1.1-1.3 decoder for provisioning documents
//! (`application/vnd.wap.connectivity-wbxml`), with the PROV token tables.
//!
//! Handled: the header (version, public id as a multi-byte integer or as a string-table
//! reference, charset, string table), `SWITCH_PAGE` for tag and attribute code pages
//! (kept apart, as WBXML requires), `END`, `STR_I`, `STR_T`, `ENTITY`, `OPAQUE`, `PI`
//! (skipped), the `LITERAL` tag and attribute forms, the content and attribute flags,
//! attribute start tokens with their value prefixes and attribute value tokens.
//! `EXT_*` tokens have no meaning in PROV and are refused.
//!
//! Every failure names its byte offset. Nothing panics, integers are bounded to 32
//! bits, string-table references are bounds-checked, nesting is bounded by
//! [`MAX_DEPTH`] and the text that string-table references can repeat is bounded by
//! [`MAX_TEXT`], so a small document cannot expand into a large one.

use super::prov_tokens;
use super::tree::{self, DocError, Element, Location, MAX_ATTRS, MAX_DEPTH, MAX_NODES, ProvDoc};

/// Most bytes of text (names and values, after string-table references are followed)
/// that one document may decode to.
pub const MAX_TEXT: usize = 4 << 20;

/// Public identifier of PROV 1.0 ("-//WAPFORUM//DTD PROV 1.0//EN").
pub const PUBLIC_ID_PROV: u32 = 0x0B;

const SWITCH_PAGE: u8 = 0x00;
const END: u8 = 0x01;
const ENTITY: u8 = 0x02;
const STR_I: u8 = 0x03;
const LITERAL: u8 = 0x04;
const EXT_I_0: u8 = 0x40;
const EXT_I_2: u8 = 0x42;
const PI: u8 = 0x43;
const LITERAL_C: u8 = 0x44;
const EXT_T_0: u8 = 0x80;
const EXT_T_2: u8 = 0x82;
const STR_T: u8 = 0x83;
const LITERAL_A: u8 = 0x84;
const EXT_0: u8 = 0xC0;
const EXT_2: u8 = 0xC2;
const OPAQUE: u8 = 0xC3;
const LITERAL_AC: u8 = 0xC4;

/// IANA MIBenum values of the accepted charsets.
const CHARSET_UNKNOWN: u32 = 0;
const CHARSET_US_ASCII: u32 = 3;
const CHARSET_ISO_8859_1: u32 = 4;
const CHARSET_UTF_8: u32 = 106;

/// Decodes a WBXML provisioning document.
pub fn parse(input: &[u8]) -> Result<ProvDoc, DocError> {
    let root = parse_elements(input)?;
    tree::build(root)
}

/// Decodes the element tree, without the PROV checks.
pub(crate) fn parse_elements(input: &[u8]) -> Result<Element, DocError> {
    let mut decoder = Decoder {
        input,
        pos: 0,
        strtab: &[],
        strtab_start: 0,
        charset: Charset::Utf8,
        tag_page: 0,
        attr_page: 0,
        text_budget: MAX_TEXT,
        nodes: 0,
    };
    decoder.header()?;
    decoder.body()
}

#[derive(Debug, Clone, Copy)]
enum Charset {
    Utf8,
    Ascii,
    Latin1,
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    strtab: &'a [u8],
    strtab_start: usize,
    charset: Charset,
    tag_page: u8,
    attr_page: u8,
    text_budget: usize,
    /// Elements and attributes decoded so far.
    nodes: usize,
}

fn err(offset: usize, problem: impl Into<String>) -> DocError {
    DocError::new(Location::Byte(offset), problem)
}

impl<'a> Decoder<'a> {
    // --- primitives -----------------------------------------------------------------

    fn peek(&self) -> Result<u8, DocError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| err(self.pos, "unexpected end of the document"))
    }

    fn byte(&mut self) -> Result<u8, DocError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// A multi-byte unsigned integer: 7 bits per byte, most significant first, the high
    /// bit set on every byte but the last. At most 32 bits.
    fn mb_u_int32(&mut self) -> Result<u32, DocError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for _ in 0..5 {
            let b = self.byte()?;
            value = (value << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                return u32::try_from(value)
                    .map_err(|_| err(start, "multi-byte integer overflows 32 bits"));
            }
        }
        Err(err(start, "multi-byte integer longer than 5 bytes"))
    }

    fn mb_usize(&mut self) -> Result<usize, DocError> {
        let start = self.pos;
        let value = self.mb_u_int32()?;
        usize::try_from(value).map_err(|_| err(start, "integer too large"))
    }

    /// Bytes up to (not including) a NUL terminator, which is consumed.
    fn inline_bytes(&mut self) -> Result<&'a [u8], DocError> {
        let start = self.pos;
        let rest = &self.input[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(err(start, "inline string without its terminating NUL"));
        };
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    /// The NUL-terminated string at `index` in the string table.
    fn table_bytes(&self, index: usize, at: usize) -> Result<&'a [u8], DocError> {
        let Some(rest) = self.strtab.get(index..).filter(|r| !r.is_empty()) else {
            return Err(err(
                at,
                format!(
                    "string table reference {index} is outside the {}-byte string table",
                    self.strtab.len()
                ),
            ));
        };
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(err(
                at,
                format!("string table entry {index} has no terminating NUL"),
            ));
        };
        Ok(&rest[..len])
    }

    /// Decodes text in the document charset, charging it to the text budget.
    fn text(&mut self, bytes: &[u8], at: usize) -> Result<String, DocError> {
        if bytes.len() > self.text_budget {
            return Err(err(
                at,
                format!("the document decodes to more than {MAX_TEXT} bytes of text"),
            ));
        }
        self.text_budget -= bytes.len();
        match self.charset {
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| err(at, format!("string is not valid UTF-8 ({e})"))),
            Charset::Ascii => {
                if bytes.is_ascii() {
                    Ok(bytes.iter().map(|&b| char::from(b)).collect())
                } else {
                    Err(err(at, "string is not US-ASCII"))
                }
            }
            Charset::Latin1 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        }
    }

    fn charge(&mut self, len: usize, at: usize) -> Result<(), DocError> {
        self.text_budget = self.text_budget.checked_sub(len).ok_or_else(|| {
            err(
                at,
                format!("the document decodes to more than {MAX_TEXT} bytes of text"),
            )
        })?;
        Ok(())
    }

    fn count_node(&mut self, at: usize) -> Result<(), DocError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(
                at,
                format!("more than {MAX_NODES} elements and attributes"),
            ));
        }
        Ok(())
    }

    fn entity(&mut self) -> Result<char, DocError> {
        let at = self.pos;
        let code = self.mb_u_int32()?;
        self.charge(4, at)?;
        char::from_u32(code).ok_or_else(|| err(at, format!("ENTITY {code:#x} is not a character")))
    }

    fn opaque(&mut self) -> Result<&'a [u8], DocError> {
        let at = self.pos;
        let len = self.mb_usize()?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.input.len());
        let Some(end) = end else {
            return Err(err(at, format!("OPAQUE of {len} bytes runs past the end")));
        };
        let data = &self.input[self.pos..end];
        self.pos = end;
        Ok(data)
    }

    // --- header ---------------------------------------------------------------------

    fn header(&mut self) -> Result<(), DocError> {
        let version = self.byte()?;
        if !(0x01..=0x03).contains(&version) {
            return Err(err(
                0,
                format!(
                    "WBXML version {}.{} is not supported (1.1 to 1.3)",
                    (version >> 4) + 1,
                    version & 0x0F
                ),
            ));
        }
        let public_id_at = self.pos;
        let public_id = self.mb_u_int32()?;
        let public_id_index = if public_id == 0 {
            Some(self.mb_usize()?)
        } else {
            None
        };
        let charset_at = self.pos;
        self.charset = match self.mb_u_int32()? {
            CHARSET_UTF_8 | CHARSET_UNKNOWN => Charset::Utf8,
            CHARSET_US_ASCII => Charset::Ascii,
            CHARSET_ISO_8859_1 => Charset::Latin1,
            other => {
                return Err(err(
                    charset_at,
                    format!(
                        "charset MIBenum {other} is not supported (UTF-8, US-ASCII, ISO-8859-1)"
                    ),
                ));
            }
        };
        let length_at = self.pos;
        let length = self.mb_usize()?;
        let end = self
            .pos
            .checked_add(length)
            .filter(|&e| e <= self.input.len());
        let Some(end) = end else {
            return Err(err(
                length_at,
                format!("string table of {length} bytes runs past the end"),
            ));
        };
        self.strtab_start = self.pos;
        self.strtab = &self.input[self.pos..end];
        self.pos = end;

        match (public_id, public_id_index) {
            (PUBLIC_ID_PROV, _) | (0x01, _) => Ok(()),
            (0, Some(index)) => {
                let name = self.table_bytes(index, public_id_at)?;
                if name.starts_with(b"-//WAPFORUM//DTD PROV ") {
                    Ok(())
                } else {
                    Err(err(
                        public_id_at,
                        format!(
                            "public id {:?} is not a provisioning document",
                            String::from_utf8_lossy(name)
                        ),
                    ))
                }
            }
            (other, _) => Err(err(
                public_id_at,
                format!(
                    "public id {other:#x} is not a provisioning document (PROV is {PUBLIC_ID_PROV:#x})"
                ),
            )),
        }
    }

    // --- body -----------------------------------------------------------------------

    fn body(&mut self) -> Result<Element, DocError> {
        self.skip_pis()?;
        let root = self.element(1)?;
        self.skip_pis()?;
        if self.pos != self.input.len() {
            return Err(err(
                self.pos,
                format!(
                    "{} bytes follow the root element",
                    self.input.len() - self.pos
                ),
            ));
        }
        Ok(root)
    }

    fn skip_pis(&mut self) -> Result<(), DocError> {
        while self.input.get(self.pos) == Some(&PI) {
            self.pos += 1;
            self.pi()?;
        }
        Ok(())
    }

    /// A processing instruction after its `PI` token: a target and value, then `END`.
    fn pi(&mut self) -> Result<(), DocError> {
        self.attributes(true).map(drop)
    }

    fn element(&mut self, depth: usize) -> Result<Element, DocError> {
        let mut at = self.pos;
        let mut token = self.byte()?;
        while token == SWITCH_PAGE {
            self.tag_page = self.byte()?;
            at = self.pos;
            token = self.byte()?;
        }
        if depth > MAX_DEPTH {
            return Err(err(
                at,
                format!("elements are nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.count_node(at)?;
        let name = match token {
            LITERAL | LITERAL_C | LITERAL_A | LITERAL_AC => {
                let index_at = self.pos;
                let index = self.mb_usize()?;
                let bytes = self.table_bytes(index, index_at)?;
                self.text(bytes, index_at)?
            }
            _ if token & 0x3F < 0x05 => {
                return Err(err(
                    at,
                    format!("expected a tag, found the global token {token:#04x}"),
                ));
            }
            _ => match prov_tokens::tag(self.tag_page, token & 0x3F) {
                Some(name) => name.to_owned(),
                None => {
                    return Err(err(
                        at,
                        format!(
                            "unknown tag token {:#04x} on code page {}",
                            token & 0x3F,
                            self.tag_page
                        ),
                    ));
                }
            },
        };
        let attrs = if token & 0x80 != 0 {
            self.attributes(false)?
        } else {
            Vec::new()
        };
        let mut element = Element {
            name,
            attrs,
            children: Vec::new(),
            at: Location::Byte(at),
        };
        if token & 0x40 != 0 {
            self.content(&mut element, depth)?;
        }
        Ok(element)
    }

    /// Element content up to and including its `END`. PROV elements hold only elements;
    /// whitespace text is tolerated, other text is an error.
    fn content(&mut self, element: &mut Element, depth: usize) -> Result<(), DocError> {
        loop {
            let at = self.pos;
            match self.peek()? {
                END => {
                    self.pos += 1;
                    return Ok(());
                }
                STR_I => {
                    self.pos += 1;
                    let bytes = self.inline_bytes()?;
                    let text = self.text(bytes, at)?;
                    self.whitespace_only(&text, element, at)?;
                }
                STR_T => {
                    self.pos += 1;
                    let index_at = self.pos;
                    let index = self.mb_usize()?;
                    let bytes = self.table_bytes(index, index_at)?;
                    let text = self.text(bytes, at)?;
                    self.whitespace_only(&text, element, at)?;
                }
                ENTITY => {
                    self.pos += 1;
                    let c = self.entity()?;
                    self.whitespace_only(&c.to_string(), element, at)?;
                }
                OPAQUE => {
                    self.pos += 1;
                    if !self.opaque()?.is_empty() {
                        return Err(err(
                            at,
                            format!("opaque data is not allowed inside <{}>", element.name),
                        ));
                    }
                }
                PI => {
                    self.pos += 1;
                    self.pi()?;
                }
                EXT_I_0..=EXT_I_2 | EXT_T_0..=EXT_T_2 | EXT_0..=EXT_2 => {
                    return Err(err(at, "extension tokens are not defined for PROV"));
                }
                _ => {
                    let child = self.element(depth + 1)?;
                    element.children.push(child);
                }
            }
        }
    }

    fn whitespace_only(&self, text: &str, element: &Element, at: usize) -> Result<(), DocError> {
        if text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
            Ok(())
        } else {
            Err(err(
                at,
                format!("text is not allowed inside <{}>", element.name),
            ))
        }
    }

    /// An attribute list up to and including its `END` (or, for a PI, its one target).
    fn attributes(&mut self, pi: bool) -> Result<Vec<(String, String)>, DocError> {
        let mut attrs: Vec<(String, String)> = Vec::new();
        let mut current: Option<(String, String, usize)> = None;
        loop {
            let at = self.pos;
            let token = self.byte()?;
            match token {
                END => {
                    finish(&mut attrs, current.take())?;
                    if attrs.is_empty() {
                        return Err(err(at, "empty attribute list"));
                    }
                    return Ok(attrs);
                }
                SWITCH_PAGE => self.attr_page = self.byte()?,
                LITERAL => {
                    self.count_node(at)?;
                    finish(&mut attrs, current.take())?;
                    let index_at = self.pos;
                    let index = self.mb_usize()?;
                    let bytes = self.table_bytes(index, index_at)?;
                    let name = self.text(bytes, index_at)?;
                    current = Some((name, String::new(), at));
                }
                STR_I => {
                    let bytes = self.inline_bytes()?;
                    let text = self.text(bytes, at)?;
                    value_of(&mut current, at)?.push_str(&text);
                }
                STR_T => {
                    let index_at = self.pos;
                    let index = self.mb_usize()?;
                    let bytes = self.table_bytes(index, index_at)?;
                    let text = self.text(bytes, at)?;
                    value_of(&mut current, at)?.push_str(&text);
                }
                ENTITY => {
                    let c = self.entity()?;
                    value_of(&mut current, at)?.push(c);
                }
                OPAQUE => {
                    let bytes = self.opaque()?;
                    let text = self.text(bytes, at)?;
                    value_of(&mut current, at)?.push_str(&text);
                }
                EXT_I_0..=EXT_I_2 | EXT_T_0..=EXT_T_2 | EXT_0..=EXT_2 => {
                    return Err(err(at, "extension tokens are not defined for PROV"));
                }
                PI | LITERAL_C | LITERAL_A | LITERAL_AC => {
                    return Err(err(
                        at,
                        format!("token {token:#04x} is not allowed in an attribute list"),
                    ));
                }
                _ if token < 0x80 => {
                    if pi && (current.is_some() || !attrs.is_empty()) {
                        return Err(err(at, "a processing instruction has one target"));
                    }
                    let Some((name, prefix)) = prov_tokens::attr_start(self.attr_page, token)
                    else {
                        return Err(err(
                            at,
                            format!(
                                "unknown attribute start token {token:#04x} on code page {}",
                                self.attr_page
                            ),
                        ));
                    };
                    self.count_node(at)?;
                    finish(&mut attrs, current.take())?;
                    self.charge(name.len() + prefix.len(), at)?;
                    current = Some((name.to_owned(), prefix.to_owned(), at));
                }
                _ => {
                    let Some(text) = prov_tokens::attr_value(self.attr_page, token) else {
                        return Err(err(
                            at,
                            format!(
                                "unknown attribute value token {token:#04x} on code page {}",
                                self.attr_page
                            ),
                        ));
                    };
                    self.charge(text.len(), at)?;
                    value_of(&mut current, at)?.push_str(text);
                }
            }
        }
    }
}

fn value_of(
    current: &mut Option<(String, String, usize)>,
    at: usize,
) -> Result<&mut String, DocError> {
    match current {
        Some((_, value, _)) => Ok(value),
        None => Err(err(at, "attribute value before any attribute start")),
    }
}

fn finish(
    attrs: &mut Vec<(String, String)>,
    current: Option<(String, String, usize)>,
) -> Result<(), DocError> {
    if let Some((name, value, at)) = current {
        if attrs.len() >= MAX_ATTRS {
            return Err(err(at, format!("more than {MAX_ATTRS} attributes")));
        }
        if attrs.iter().any(|(n, _)| *n == name) {
            return Err(err(at, format!("duplicate attribute {name}")));
        }
        attrs.push((name, value));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use crate::push::xml;

    /// A document written the way a different encoder would: WBXML 1.2, the public id
    /// as a string-table reference, repeated strings in the string table (STR_T),
    /// LITERAL tags and attribute names, tag and attribute SWITCH_PAGE to page 1,
    /// a string split over STR_T + STR_I, ENTITY and OPAQUE in a value, and a PI.
    const HAND_ASSEMBLED: &[u8] = &[
        0x02, // WBXML 1.2
        0x00, 0x00, // public id 0: literal, at string table index 0
        0x6A, // charset 106: UTF-8
        0x46, // string table: 70 bytes
        // 0: "-//WAPFORUM//DTD PROV 1.0//EN\0" (30 bytes)
        b'-', b'/', b'/', b'W', b'A', b'P', b'F', b'O', b'R', b'U', b'M', b'/', b'/', b'D', b'T',
        b'D', b' ', b'P', b'R', b'O', b'V', b' ', b'1', b'.', b'0', b'/', b'/', b'E', b'N', 0,
        // 30: "characteristic\0" (15 bytes)
        b'c', b'h', b'a', b'r', b'a', b'c', b't', b'e', b'r', b'i', b's', b't', b'i', b'c', 0,
        // 45: "ppg.example\0" (12 bytes)
        b'p', b'p', b'g', b'.', b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0,
        // 57: "1.\0" (3 bytes)
        b'1', b'.', 0, // 60: "parm\0" (5 bytes)
        b'p', b'a', b'r', b'm', 0, // 65: "name\0" (5 bytes)
        b'n', b'a', b'm', b'e', 0, // --- body
        0x43, 0x05, 0x03, b'x', 0x00, 0x01, // PI: target name="x", END
        0xC5, // wap-provisioningdoc, attributes + content
        0x45, 0x83, 57, 0x03, b'1', 0x00, // version= STR_T "1." STR_I "1"
        0x01, // END of attributes
        0xC4, 30,   // LITERAL_AC "characteristic"
        0x51, // type="PXLOGICAL"
        0x01, // END of attributes
        0x87, 0x15, 0x06, 0x83, 45, 0x01, // parm name=PROXY-ID value=STR_T "ppg.example"
        0xC6, 0x52, 0x01, // characteristic type=PXPHYSICAL
        0x87, 0x20, 0x06, // parm name=PXADDR value=
        0x03, b'1', b'9', b'2', b'.', 0x00, // STR_I "192."
        0x02, 0x30, // ENTITY '0'
        0xC3, 0x04, b'.', b'2', b'.', b'1', // OPAQUE ".2.1"
        0x01, // END of attributes
        0x87, 0x21, 0x06, 0x85, 0x01, // parm name=PXADDRTYPE value=IPV4
        0x01, // END characteristic PXPHYSICAL
        0x01, // END characteristic PXLOGICAL
        0x00, 0x01, // SWITCH_PAGE 1 (tags)
        0xC6, // characteristic (tag page 1), attributes + content
        0x00, 0x01, 0x55, // SWITCH_PAGE 1 (attributes), type=APPLICATION
        0x01, // END of attributes
        0x87, 0x36, 0x06, 0x03, b'w', b'4', 0x00, 0x01, // parm name=APPID value="w4"
        0x87, 0x39, 0x06, 0x83, 45, 0x01, // parm name=TO-PROXY value=STR_T "ppg.example"
        0x84, 60, // LITERAL_A "parm"
        0x04, 65, 0x03, b'A', b'D', b'D', b'R',
        0x00, // LITERAL attribute "name", STR_I "ADDR"
        0x06, 0x03, b's', b'i', b'p', b':', b'p', b'p', b'g', b'@', 0x00, // value= "sip:ppg@"
        0x83, 45,   // STR_T "ppg.example"
        0x01, // END of attributes
        0x01, // END characteristic APPLICATION
        0x01, // END wap-provisioningdoc
    ];

    const HAND_ASSEMBLED_XML: &str = r#"<?xml version="1.0"?>
<wap-provisioningdoc version="1.1">
  <characteristic type="PXLOGICAL">
    <parm name="PROXY-ID" value="ppg.example"/>
    <characteristic type="PXPHYSICAL">
      <parm name="PXADDR" value="192.0.2.1"/>
      <parm name="PXADDRTYPE" value="IPV4"/>
    </characteristic>
  </characteristic>
  <characteristic type="APPLICATION">
    <parm name="APPID" value="w4"/>
    <parm name="TO-PROXY" value="ppg.example"/>
    <parm name="ADDR" value="sip:ppg@ppg.example"/>
  </characteristic>
</wap-provisioningdoc>
"#;

    #[test]
    fn hand_assembled_document_matches_its_xml() {
        let from_wbxml = parse(HAND_ASSEMBLED).unwrap();
        let from_xml = xml::parse(HAND_ASSEMBLED_XML.as_bytes()).unwrap();
        assert_eq!(from_wbxml, from_xml);
        assert_eq!(from_wbxml.version.as_deref(), Some("1.1"));
        assert_eq!(
            from_wbxml.characteristics[1].value("ADDR"),
            Some("sip:ppg@ppg.example")
        );
    }

    #[test]
    fn plain_literal_tags() {
        // Table: "wap-provisioningdoc\0characteristic\0"; LITERAL_C root, LITERAL child.
        let mut v = vec![0x03, 0x0B, 0x6A, 35];
        v.extend_from_slice(b"wap-provisioningdoc\0characteristic\0");
        v.extend([0x44, 0x00, 0x04, 20, 0x01]);
        let root = parse_elements(&v).unwrap();
        assert_eq!(root.name, "wap-provisioningdoc");
        assert_eq!(root.children[0].name, "characteristic");
        // A characteristic without a type fails the PROV check, as it would in XML.
        assert!(parse(&v).unwrap_err().problem.contains("no type"));
    }

    fn offset_of(input: &[u8]) -> (usize, String) {
        match parse(input) {
            Err(DocError {
                at: Location::Byte(offset),
                problem,
            }) => (offset, problem),
            other => panic!("expected a byte-offset error, got {other:?}"),
        }
    }

    const HEADER: [u8; 4] = [0x03, 0x0B, 0x6A, 0x00];

    fn doc(body: &[u8]) -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn malformed_documents_name_their_offset() {
        let cases: &[(&[u8], usize, &str)] = &[
            (&[], 0, "unexpected end"),
            (&[0x03, 0x0B], 2, "unexpected end"),
            (&[0x00, 0x0B, 0x6A, 0x00, 0x05], 0, "version 1.0"),
            (&[0x03, 0x0C, 0x6A, 0x00, 0x05], 1, "public id 0xc"),
            (
                &[0x03, 0x0B, 0x87, 0x77, 0x00, 0x05],
                2,
                "charset MIBenum 1015",
            ),
            // mb_u_int32 with six continuation bytes, and one that overflows 32 bits.
            (
                &[0x03, 0x0B, 0x6A, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
                3,
                "longer than 5",
            ),
            (
                &[0x03, 0x0B, 0x6A, 0x90, 0x80, 0x80, 0x80, 0x00],
                3,
                "overflows 32 bits",
            ),
            (
                &[0x03, 0x0B, 0x6A, 0x10, b'a', 0x00],
                3,
                "string table of 16 bytes",
            ),
            (
                &[0x03, 0x00, 0x09, 0x6A, 0x02, b'a', 0x00, 0x05],
                1,
                "reference 9 is outside",
            ),
        ];
        for (input, offset, problem) in cases {
            let (at, text) = offset_of(input);
            assert_eq!((at, text.contains(problem)), (*offset, true), "{text}");
        }
        let body_cases: &[(&[u8], usize, &str)] = &[
            // Truncated inside the attribute list.
            (&[0xC5, 0x45], 6, "unexpected end"),
            // STR_I without its NUL.
            (&[0xC5, 0x45, 0x03, b'1'], 7, "terminating NUL"),
            // STR_T into an empty string table.
            (
                &[0xC5, 0x45, 0x83, 0x00, 0x01, 0x01],
                7,
                "outside the 0-byte string table",
            ),
            // Unbalanced END: one END too many after the root.
            (&[0x45, 0x01, 0x01], 6, "bytes follow the root"),
            // An END where a tag should be.
            (&[0x01], 4, "expected a tag"),
            // Missing END: the root's content never closes.
            (&[0x45, 0xC6, 0x55, 0x01, 0x01], 9, "unexpected end"),
            // Unknown tokens.
            (&[0x08], 4, "unknown tag token 0x08 on code page 0"),
            (&[0x85, 0x7F, 0x01], 5, "unknown attribute start token 0x7f"),
            (
                &[0x85, 0x06, 0xF0, 0x01],
                6,
                "unknown attribute value token 0xf0",
            ),
            (&[0x00, 0x05, 0x05], 6, "code page 5"),
            // Values before any attribute, empty attribute lists, duplicates.
            (
                &[0x85, 0x03, b'x', 0x00, 0x01],
                5,
                "before any attribute start",
            ),
            (&[0x85, 0x01], 5, "empty attribute list"),
            (&[0x85, 0x45, 0x45, 0x01], 6, "duplicate attribute version"),
            // Extensions, bad entities, oversized OPAQUE, text content.
            (&[0x45, 0x40], 5, "extension tokens"),
            (
                &[0x85, 0x45, 0x02, 0x90, 0x80, 0x80, 0x80, 0x00, 0x01],
                7,
                "overflows",
            ),
            (
                &[0x85, 0x45, 0x02, 0x83, 0xB0, 0x00, 0x01],
                7,
                "not a character",
            ),
            (&[0x85, 0x45, 0xC3, 0x7F, 0x01], 7, "runs past the end"),
            (
                &[0x45, 0x03, b'h', b'i', 0x00, 0x01],
                5,
                "text is not allowed",
            ),
            (&[0x85, 0x45, 0x03, 0xFF, 0x00, 0x01], 6, "not valid UTF-8"),
        ];
        for (body, offset, problem) in body_cases {
            let (at, text) = offset_of(&doc(body));
            assert_eq!((at, text.contains(problem)), (*offset, true), "{text}");
        }
    }

    #[test]
    fn depth_bomb_is_refused_without_recursing_further() {
        // 100,000 nested characteristics with content and no attributes.
        let mut body = vec![0x45];
        body.extend(std::iter::repeat_n(0x46, 100_000));
        let (at, problem) = offset_of(&doc(&body));
        assert!(problem.contains("nested deeper than 32"), "{problem}");
        assert_eq!(at, 4 + MAX_DEPTH);
    }

    #[test]
    fn string_table_amplification_is_bounded() {
        // A 64 KiB string repeated through STR_T 100,000 times in one attribute value.
        let mut v = vec![0x03, 0x0B, 0x6A, 0x84, 0x80, 0x01]; // table length 65537
        v.extend(std::iter::repeat_n(b'a', 65_536));
        v.push(0);
        v.extend([0x85, 0x45]);
        for _ in 0..100_000 {
            v.extend([0x83, 0x00]);
        }
        v.push(0x01);
        let (_, problem) = offset_of(&v);
        assert!(problem.contains("more than"), "{problem}");
    }

    #[test]
    fn node_count_is_bounded() {
        // 200,000 empty parms (no attributes, no content) under the root.
        let mut body = vec![0x45];
        body.extend(std::iter::repeat_n(0x07, 200_000));
        body.push(0x01);
        let (at, problem) = offset_of(&doc(&body));
        assert!(problem.contains("more than 100000 elements"), "{problem}");
        assert_eq!(at, 4 + MAX_NODES);
        // Attributes count too: 40,000 parms with three attributes each.
        let mut body = vec![0x45];
        for _ in 0..40_000 {
            body.extend([0x87, 0x05, 0x06, 0x45, 0x01]);
        }
        let (_, problem) = offset_of(&doc(&body));
        assert!(problem.contains("elements and attributes"), "{problem}");
        // And one element holds at most MAX_ATTRS of them (LITERAL names, all distinct).
        let mut v = vec![0x03, 0x0B, 0x6A, 40];
        for i in 0..20u8 {
            v.extend([b'a' + i, 0]);
        }
        v.extend([0x85]);
        for i in 0..20u8 {
            v.extend([0x04, 2 * i]);
        }
        v.push(0x01);
        let (_, problem) = offset_of(&v);
        assert!(problem.contains("more than 16 attributes"), "{problem}");
    }

    #[test]
    fn charsets() {
        // ISO-8859-1: 0xE9 is é.
        let v = [
            0x03, 0x0B, 0x04, 0x00, 0xC5, 0x45, 0x03, 0xE9, 0x00, 0x01, 0x01,
        ];
        let root = parse_elements(&v).unwrap();
        assert_eq!(root.attrs, vec![("version".into(), "é".into())]);
        // US-ASCII refuses 8-bit bytes.
        let v = [
            0x03, 0x0B, 0x03, 0x00, 0xC5, 0x45, 0x03, 0xE9, 0x00, 0x01, 0x01,
        ];
        assert!(parse(&v).unwrap_err().problem.contains("US-ASCII"));
    }

    #[test]
    fn mutations_never_panic() {
        // A deterministic mutation run over the samples' shape: every outcome is either
        // a tree or an error with a byte offset inside (or just past) the input.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = HAND_ASSEMBLED.to_vec();
        for _ in 0..20_000 {
            let mut v = base.clone();
            let edits = 1 + next() % 4;
            for _ in 0..edits {
                let i = usize::try_from(next() % v.len() as u64).unwrap();
                match next() % 3 {
                    0 => v[i] = u8::try_from(next() % 256).unwrap(),
                    1 => {
                        v.truncate(i);
                        if v.is_empty() {
                            v.push(0);
                        }
                    }
                    _ => v.insert(i, u8::try_from(next() % 256).unwrap()),
                }
            }
            if let Err(DocError { at, .. }) = parse(&v) {
                match at {
                    Location::Byte(offset) => assert!(offset <= v.len()),
                    Location::Text { .. } => panic!("WBXML errors use byte offsets"),
                }
            }
        }
    }
}
