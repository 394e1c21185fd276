//! ENVELOPE, BODY / BODYSTRUCTURE and `BODY[section]` of a stored message (RFC 3501
//! sections 6.4.5 and 7.4.2), computed from its raw bytes.
//!
//! mail-parser finds the MIME tree: where each part's header and body start and end.
//! Everything the client sees is cut from the raw bytes at those offsets, so sections
//! are exact and sizes are octet counts of the stored message. Header values are
//! reported the way Dovecot reports them: unfolded but never decoded (encoded words
//! stay encoded; RFC 2231 continuations are joined, their `charset''value` form kept).
//!
//! Nothing here panics on message data: a malformed message still yields a
//! well-formed ENVELOPE and BODYSTRUCTURE, and sections that do not exist are `None`
//! (sent as NIL).

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::ops::Range;

use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::fetch::Section;
use mail_parser::{Encoding, MessageParser, MessagePart, PartType};

use super::response::string;

/// MIME nesting deeper than this is reported as opaque parts, which keeps the
/// recursive walks here (and in clients) shallow whatever a message contains.
const MAX_DEPTH: usize = 64;

/// Stand-in for a multipart with no parts (the grammar needs at least one), as Dovecot
/// writes it.
const EMPTY_BODY: &[u8] = b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)";
const EMPTY_BODYSTRUCTURE: &[u8] =
    b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)";
const EMPTY_ENVELOPE: &[u8] = b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)";

/// A stored message with its MIME structure.
pub struct Message<'a> {
    raw: &'a [u8],
    root: Node,
}

/// A message or a body part: byte ranges into the raw message plus what its header
/// says about its content.
struct Node {
    /// The header block, blank line included. For the message itself (and for an
    /// encapsulated message) the RFC 5322 header, for a body part its MIME header.
    header: Range<usize>,
    body: Range<usize>,
    mime: MimeFields,
    kind: Kind,
}

enum Kind {
    /// A part without sub-parts (text, image, application, ...).
    Single,
    /// A multipart; may be empty when the boundary never occurs.
    Multipart(Vec<Node>),
    /// A message/rfc822 part and the message it encapsulates.
    Message(Box<Node>),
    /// A message/rfc822 part whose content cannot be read in place (transfer-encoded,
    /// or nested too deep): reported with an empty envelope and body.
    OpaqueMessage,
}

/// The Content-* fields of a header.
#[derive(Default)]
struct MimeFields {
    /// Type and subtype as written in the message.
    media_type: Option<Vec<u8>>,
    subtype: Option<Vec<u8>>,
    params: Vec<Param>,
    id: Option<Vec<u8>>,
    description: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    md5: Option<Vec<u8>>,
    disposition: Option<(Vec<u8>, Vec<Param>)>,
    language: Vec<Vec<u8>>,
    location: Option<Vec<u8>>,
}

type Param = (Vec<u8>, Vec<u8>);

impl<'a> Message<'a> {
    /// Parses a message. Never fails: whatever the bytes, the result describes them.
    pub fn parse(raw: &'a [u8]) -> Self {
        // mail-parser is written to never panic, but it indexes and unwraps internally;
        // a FETCH must not take the connection down if it ever does.
        let parsed = std::panic::catch_unwind(|| MessageParser::new().parse(raw))
            .ok()
            .flatten();
        let root = match &parsed {
            Some(message) if !message.parts.is_empty() => build(raw, &message.parts, 0, 0, false),
            _ => Node {
                header: 0..0,
                body: 0..raw.len(),
                mime: MimeFields::default(),
                kind: Kind::Single,
            },
        };
        Message { raw, root }
    }

    /// The message's RFC 5322 header, blank line included (`RFC822.HEADER`).
    pub fn header(&self) -> &'a [u8] {
        slice(self.raw, &self.root.header)
    }

    /// The message's body (`RFC822.TEXT`).
    pub fn text(&self) -> &'a [u8] {
        slice(self.raw, &self.root.body)
    }

    /// Appends the ENVELOPE structure, parenthesised.
    pub fn write_envelope(&self, out: &mut Vec<u8>) {
        write_envelope(self.raw, &self.root.header, out);
    }

    /// Appends BODYSTRUCTURE (`extended`) or BODY (not).
    pub fn write_body_structure(&self, out: &mut Vec<u8>, extended: bool) {
        write_node(self.raw, &self.root, extended, out);
    }

    /// The text of `BODY[section]` (`None` is the whole message), or `None` when the
    /// message has no such part.
    pub fn section(&self, section: Option<&Section<'_>>) -> Option<Cow<'a, [u8]>> {
        let raw = self.raw;
        let Some(section) = section else {
            return Some(Cow::Borrowed(raw));
        };
        let borrowed = |r: &Range<usize>| Some(Cow::Borrowed(slice(raw, r)));
        match section {
            Section::Part(part) => borrowed(&self.find(part.0.as_ref())?.body),
            Section::Mime(part) => borrowed(&self.find(part.0.as_ref())?.header),
            Section::Header(part) => {
                borrowed(&self.message_at(part.as_ref().map(|p| p.0.as_ref()))?.header)
            }
            Section::Text(part) => {
                borrowed(&self.message_at(part.as_ref().map(|p| p.0.as_ref()))?.body)
            }
            Section::HeaderFields(part, names) => {
                let message = self.message_at(part.as_ref().map(|p| p.0.as_ref()))?;
                Some(Cow::Owned(header_subset(
                    raw,
                    &message.header,
                    names.as_ref(),
                    true,
                )))
            }
            Section::HeaderFieldsNot(part, names) => {
                let message = self.message_at(part.as_ref().map(|p| p.0.as_ref()))?;
                Some(Cow::Owned(header_subset(
                    raw,
                    &message.header,
                    names.as_ref(),
                    false,
                )))
            }
        }
    }

    /// The part a numeric section path names (RFC 3501 6.4.5): parts of a multipart
    /// are numbered from 1; a message whose body is not multipart has only part 1,
    /// its body; the parts of a message/rfc822 part are those of the message it holds.
    fn find(&self, path: &[NonZeroU32]) -> Option<&Node> {
        let mut node = &self.root;
        // Whether `node` stands for a message (the root, or one a message/rfc822
        // part encapsulates) rather than for a body part.
        let mut is_message = true;
        for n in path {
            let index = n.get() as usize - 1;
            if !is_message && let Kind::Message(inner) = &node.kind {
                node = inner;
                is_message = true;
            }
            node = match &node.kind {
                Kind::Multipart(children) => children.get(index)?,
                _ if is_message && index == 0 => node,
                _ => return None,
            };
            is_message = false;
        }
        Some(node)
    }

    /// The message HEADER / TEXT refer to: the root without a path, else the message
    /// encapsulated in the message/rfc822 part the path names.
    fn message_at(&self, path: Option<&[NonZeroU32]>) -> Option<&Node> {
        match path {
            None => Some(&self.root),
            Some(path) => match &self.find(path)?.kind {
                Kind::Message(inner) => Some(inner),
                _ => None,
            },
        }
    }
}

/// The `<origin.count>` substring of a section's text: empty when `origin` is past the
/// end, truncated when the text is shorter.
pub fn partial(data: &[u8], origin: u32, count: u32) -> &[u8] {
    let start = (origin as usize).min(data.len());
    let end = start.saturating_add(count as usize).min(data.len());
    &data[start..end]
}

// --- structure ------------------------------------------------------------------------

/// Builds the node for `parts[id]` from mail-parser's flat part list.
fn build(raw: &[u8], parts: &[MessagePart<'_>], id: usize, depth: usize, in_digest: bool) -> Node {
    let len = raw.len();
    let Some(part) = parts.get(id) else {
        return Node {
            header: len..len,
            body: len..len,
            mime: MimeFields::default(),
            kind: Kind::Single,
        };
    };
    let header_start = (part.offset_header as usize).min(len);
    let body_start = (part.offset_body as usize).clamp(header_start, len);
    let body_end = (part.offset_end as usize).clamp(body_start, len);
    let header = header_start..body_start;
    let mime = MimeFields::parse(raw, &header);

    // A multipart/digest's parts default to message/rfc822 (RFC 2046 5.1.5).
    let rfc822 = match (&mime.media_type, &mime.subtype) {
        (Some(t), Some(s)) => {
            t.eq_ignore_ascii_case(b"message") && s.eq_ignore_ascii_case(b"rfc822")
        }
        (None, _) => in_digest,
        _ => false,
    };
    let declared_multipart = mime
        .media_type
        .as_ref()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"multipart"));
    let kind = match &part.body {
        _ if depth >= MAX_DEPTH => {
            if rfc822 {
                Kind::OpaqueMessage
            } else if declared_multipart {
                Kind::Multipart(Vec::new())
            } else {
                Kind::Single
            }
        }
        PartType::Multipart(ids) => {
            let digest = mime
                .subtype
                .as_ref()
                .is_some_and(|s| s.eq_ignore_ascii_case(b"digest"));
            Kind::Multipart(
                ids.iter()
                    .map(|&child| build(raw, parts, child as usize, depth + 1, digest))
                    .collect(),
            )
        }
        // mail-parser parses a transfer-encoded message/rfc822 from its decoded bytes,
        // whose offsets are not offsets into `raw`: only an in-place one is walked.
        PartType::Message(inner)
            if rfc822
                && part.encoding == Encoding::None
                && inner.raw_message.len() == len
                && !inner.parts.is_empty() =>
        {
            let mut message = build(raw, &inner.parts, 0, depth + 1, false);
            // The encapsulated message is the whole body of its part: its TEXT runs to
            // the part's end, past a multipart's closing boundary (the epilogue).
            if message.body.start <= body_end {
                message.body.end = body_end;
            }
            Kind::Message(Box::new(message))
        }
        _ if rfc822 => Kind::OpaqueMessage,
        // Declared multipart but no part found (no boundary, or it never occurs).
        _ if declared_multipart => Kind::Multipart(Vec::new()),
        _ => Kind::Single,
    };
    Node {
        header,
        body: body_start..body_end,
        mime,
        kind,
    }
}

impl MimeFields {
    fn parse(raw: &[u8], header: &Range<usize>) -> Self {
        let (fields, _) = header_fields(raw, header);
        let mut m = MimeFields::default();
        // Content-Type and Content-Transfer-Encoding: the last occurrence, the one
        // mail-parser built the structure from. Other Content-* fields: the first, as
        // Dovecot does.
        if let Some(value) = last_field(&fields, b"Content-Type") {
            let mut lx = Lexer::new(value);
            lx.skip_cfws();
            let media_type = lx.token();
            if !media_type.is_empty() {
                m.media_type = Some(media_type.to_vec());
                lx.skip_cfws();
                if lx.eat(b'/') {
                    lx.skip_cfws();
                    let subtype = lx.token();
                    if !subtype.is_empty() {
                        m.subtype = Some(subtype.to_vec());
                    }
                }
                m.params = lx.params();
            }
        }
        if let Some(value) = last_field(&fields, b"Content-Transfer-Encoding") {
            let mut lx = Lexer::new(value);
            lx.skip_cfws();
            let encoding = lx.token();
            if !encoding.is_empty() {
                m.encoding = Some(encoding.to_vec());
            }
        }
        if let Some(value) = first_field(&fields, b"Content-Disposition") {
            let mut lx = Lexer::new(value);
            lx.skip_cfws();
            let disposition = lx.token();
            if !disposition.is_empty() {
                let disposition = disposition.to_vec();
                m.disposition = Some((disposition, lx.params()));
            }
        }
        if let Some(value) = first_field(&fields, b"Content-Language") {
            let mut lx = Lexer::new(value);
            loop {
                lx.skip_cfws();
                let tag = lx.take(is_atext);
                if !tag.is_empty() {
                    m.language.push(tag.to_vec());
                }
                lx.skip_cfws();
                if !lx.eat(b',') {
                    break;
                }
            }
        }
        m.id = first_field(&fields, b"Content-ID").map(unfold);
        m.description = first_field(&fields, b"Content-Description").map(unfold);
        m.md5 = first_field(&fields, b"Content-MD5").map(unfold);
        m.location = first_field(&fields, b"Content-Location").map(unfold);
        m
    }

    fn is_text(&self) -> bool {
        self.media_type
            .as_ref()
            .is_none_or(|t| t.eq_ignore_ascii_case(b"text"))
    }
}

// --- BODY / BODYSTRUCTURE -------------------------------------------------------------

fn write_node(raw: &[u8], node: &Node, extended: bool, out: &mut Vec<u8>) {
    let mime = &node.mime;
    out.push(b'(');
    if let Kind::Multipart(children) = &node.kind {
        if children.is_empty() {
            out.extend_from_slice(if extended {
                EMPTY_BODYSTRUCTURE
            } else {
                EMPTY_BODY
            });
        }
        for child in children {
            write_node(raw, child, extended, out);
        }
        out.push(b' ');
        let subtype = match (&mime.media_type, &mime.subtype) {
            (Some(t), Some(s)) if t.eq_ignore_ascii_case(b"multipart") => s.as_slice(),
            _ => b"mixed",
        };
        imap_string(out, subtype);
        if extended {
            out.push(b' ');
            write_params(out, &mime.params);
            write_extension(out, mime);
        }
        out.push(b')');
        return;
    }

    let message = matches!(node.kind, Kind::Message(_) | Kind::OpaqueMessage);
    let text = !message && mime.is_text();
    if message {
        out.extend_from_slice(b"\"message\" \"rfc822\"");
    } else {
        let (media_type, subtype): (&[u8], &[u8]) = match (&mime.media_type, &mime.subtype) {
            (Some(t), Some(s)) => (t, s),
            (Some(t), None) if text => (t, b"plain"),
            (Some(t), None) => (t, b"unknown"),
            (None, _) => (b"text", b"plain"),
        };
        imap_string(out, media_type);
        out.push(b' ');
        imap_string(out, subtype);
    }
    out.push(b' ');
    if text
        && !mime
            .params
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(b"charset"))
    {
        let mut params = mime.params.clone();
        params.push((b"charset".to_vec(), b"us-ascii".to_vec()));
        write_params(out, &params);
    } else {
        write_params(out, &mime.params);
    }
    out.push(b' ');
    imap_nstring(out, mime.id.as_deref());
    out.push(b' ');
    imap_nstring(out, mime.description.as_deref());
    out.push(b' ');
    imap_string(out, mime.encoding.as_deref().unwrap_or(b"7bit"));
    let body = slice(raw, &node.body);
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    match &node.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            write_envelope(raw, &inner.header, out);
            out.push(b' ');
            write_node(raw, inner, extended, out);
            out.extend_from_slice(format!(" {}", lines(body)).as_bytes());
        }
        Kind::OpaqueMessage => {
            out.push(b' ');
            out.extend_from_slice(EMPTY_ENVELOPE);
            out.push(b' ');
            out.extend_from_slice(if extended {
                EMPTY_BODYSTRUCTURE
            } else {
                EMPTY_BODY
            });
            out.extend_from_slice(format!(" {}", lines(body)).as_bytes());
        }
        _ if text => out.extend_from_slice(format!(" {}", lines(body)).as_bytes()),
        _ => {}
    }
    if extended {
        out.push(b' ');
        imap_nstring(out, mime.md5.as_deref());
        write_extension(out, mime);
    }
    out.push(b')');
}

/// ` disposition language location`, the extension data both part kinds share.
fn write_extension(out: &mut Vec<u8>, mime: &MimeFields) {
    out.push(b' ');
    match &mime.disposition {
        Some((disposition, params)) => {
            out.push(b'(');
            imap_string(out, disposition);
            out.push(b' ');
            write_params(out, params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    if mime.language.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, tag) in mime.language.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            imap_string(out, tag);
        }
        out.push(b')');
    }
    out.push(b' ');
    imap_nstring(out, mime.location.as_deref());
}

fn write_params(out: &mut Vec<u8>, params: &[Param]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        imap_string(out, name);
        out.push(b' ');
        imap_string(out, value);
    }
    out.push(b')');
}

/// Lines of a body: every LF ends one (CRLF, or a bare LF).
fn lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

// --- ENVELOPE -------------------------------------------------------------------------

fn write_envelope(raw: &[u8], header: &Range<usize>, out: &mut Vec<u8>) {
    let (fields, _) = header_fields(raw, header);
    // The last occurrence of each field counts, as in Dovecot.
    let text = |name: &[u8]| last_field(&fields, name).map(unfold);
    let addresses = |name: &[u8]| {
        last_field(&fields, name)
            .map(parse_addresses)
            .filter(|a| !a.is_empty())
    };

    let from = addresses(b"From");
    let sender = addresses(b"Sender");
    let reply_to = addresses(b"Reply-To");
    out.push(b'(');
    imap_nstring(out, text(b"Date").as_deref());
    out.push(b' ');
    imap_nstring(
        out,
        last_field(&fields, b"Subject").map(humanize).as_deref(),
    );
    out.push(b' ');
    write_addresses(out, from.as_deref());
    out.push(b' ');
    write_addresses(out, sender.as_deref().or(from.as_deref()));
    out.push(b' ');
    write_addresses(out, reply_to.as_deref().or(from.as_deref()));
    for name in [&b"To"[..], b"Cc", b"Bcc"] {
        out.push(b' ');
        write_addresses(out, addresses(name).as_deref());
    }
    out.push(b' ');
    imap_nstring(out, text(b"In-Reply-To").as_deref());
    out.push(b' ');
    imap_nstring(out, text(b"Message-ID").as_deref());
    out.push(b')');
}

/// An element of an address list as ENVELOPE reports it: a mailbox, or the start or
/// end of a group (RFC 3501 7.4.2).
#[derive(Debug, PartialEq)]
enum Address {
    Mailbox {
        name: Option<Vec<u8>>,
        route: Option<Vec<u8>>,
        mailbox: Vec<u8>,
        host: Vec<u8>,
    },
    GroupStart(Vec<u8>),
    GroupEnd,
}

fn write_addresses(out: &mut Vec<u8>, list: Option<&[Address]>) {
    let Some(list) = list else {
        out.extend_from_slice(b"NIL");
        return;
    };
    out.push(b'(');
    for address in list {
        match address {
            Address::Mailbox {
                name,
                route,
                mailbox,
                host,
            } => {
                out.push(b'(');
                imap_nstring(out, name.as_deref());
                out.push(b' ');
                imap_nstring(out, route.as_deref());
                out.push(b' ');
                imap_string(out, mailbox);
                out.push(b' ');
                imap_string(out, host);
                out.push(b')');
            }
            Address::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                imap_string(out, name);
                out.extend_from_slice(b" NIL)");
            }
            Address::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

/// Parses an address-list field value (RFC 5322 3.4, obsolete forms included), keeping
/// names as written: quoted strings are unquoted, encoded words stay encoded. A
/// mailbox without a comment-free display name takes its trailing comment as name; a
/// missing local part or domain is reported as `MISSING_MAILBOX` / `MISSING_DOMAIN`
/// (a NIL host would mean a group). Garbage is skipped up to the next comma.
fn parse_addresses(value: &[u8]) -> Vec<Address> {
    let mut lx = Lexer::new(value);
    let mut out = Vec::new();
    loop {
        lx.skip_cfws();
        match lx.peek() {
            None => break,
            Some(b',') => {
                lx.i += 1;
                continue;
            }
            _ => {}
        }
        let start = lx.i;
        let phrase = lx.phrase();
        lx.skip_cfws();
        if !phrase.is_empty() && lx.eat(b':') {
            out.push(Address::GroupStart(humanize(&phrase)));
            loop {
                lx.skip_cfws();
                match lx.peek() {
                    None => break,
                    Some(b';') => {
                        lx.i += 1;
                        break;
                    }
                    Some(b',') => {
                        lx.i += 1;
                        continue;
                    }
                    _ => {}
                }
                let before = lx.i;
                out.extend(mailbox(&mut lx));
                lx.skip_garbage(before, true);
            }
            out.push(Address::GroupEnd);
        } else {
            lx.i = start;
            out.extend(mailbox(&mut lx));
            lx.skip_garbage(start, false);
        }
    }
    out
}

/// One mailbox: `name <addr>` or `addr (comment)`.
fn mailbox(lx: &mut Lexer<'_>) -> Option<Address> {
    let start = lx.i;
    let phrase = lx.phrase();
    lx.skip_cfws();
    let (name, route, local, domain) = if lx.eat(b'<') {
        let (route, local, domain) = lx.angle_addr();
        let name = (!phrase.is_empty()).then(|| humanize(&phrase));
        (name, route, local, domain)
    } else {
        lx.i = start;
        lx.comment = None;
        let local = lx.local_part();
        let domain = if lx.eat(b'@') {
            Some(lx.domain())
        } else {
            None
        };
        lx.skip_cfws();
        if local.is_empty() && domain.is_none() {
            return None;
        }
        let name = lx
            .comment
            .take()
            .map(|c| humanize(&c))
            .filter(|c| !c.is_empty());
        (name, None, local, domain)
    };
    let mailbox = if local.is_empty() {
        b"MISSING_MAILBOX".to_vec()
    } else {
        local
    };
    let host = domain
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| b"MISSING_DOMAIN".to_vec());
    Some(Address::Mailbox {
        name,
        route,
        mailbox,
        host,
    })
}

// --- sections -------------------------------------------------------------------------

/// HEADER.FIELDS (`keep`) or HEADER.FIELDS.NOT: the matching fields as they appear,
/// then the blank line that ends the header if the message has one.
fn header_subset(raw: &[u8], header: &Range<usize>, names: &[AString<'_>], keep: bool) -> Vec<u8> {
    let (fields, blank) = header_fields(raw, header);
    let mut out = Vec::new();
    for field in &fields {
        if field.name.is_empty() {
            // A line that is not a field at all.
            continue;
        }
        let listed = names
            .iter()
            .any(|n| n.as_ref().eq_ignore_ascii_case(field.name));
        if listed == keep {
            out.extend_from_slice(slice(raw, &field.span));
        }
    }
    if let Some(blank) = blank {
        out.extend_from_slice(slice(raw, &blank));
    }
    out
}

/// One header field.
struct Field<'a> {
    /// The name, without surrounding white space; empty for a line without a colon.
    name: &'a [u8],
    /// The raw value after the colon, folding included, without the final line end.
    value: &'a [u8],
    /// The whole field in the message, final line end included.
    span: Range<usize>,
}

/// Splits a header block into its fields, and finds the blank line that ends it.
fn header_fields<'r>(
    raw: &'r [u8],
    header: &Range<usize>,
) -> (Vec<Field<'r>>, Option<Range<usize>>) {
    let block = slice(raw, header);
    let base = header.start;
    let mut spans: Vec<Range<usize>> = Vec::new();
    let mut blank = None;
    let mut pos = 0;
    while pos < block.len() {
        let end = block[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(block.len(), |i| pos + i + 1);
        let line = &block[pos..end];
        if line.iter().all(|b| b.is_ascii_whitespace()) && line.ends_with(b"\n") {
            blank = Some(base + pos..base + end);
            break;
        }
        match spans.last_mut() {
            Some(span) if matches!(line[0], b' ' | b'\t') => span.end = base + end,
            _ => spans.push(base + pos..base + end),
        }
        pos = end;
    }
    let fields = spans
        .into_iter()
        .map(|span| {
            let bytes = slice(raw, &span);
            let (name, value) = match bytes.iter().position(|&b| b == b':') {
                Some(colon) => (trim(&bytes[..colon]), &bytes[colon + 1..]),
                None => (&b""[..], bytes),
            };
            let value = value.strip_suffix(b"\n").unwrap_or(value);
            let value = value.strip_suffix(b"\r").unwrap_or(value);
            Field { name, value, span }
        })
        .collect();
    (fields, blank)
}

fn first_field<'r>(fields: &[Field<'r>], name: &[u8]) -> Option<&'r [u8]> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
}

fn last_field<'r>(fields: &[Field<'r>], name: &[u8]) -> Option<&'r [u8]> {
    fields
        .iter()
        .rev()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
}

// --- lexical --------------------------------------------------------------------------

/// A cursor over a field value: the RFC 5322 / RFC 2045 lexical tokens, lenient.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    /// The text of the last comment skipped.
    comment: Option<Vec<u8>>,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a [u8]) -> Self {
        Lexer {
            s,
            i: 0,
            comment: None,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn take(&mut self, accept: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&accept) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// Skips white space and comments.
    fn skip_cfws(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.i += 1,
                Some(b'(') => self.comment = Some(self.read_comment()),
                _ => break,
            }
        }
    }

    /// Reads a (possibly nested) comment; the cursor is on its `(`.
    fn read_comment(&mut self) -> Vec<u8> {
        let mut text = Vec::new();
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'\\' => {
                    if let Some(next) = self.peek() {
                        self.i += 1;
                        text.push(next);
                    }
                }
                b'(' => {
                    if depth > 0 {
                        text.push(c);
                    }
                    depth += 1;
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                    text.push(c);
                }
                b'\r' | b'\n' => {}
                _ => text.push(c),
            }
        }
        text
    }

    /// Reads a quoted string's content, unescaped; the cursor is on its `"`.
    fn quoted(&mut self) -> Vec<u8> {
        self.i += 1;
        let mut text = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        self.i += 1;
                        text.push(next);
                    }
                }
                b'\r' | b'\n' => {}
                _ => text.push(c),
            }
        }
        text
    }

    /// A MIME token (RFC 2045 5.1).
    fn token(&mut self) -> &'a [u8] {
        self.take(|c| c > b' ' && c != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&c))
    }

    /// Words (atoms, quoted strings, and dots for obsolete phrases) joined by single
    /// spaces.
    fn phrase(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.skip_cfws();
            let word = match self.peek() {
                Some(b'"') => self.quoted(),
                Some(c) if is_atext(c) || c == b'.' => {
                    self.take(|c| is_atext(c) || c == b'.').to_vec()
                }
                _ => break,
            };
            if !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(&word);
        }
        out
    }

    /// A local part: dot-separated atoms or quoted strings, unquoted.
    fn local_part(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.skip_cfws();
            match self.peek() {
                Some(b'"') => out.extend(self.quoted()),
                _ => out.extend_from_slice(self.take(is_atext)),
            }
            self.skip_cfws();
            if !self.eat(b'.') {
                break;
            }
            out.push(b'.');
        }
        out
    }

    /// A domain: dot-separated atoms, or a domain literal kept with its brackets.
    fn domain(&mut self) -> Vec<u8> {
        self.skip_cfws();
        let mut out = Vec::new();
        if self.peek() == Some(b'[') {
            while let Some(c) = self.peek() {
                self.i += 1;
                if !matches!(c, b'\r' | b'\n') {
                    out.push(c);
                }
                if c == b']' {
                    break;
                }
            }
            self.skip_cfws();
            return out;
        }
        loop {
            self.skip_cfws();
            out.extend_from_slice(self.take(is_atext));
            self.skip_cfws();
            if !self.eat(b'.') {
                break;
            }
            out.push(b'.');
        }
        out
    }

    /// The inside of `<...>`, the cursor past the `<`: an optional obsolete route, the
    /// local part and the domain. Reads up to and including the `>`.
    #[allow(clippy::type_complexity)]
    fn angle_addr(&mut self) -> (Option<Vec<u8>>, Vec<u8>, Option<Vec<u8>>) {
        self.skip_cfws();
        let mut route = None;
        if self.peek() == Some(b'@') {
            let mut r = Vec::new();
            while self.eat(b'@') {
                if !r.is_empty() {
                    r.push(b',');
                }
                r.push(b'@');
                r.extend(self.domain());
                while self.eat(b',') {
                    self.skip_cfws();
                }
            }
            if self.eat(b':') {
                route = Some(r);
            }
        }
        let local = self.local_part();
        let domain = if self.eat(b'@') {
            Some(self.domain())
        } else {
            None
        };
        while let Some(c) = self.peek() {
            self.i += 1;
            if c == b'>' {
                break;
            }
        }
        (route, local, domain)
    }

    /// After an address: skips anything up to the next separator, and always moves
    /// past `start` so a parse loop ends.
    fn skip_garbage(&mut self, start: usize, in_group: bool) {
        self.skip_cfws();
        while let Some(c) = self.peek() {
            if c == b',' || (in_group && c == b';') {
                break;
            }
            if c == b'"' {
                self.quoted();
            } else {
                self.i += 1;
            }
        }
        if self.i == start {
            self.i += 1;
        }
    }

    /// `*(";" attribute "=" value)` with RFC 2231 continuations joined.
    fn params(&mut self) -> Vec<Param> {
        let mut params = Vec::new();
        loop {
            self.skip_cfws();
            let Some(c) = self.peek() else { break };
            self.i += 1;
            if c != b';' {
                // Garbage between parameters.
                continue;
            }
            self.skip_cfws();
            let name = self.token().to_vec();
            self.skip_cfws();
            if name.is_empty() || !self.eat(b'=') {
                continue;
            }
            self.skip_cfws();
            let value = match self.peek() {
                Some(b'"') => self.quoted(),
                // Broken but common: an unquoted encoded word, `name==?utf-8?b?...?=`.
                Some(b'=') => self
                    .take(|c| !matches!(c, b';' | b' ' | b'\t' | b'\r' | b'\n'))
                    .to_vec(),
                _ => self.token().to_vec(),
            };
            params.push((name, value));
        }
        join_rfc2231(params)
    }
}

/// RFC 5322 atext, plus 8-bit bytes (raw UTF-8 in headers is common).
fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c) || c >= 0x80
}

/// Joins RFC 2231 continuations (`name*0`, `name*1*`, ...) into one parameter, named
/// `name*` with the `charset'language'%XX` value if any segment is extended, else
/// `name`. Values are not decoded. Parameters whose segments do not run 0, 1, 2, ...
/// are left as they are. Plain parameters keep their order; joined ones follow.
fn join_rfc2231(params: Vec<Param>) -> Vec<Param> {
    struct Segment {
        base: Vec<u8>,
        index: u32,
        extended: bool,
        value: Vec<u8>,
        name: Vec<u8>,
    }
    let mut plain = Vec::new();
    let mut segments = Vec::new();
    for (name, value) in params {
        let Some(star) = name.iter().position(|&c| c == b'*') else {
            plain.push((name, value));
            continue;
        };
        // `name*` is segment 0, extended; `name*N` segment N; `name*N*` extended.
        let rest = &name[star + 1..];
        let (digits, extended) = match rest.strip_suffix(b"*") {
            Some(digits) => (digits, true),
            None => (rest, rest.is_empty()),
        };
        let index = if rest.is_empty() {
            Some(0)
        } else if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u32>().ok())
        } else {
            None
        };
        let Some(index) = index else {
            plain.push((name, value));
            continue;
        };
        let base = name[..star].to_ascii_lowercase();
        segments.push(Segment {
            base,
            index,
            extended,
            value,
            name,
        });
    }
    segments.sort_by(|a, b| a.base.cmp(&b.base).then(a.index.cmp(&b.index)));

    let mut out = plain;
    let mut i = 0;
    while i < segments.len() {
        let j = segments[i..]
            .iter()
            .position(|s| s.base != segments[i].base)
            .map_or(segments.len(), |n| i + n);
        let group = &segments[i..j];
        let contiguous = group.iter().enumerate().all(|(n, s)| s.index as usize == n);
        if !contiguous {
            out.extend(group.iter().map(|s| (s.name.clone(), s.value.clone())));
        } else {
            let any_extended = group.iter().any(|s| s.extended);
            let mut value = Vec::new();
            if any_extended && !group[0].extended {
                value.extend_from_slice(b"''");
            }
            for s in group {
                if any_extended && !s.extended {
                    // A plain segment inside an extended value: its % is literal.
                    for &c in &s.value {
                        if c == b'%' {
                            value.extend_from_slice(b"%25");
                        } else {
                            value.push(c);
                        }
                    }
                } else {
                    value.extend_from_slice(&s.value);
                }
            }
            let star = group[0]
                .name
                .iter()
                .position(|&c| c == b'*')
                .unwrap_or(group[0].name.len());
            let mut name = group[0].name[..star].to_vec();
            if any_extended {
                name.push(b'*');
            }
            out.push((name, value));
        }
        i = j;
    }
    out
}

// --- small helpers --------------------------------------------------------------------

fn slice<'r>(raw: &'r [u8], range: &Range<usize>) -> &'r [u8] {
    raw.get(range.clone()).unwrap_or_default()
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// A field value unfolded (line ends removed, the white space after them kept) and
/// trimmed.
fn unfold(value: &[u8]) -> Vec<u8> {
    let unfolded: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    trim(&unfolded).to_vec()
}

/// For text meant for people (subjects, display names): unfolded, runs of white space
/// made one space, trimmed.
fn humanize(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            if !out.is_empty() && out.last() != Some(&b' ') {
                out.push(b' ');
            }
        } else {
            out.push(b);
        }
    }
    if out.last() == Some(&b' ') {
        out.pop();
    }
    out
}

/// An IMAP string; NUL, which no IMAP string may hold, is dropped.
fn imap_string(out: &mut Vec<u8>, s: &[u8]) {
    if s.contains(&0) {
        let clean: Vec<u8> = s.iter().copied().filter(|&b| b != 0).collect();
        string(out, &clean);
    } else {
        string(out, s);
    }
}

fn imap_nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => imap_string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
    use imap_codec::{CommandCodec, ResponseCodec};

    use super::*;

    /// RFC 3501 6.4.5's example message, trimmed.
    const SIMPLE: &str = "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
        From: Terry Gray <gray@cac.washington.edu>\r\n\
        Subject: IMAP4rev1 WG mtg summary and minutes\r\n\
        To: imap@cac.washington.edu\r\n\
        cc: minutes@CNRI.Reston.VA.US,\r\n \"John Klensin\" <KLENSIN@MIT.EDU>\r\n\
        Message-Id: <B27397-0100000@cac.washington.edu>\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\
        \r\n\
        Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n";

    const MINIMAL: &str = "Subject: hi\r\n\r\na\r\n";

    const ALTERNATIVE: &str = "From: a@example.com\r\n\
        Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
        \r\n\
        preamble\r\n\
        --b1\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        \r\n\
        caf=C3=A9\r\n\
        --b1\r\n\
        Content-Type: text/html; charset=\"utf-8\"\r\n\
        \r\n\
        <p>caf&eacute;</p>\r\n\
        --b1--\r\n\
        epilogue\r\n";

    const ATTACHMENT: &str = "From: a@example.com\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed;\r\n\tboundary=\"==XYZ==\"\r\n\
        \r\n\
        --==XYZ==\r\n\
        \r\n\
        See attached.\r\n\
        --==XYZ==\r\n\
        Content-Type: application/pdf; name*0=\"annual \"; name*1=\"report.pdf\"\r\n\
        Content-Transfer-Encoding: BASE64\r\n\
        Content-ID: <part2@example.com>\r\n\
        Content-Description: The report\r\n\
        Content-Disposition: attachment;\r\n filename*=utf-8''na%C3%AFve%20report.pdf; size=12\r\n\
        Content-Language: en, fi\r\n\
        Content-Location: http://example.com/r.pdf\r\n\
        \r\n\
        SGVsbG8gd29ybGQh\r\n\
        --==XYZ==--\r\n";

    const NESTED: &str = "Content-Type: multipart/mixed; boundary=outer\r\n\
        \r\n\
        --outer\r\n\
        Content-Type: multipart/alternative; boundary=inner\r\n\
        \r\n\
        --inner\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        plain\r\n\
        --inner\r\n\
        Content-Type: text/html\r\n\
        \r\n\
        <b>html</b>\r\n\
        --inner--\r\n\
        --outer\r\n\
        Content-Type: image/png\r\n\
        Content-Transfer-Encoding: base64\r\n\
        \r\n\
        iVBORw0K\r\n\
        --outer--\r\n";

    /// A message/rfc822 message whose encapsulated message is a multipart with an
    /// epilogue.
    const ATTACHED_MULTIPART: &str = "Subject: out\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        Subject: in\r\n\
        Content-Type: multipart/mixed; boundary=in\r\n\
        \r\n\
        intro\r\n\
        --in\r\n\
        \r\n\
        body\r\n\
        --in--\r\n\
        afterwards\r\n";

    const FORWARD: &str = "From: Bob <bob@example.com>\r\n\
        Subject: Fwd: lunch\r\n\
        Content-Type: multipart/mixed; boundary=\"fw\"\r\n\
        \r\n\
        --fw\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        Forwarded.\r\n\
        --fw\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        From: Alice <alice@example.com>\r\n\
        To: Bob <bob@example.com>\r\n\
        Subject: lunch\r\n\
        Message-ID: <lunch@example.com>\r\n\
        \r\n\
        Noon?\r\n\
        --fw--\r\n";

    const ENCODED_WORDS: &str = "From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>\r\n\
        To: =?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>\r\n\
        Subject: =?UTF-8?Q?caf=C3=A9?=\r\n\t=?UTF-8?Q?_time?=\r\n\
        \r\n\
        x\r\n";

    /// RFC 5322 appendix A.1.3.
    const GROUPS: &str = "From: Pete <pete@silly.example>\r\n\
        To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;\r\n\
        Cc: Undisclosed recipients:;\r\n\
        Bcc: root, \"Doe, Jane\" <@route.test,@two.test:jane@[192.0.2.1]>, jim@x.test (Jim Smith)\r\n\
        Date: Thu, 13 Feb 1969 23:32:54 -0330\r\n\
        Message-ID: <testabcd.1234@silly.test>\r\n\
        \r\n\
        Testing.\r\n";

    fn body_structure(raw: &str, extended: bool) -> String {
        let mut out = Vec::new();
        Message::parse(raw.as_bytes()).write_body_structure(&mut out, extended);
        String::from_utf8(out).unwrap()
    }

    fn envelope(raw: &str) -> String {
        let mut out = Vec::new();
        Message::parse(raw.as_bytes()).write_envelope(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// The section of `BODY[spec]`, as imap-codec parses it from a FETCH command.
    fn section(spec: &str) -> Option<Section<'static>> {
        let line = format!("a FETCH 1 BODY[{spec}]\r\n");
        let (_, command) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .unwrap();
        let CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            ..
        } = command.body
        else {
            panic!("not a fetch");
        };
        match items.into_iter().next() {
            Some(MessageDataItemName::BodyExt { section, .. }) => section,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn text_of(raw: &str, spec: &str) -> Option<String> {
        let message = Message::parse(raw.as_bytes());
        message
            .section(section(spec).as_ref())
            .map(|t| String::from_utf8(t.into_owned()).unwrap())
    }

    #[test]
    fn body_structures() {
        let cases: &[(&str, &str)] = &[
            (
                SIMPLE,
                r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1 NIL NIL NIL NIL)"#,
            ),
            (
                MINIMAL,
                r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)"#,
            ),
            (
                ALTERNATIVE,
                concat!(
                    r#"(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 9 0 NIL NIL NIL NIL)"#,
                    r#"("text" "html" ("charset" "utf-8") NIL NIL "7bit" 18 0 NIL NIL NIL NIL)"#,
                    r#" "alternative" ("boundary" "b1") NIL NIL NIL)"#
                ),
            ),
            (
                ATTACHMENT,
                concat!(
                    r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 0 NIL NIL NIL NIL)"#,
                    r#"("application" "pdf" ("name" "annual report.pdf") "<part2@example.com>" "The report" "BASE64" 16"#,
                    r#" NIL ("attachment" ("size" "12" "filename*" "utf-8''na%C3%AFve%20report.pdf")) ("en" "fi")"#,
                    r#" "http://example.com/r.pdf")"#,
                    r#" "mixed" ("boundary" "==XYZ==") NIL NIL NIL)"#
                ),
            ),
            (
                NESTED,
                concat!(
                    r#"((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)"#,
                    r#"("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 0 NIL NIL NIL NIL)"#,
                    r#" "alternative" ("boundary" "inner") NIL NIL NIL)"#,
                    r#"("image" "png" NIL NIL NIL "base64" 8 NIL NIL NIL NIL)"#,
                    r#" "mixed" ("boundary" "outer") NIL NIL NIL)"#
                ),
            ),
            (
                FORWARD,
                concat!(
                    r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)"#,
                    r#"("message" "rfc822" NIL NIL NIL "7bit" 116"#,
                    r#" (NIL "lunch" (("Alice" NIL "alice" "example.com")) (("Alice" NIL "alice" "example.com"))"#,
                    r#" (("Alice" NIL "alice" "example.com")) (("Bob" NIL "bob" "example.com")) NIL NIL NIL"#,
                    r#" "<lunch@example.com>")"#,
                    r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL) 5"#,
                    r#" NIL NIL NIL NIL)"#,
                    r#" "mixed" ("boundary" "fw") NIL NIL NIL)"#
                ),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(body_structure(raw, true), *expected, "message:\n{raw}");
        }
    }

    #[test]
    fn body_is_body_structure_without_extensions() {
        assert_eq!(
            body_structure(SIMPLE, false),
            r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1)"#
        );
        assert_eq!(
            body_structure(FORWARD, false),
            concat!(
                r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0)"#,
                r#"("message" "rfc822" NIL NIL NIL "7bit" 116"#,
                r#" (NIL "lunch" (("Alice" NIL "alice" "example.com")) (("Alice" NIL "alice" "example.com"))"#,
                r#" (("Alice" NIL "alice" "example.com")) (("Bob" NIL "bob" "example.com")) NIL NIL NIL"#,
                r#" "<lunch@example.com>")"#,
                r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) 5)"#,
                r#" "mixed")"#
            )
        );
    }

    #[test]
    fn envelopes() {
        let cases: &[(&str, &str)] = &[
            (
                SIMPLE,
                concat!(
                    r#"("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes""#,
                    r#" (("Terry Gray" NIL "gray" "cac.washington.edu"))"#,
                    r#" (("Terry Gray" NIL "gray" "cac.washington.edu"))"#,
                    r#" (("Terry Gray" NIL "gray" "cac.washington.edu"))"#,
                    r#" ((NIL NIL "imap" "cac.washington.edu"))"#,
                    r#" ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU"))"#,
                    r#" NIL NIL "<B27397-0100000@cac.washington.edu>")"#
                ),
            ),
            // Encoded words are not decoded; folding is undone.
            (
                ENCODED_WORDS,
                concat!(
                    r#"(NIL "=?UTF-8?Q?caf=C3=A9?= =?UTF-8?Q?_time?=""#,
                    r#" (("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=" NIL "keld" "dkuug.dk"))"#,
                    r#" (("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=" NIL "keld" "dkuug.dk"))"#,
                    r#" (("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?=" NIL "keld" "dkuug.dk"))"#,
                    r#" (("=?US-ASCII?Q?Keith_Moore?=" NIL "moore" "cs.utk.edu")) NIL NIL NIL NIL)"#
                ),
            ),
            (
                GROUPS,
                concat!(
                    r#"("Thu, 13 Feb 1969 23:32:54 -0330" NIL"#,
                    r#" (("Pete" NIL "pete" "silly.example")) (("Pete" NIL "pete" "silly.example"))"#,
                    r#" (("Pete" NIL "pete" "silly.example"))"#,
                    r#" ((NIL NIL "A Group" NIL)("Ed Jones" NIL "c" "a.test")(NIL NIL "joe" "where.test")"#,
                    r#"("John" NIL "jdoe" "one.test")(NIL NIL NIL NIL))"#,
                    r#" ((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL))"#,
                    r#" ((NIL NIL "root" "MISSING_DOMAIN")("Doe, Jane" "@route.test,@two.test" "jane" "[192.0.2.1]")"#,
                    r#"("Jim Smith" NIL "jim" "x.test"))"#,
                    r#" NIL "<testabcd.1234@silly.test>")"#
                ),
            ),
            // Missing fields are NIL; Sender and Reply-To have nothing to default to.
            (
                "Subject: only\r\n\r\nbody\r\n",
                r#"(NIL "only" NIL NIL NIL NIL NIL NIL NIL NIL)"#,
            ),
            ("", r#"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"#),
            // Empty fields are empty strings, an empty address list is NIL.
            (
                "Subject:\r\nTo:\r\n\r\n",
                r#"(NIL "" NIL NIL NIL NIL NIL NIL NIL NIL)"#,
            ),
            // Sender and Reply-To when present; the last of repeated fields counts.
            (
                "From: a@x\r\nSender: s@x\r\nReply-To: r@x\r\nSubject: one\r\nSubject: two\r\n\r\n",
                concat!(
                    r#"(NIL "two" ((NIL NIL "a" "x")) ((NIL NIL "s" "x")) ((NIL NIL "r" "x"))"#,
                    r#" NIL NIL NIL NIL NIL)"#
                ),
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(envelope(raw), *expected, "message:\n{raw}");
        }
    }

    #[test]
    fn eight_bit_headers_are_literals() {
        let raw = "Subject: caf\u{e9}\r\n\r\n";
        assert_eq!(
            envelope(raw),
            "(NIL {5}\r\ncaf\u{e9} NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn sections() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (MINIMAL, "", Some(MINIMAL)),
            (MINIMAL, "HEADER", Some("Subject: hi\r\n\r\n")),
            (MINIMAL, "TEXT", Some("a\r\n")),
            // A message that is not multipart has a part 1: its body.
            (MINIMAL, "1", Some("a\r\n")),
            (MINIMAL, "1.MIME", Some("Subject: hi\r\n\r\n")),
            (MINIMAL, "2", None),
            (MINIMAL, "1.1", None),
            (MINIMAL, "1.HEADER", None),
            // Field names match case-insensitively; fields keep message order and
            // folding; the blank line ends the subset.
            (
                SIMPLE,
                "HEADER.FIELDS (SUBJECT from CC)",
                Some(
                    "From: Terry Gray <gray@cac.washington.edu>\r\n\
                     Subject: IMAP4rev1 WG mtg summary and minutes\r\n\
                     cc: minutes@CNRI.Reston.VA.US,\r\n \"John Klensin\" <KLENSIN@MIT.EDU>\r\n\r\n",
                ),
            ),
            (
                SIMPLE,
                "HEADER.FIELDS.NOT (Date From Subject To Cc Message-ID)",
                Some("MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"),
            ),
            (SIMPLE, "HEADER.FIELDS (X-Nothing)", Some("\r\n")),
            // No blank line in the message, none in the subset.
            (
                "Subject: x\r\n",
                "HEADER.FIELDS (Subject)",
                Some("Subject: x\r\n"),
            ),
            ("Subject: x\r\n", "TEXT", Some("")),
            // Multipart parts exclude the line break before the next boundary.
            (ALTERNATIVE, "1", Some("caf=C3=A9")),
            (
                ALTERNATIVE,
                "1.MIME",
                Some(
                    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
                ),
            ),
            (ALTERNATIVE, "2", Some("<p>caf&eacute;</p>")),
            (ALTERNATIVE, "3", None),
            (
                ALTERNATIVE,
                "TEXT",
                Some(&ALTERNATIVE[ALTERNATIVE.find("\r\n\r\n").unwrap() + 4..]),
            ),
            (NESTED, "1.2", Some("<b>html</b>")),
            (NESTED, "1.2.MIME", Some("Content-Type: text/html\r\n\r\n")),
            (NESTED, "2", Some("iVBORw0K")),
            (
                NESTED,
                "1",
                Some(
                    &NESTED[NESTED.find("--inner\r\n").unwrap()
                        ..NESTED.find("--inner--\r\n").unwrap() + 9],
                ),
            ),
            // A message/rfc822 part: its body is the whole encapsulated message, and
            // HEADER, TEXT and part numbers refer into that message.
            (
                FORWARD,
                "2.HEADER",
                Some(
                    "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\nSubject: lunch\r\nMessage-ID: <lunch@example.com>\r\n\r\n",
                ),
            ),
            (FORWARD, "2.TEXT", Some("Noon?")),
            (FORWARD, "2.1", Some("Noon?")),
            (
                FORWARD,
                "2.HEADER.FIELDS (subject)",
                Some("Subject: lunch\r\n\r\n"),
            ),
            (
                FORWARD,
                "2.MIME",
                Some("Content-Type: message/rfc822\r\n\r\n"),
            ),
            (
                FORWARD,
                "2",
                Some(
                    &FORWARD
                        [FORWARD.find("From: Alice").unwrap()..FORWARD.find("\r\n--fw--").unwrap()],
                ),
            ),
            (FORWARD, "1.HEADER", None),
            (FORWARD, "2.2", None),
            // An encapsulated multipart message: its TEXT is the rest of its part,
            // epilogue included, not only up to the closing boundary.
            (
                ATTACHED_MULTIPART,
                "1.TEXT",
                Some("intro\r\n--in\r\n\r\nbody\r\n--in--\r\nafterwards\r\n"),
            ),
            (ATTACHED_MULTIPART, "1.1", Some("body")),
            (
                ATTACHED_MULTIPART,
                "TEXT",
                Some(&ATTACHED_MULTIPART[ATTACHED_MULTIPART.find("Subject: in").unwrap()..]),
            ),
        ];
        for (raw, spec, expected) in cases {
            assert_eq!(
                text_of(raw, spec).as_deref(),
                *expected,
                "BODY[{spec}] of\n{raw}"
            );
        }
    }

    #[test]
    fn partials() {
        assert_eq!(partial(b"0123456789", 0, 4), b"0123");
        assert_eq!(partial(b"0123456789", 8, 4), b"89");
        assert_eq!(partial(b"0123456789", 10, 4), b"");
        assert_eq!(partial(b"0123456789", 50, 4), b"");
        assert_eq!(partial(b"0123456789", u32::MAX, u32::MAX), b"");
    }

    #[test]
    fn rfc2231_parameters_are_joined_not_decoded() {
        let cases: &[(&str, &str)] = &[
            (
                "a; title*=us-ascii'en-us'This%20is",
                r#"("title*" "us-ascii'en-us'This%20is")"#,
            ),
            (
                "a; title*0*=us-ascii'en'This%20is%20; title*1*=%2A%2A%2Afun%2A%2A%2A; title*2=\"isn't it!\"",
                r#"("title*" "us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2Aisn't it!")"#,
            ),
            (
                "a; URL*1=\"b\"; url*0=\"a\"; x=1",
                r#"("x" "1" "url" "ab")"#,
            ),
            // A gap in the numbering: left as it is.
            ("a; n*0=a; n*2=c", r#"("n*0" "a" "n*2" "c")"#),
            ("a; n*0=50%; n*1*=%41", r#"("n*" "''50%25%41")"#),
            // Garbage between parameters is skipped.
            ("a; ; x; y=\"1\" garbage; z=2", r#"("y" "1" "z" "2")"#),
        ];
        for (value, expected) in cases {
            let mut lx = Lexer::new(value.as_bytes());
            lx.token();
            let mut out = Vec::new();
            write_params(&mut out, &lx.params());
            assert_eq!(String::from_utf8(out).unwrap(), *expected, "{value}");
        }
    }

    #[test]
    fn addresses() {
        let mailbox = |name: Option<&str>, mailbox: &str, host: &str| Address::Mailbox {
            name: name.map(|n| n.as_bytes().to_vec()),
            route: None,
            mailbox: mailbox.as_bytes().to_vec(),
            host: host.as_bytes().to_vec(),
        };
        let cases: Vec<(&str, Vec<Address>)> = vec![
            ("  ", vec![]),
            ("a@b", vec![mailbox(None, "a", "b")]),
            (
                "\"q\\\"uote\" <a@b>",
                vec![mailbox(Some("q\"uote"), "a", "b")],
            ),
            ("<a@b>", vec![mailbox(None, "a", "b")]),
            (
                "(c) John (middle) Doe <a@b>",
                vec![mailbox(Some("John Doe"), "a", "b")],
            ),
            ("\"a b\"@c", vec![mailbox(None, "a b", "c")]),
            ("a . b @ c . d", vec![mailbox(None, "a.b", "c.d")]),
            (
                "<>",
                vec![mailbox(None, "MISSING_MAILBOX", "MISSING_DOMAIN")],
            ),
            (
                "a@b,,c@d,",
                vec![mailbox(None, "a", "b"), mailbox(None, "c", "d")],
            ),
            (
                "a@b garbage, c@d",
                vec![mailbox(None, "a", "b"), mailbox(None, "c", "d")],
            ),
            ("Broken <a@b", vec![mailbox(Some("Broken"), "a", "b")]),
            (
                "g: ;",
                vec![Address::GroupStart(b"g".to_vec()), Address::GroupEnd],
            ),
            (
                "g: a@b",
                vec![
                    Address::GroupStart(b"g".to_vec()),
                    mailbox(None, "a", "b"),
                    Address::GroupEnd,
                ],
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_addresses(value.as_bytes()), expected, "{value}");
        }
    }

    /// What we send must parse as IMAP: every fixture's BODY, BODYSTRUCTURE and ENVELOPE
    /// inside a FETCH response, through imap-codec's response parser.
    #[test]
    fn wire_output_parses_as_imap() {
        let malformed = [
            "",
            "no header at all",
            "\r\n\r\n",
            "Content-Type: multipart/mixed; boundary=x\r\n\r\nno boundary here\r\n",
            "Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n",
            "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nunterminated",
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp5DQo=\r\n",
            "Content-Type: message/rfc822\r\n\r\n",
            "Content-Type: /; ;=; \"\r\nFrom: <<<@@@>>>, \"unterminated\r\nTo: ,,,;;;:::\r\n\r\n",
            "Content-Type: text\r\nContent-Disposition: ;\r\nContent-Language: ,\r\n\r\n\0\0",
            "Subject: nul\0byte\r\nFrom: \"a\0\" <b@c>\r\n\r\n",
            "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nx\r\n--d--\r\n",
        ];
        let fixtures = [
            SIMPLE,
            MINIMAL,
            ALTERNATIVE,
            ATTACHMENT,
            NESTED,
            FORWARD,
            ENCODED_WORDS,
            GROUPS,
        ];
        for raw in fixtures.iter().chain(malformed.iter()) {
            let message = Message::parse(raw.as_bytes());
            let mut line = b"* 1 FETCH (BODY ".to_vec();
            message.write_body_structure(&mut line, false);
            line.extend_from_slice(b" BODYSTRUCTURE ");
            message.write_body_structure(&mut line, true);
            line.extend_from_slice(b" ENVELOPE ");
            message.write_envelope(&mut line);
            line.extend_from_slice(b")\r\n");
            let parsed = ResponseCodec::default().decode(&line);
            assert!(
                matches!(parsed, Ok(([], _))),
                "{parsed:?}\n{}",
                String::from_utf8_lossy(&line)
            );
            // Every section is answerable without panicking.
            for spec in [
                "",
                "HEADER",
                "TEXT",
                "1",
                "1.MIME",
                "1.HEADER",
                "2.1.TEXT",
                "HEADER.FIELDS (From)",
            ] {
                let _ = message.section(section(spec).as_ref());
            }
        }
    }

    #[test]
    fn malformed_messages_still_have_a_structure() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)"#,
            ),
            // The multipart's boundary never occurs: no parts, written as Dovecot does.
            (
                "Content-Type: multipart/mixed; boundary=x\r\n\r\nno boundary here\r\n",
                r#"(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")"#,
            ),
            // A transfer-encoded message/rfc822 cannot be walked in place.
            (
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp5DQo=\r\n",
                concat!(
                    r#"("message" "rfc822" NIL NIL NIL "base64" 26 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"#,
                    r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 1)"#
                ),
            ),
            // A digest's parts are message/rfc822 unless they say otherwise.
            (
                "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nx\r\n--d--\r\n",
                concat!(
                    r#"(("message" "rfc822" NIL NIL NIL "7bit" 23 (NIL "in digest" NIL NIL NIL NIL NIL NIL NIL NIL)"#,
                    r#" ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) 2) "digest")"#
                ),
            ),
            // Bare LF line ends count as lines.
            (
                "Subject: lf\n\none\ntwo\n",
                r#"("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 2)"#,
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(body_structure(raw, false), *expected, "message:\n{raw}");
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut raw = String::new();
        for depth in 0..500 {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{depth}\r\n\r\n--b{depth}\r\n"
            ));
        }
        raw.push_str("\r\nleaf\r\n");
        let message = Message::parse(raw.as_bytes());
        let mut out = Vec::new();
        message.write_body_structure(&mut out, true);
        assert!(out.len() > 1000);
        let _ = message.section(
            section("1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1").as_ref(),
        );
    }
}
