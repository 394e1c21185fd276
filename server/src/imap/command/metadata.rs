//! RFC 5464 METADATA: GETMETADATA and SETMETADATA, on server entries (mailbox `""`,
//! account-wide) and mailbox entries (what Sony's CPM client keeps in a folder's
//! `/private/comment`).
//!
//! - Entry names (RFC 5464 3.2) start with `/private` or `/shared`, have no empty level
//!   (`//`), no trailing `/`, no `*` or `%`, no control characters; anything else is
//!   `BAD`, as the RFC asks. They compare case-insensitively and are answered in lower
//!   case. A store has one user per account, so `/private` and `/shared` behave alike
//!   (two separate trees, both the owner's).
//! - Values are bytes (a quoted string, a literal or a `literal8`); `NIL` removes an
//!   entry. A value over [`MAX_VALUE_BYTES`] is refused with
//!   `NO [METADATA MAXSIZE n]`, a new entry past [`MAX_ENTRIES`] of one mailbox (or of
//!   the server) with `NO [METADATA TOOMANY]`; then nothing of the command is set.
//! - GETMETADATA answers one `* METADATA` line: each entry asked for that is set, and
//!   the ones below it down to `DEPTH`; an entry asked for with nothing set (neither
//!   it nor below it) is answered `NIL` (clients such as Sony's read exactly one
//!   `* METADATA` line); values over `MAXSIZE` are left out and the tagged OK says
//!   `[METADATA LONGENTRIES n]`, n the largest left out.
//! - SETMETADATA on a mailbox raises its HIGHESTMODSEQ (storage does it in the same
//!   transaction), so a CONDSTORE client's STATUS or SELECT sees the folder changed.

use std::borrow::Cow;

use cpmstore_storage::{Error as StoreError, MailboxId, MetadataDepth, MetadataWrite};
use imap_codec::imap_types::core::{
    AString, AtomExt, IString, Literal, LiteralMode, NString, Quoted,
};
use imap_codec::imap_types::core::{NString8, Vec1};
use imap_codec::imap_types::extensions::binary::Literal8;
use imap_codec::imap_types::extensions::metadata::{
    Depth, Entry, EntryValue, GetMetadataOption, MetadataCode, MetadataResponse,
};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, Data};

use super::args::existing_mailbox_name;
use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::response;
use crate::imap::state::Login;

/// The largest value SETMETADATA accepts, in bytes. Below `limits.max_command_bytes`
/// (64 KiB by default), which bounds a whole SETMETADATA command: a larger literal is
/// refused before it is sent, with `NO [TOOBIG]`.
pub const MAX_VALUE_BYTES: u32 = 32 * 1024;

/// The most entries one mailbox, or the server (per account), may hold.
pub const MAX_ENTRIES: usize = 100;

/// The longest entry name, in bytes.
const MAX_ENTRY_NAME: usize = 1024;

/// GETMETADATA [options] mailbox entries.
pub async fn get<S: SessionStream>(
    c: &mut Connection<S>,
    login: &Login,
    options: &[GetMetadataOption],
    mailbox: &Mailbox<'_>,
    entries: &Vec1<Entry<'_>>,
) -> CmdResult {
    let mut max_size = None;
    let mut depth = MetadataDepth::Entry;
    for option in options {
        match option {
            GetMetadataOption::MaxSize(n) => max_size = Some(*n),
            GetMetadataOption::Depth(d) => {
                depth = match d {
                    Depth::Null => MetadataDepth::Entry,
                    Depth::One => MetadataDepth::Children,
                    Depth::Infinity => MetadataDepth::All,
                }
            }
        }
    }
    let names = entries
        .as_ref()
        .iter()
        .map(|entry| entry_name(entry, false))
        .collect::<CmdResult<Vec<_>>>()?;
    let (owner, wire) = resolve(c, login, mailbox).await?;
    let mut answered: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut longest_left_out: Option<u32> = None;
    for name in names {
        let found = c
            .ctx
            .store
            .metadata_below(login.user.id, owner, &name, depth)
            .await
            .map_err(not_found_is_nonexistent)?;
        if found.is_empty() && !answered.iter().any(|(seen, _)| *seen == name) {
            answered.push((name, None));
            continue;
        }
        for (entry, value) in found {
            if answered.iter().any(|(seen, _)| *seen == entry) {
                continue;
            }
            let size = u32::try_from(value.len()).unwrap_or(u32::MAX);
            if max_size.is_some_and(|max| size > max) {
                longest_left_out = longest_left_out.max(Some(size));
                continue;
            }
            answered.push((entry, Some(value)));
        }
    }
    let items = answered
        .into_iter()
        .map(|(entry, value)| {
            Ok(EntryValue {
                entry: wire_entry(entry)?,
                value: wire_value(value)?,
            })
        })
        .collect::<CmdResult<Vec<_>>>()?;
    if let Ok(items) = Vec1::try_from(items) {
        c.data(Data::Metadata {
            mailbox: wire,
            items: MetadataResponse::WithValues(items),
        });
    }
    Ok(match longest_left_out {
        Some(n) => Done::with_code(
            Code::Metadata(MetadataCode::LongEntries(n)),
            "GETMETADATA completed.",
        ),
        None => Done::text("GETMETADATA completed."),
    })
}

/// SETMETADATA mailbox (entry value ...): all the entries or none.
pub async fn set<S: SessionStream>(
    c: &mut Connection<S>,
    login: &Login,
    mailbox: &Mailbox<'_>,
    entry_values: &Vec1<EntryValue<'_>>,
) -> CmdResult {
    let mut writes = Vec::new();
    for EntryValue { entry, value } in entry_values.as_ref() {
        let name = entry_name(entry, true)?;
        let value = value_bytes(value);
        if value
            .as_ref()
            .is_some_and(|v| v.len() > MAX_VALUE_BYTES as usize)
        {
            return Err(CmdError::metadata(
                MetadataCode::MaxSize(MAX_VALUE_BYTES),
                format!("Metadata values are limited to {MAX_VALUE_BYTES} bytes."),
            ));
        }
        writes.push((name, value));
    }
    let (owner, _) = resolve(c, login, mailbox).await?;
    let written = c
        .ctx
        .store
        .set_metadata_entries(login.user.id, owner, &writes, MAX_ENTRIES)
        .await
        .map_err(not_found_is_nonexistent)?;
    match written {
        MetadataWrite::Written => Ok(Done::text("SETMETADATA completed.")),
        MetadataWrite::TooMany => Err(CmdError::metadata(
            MetadataCode::TooMany,
            format!("At most {MAX_ENTRIES} metadata entries per mailbox and per server."),
        )),
    }
}

/// The owner of the entries: the server for `""`, else an existing mailbox
/// (`NO [NONEXISTENT]` otherwise); and the mailbox as the response names it.
async fn resolve<S: SessionStream>(
    c: &mut Connection<S>,
    login: &Login,
    mailbox: &Mailbox<'_>,
) -> CmdResult<(Option<MailboxId>, Mailbox<'static>)> {
    let name = existing_mailbox_name(mailbox)?;
    if name.is_empty() {
        let wire = response::listed_mailbox("").ok_or_else(CmdError::nonexistent)?;
        return Ok((None, wire));
    }
    let mb = c
        .ctx
        .store
        .mailbox(login.user.id, &name)
        .await
        .map_err(not_found_is_nonexistent)?;
    let wire = response::wire_mailbox(&mb.name).ok_or_else(CmdError::nonexistent)?;
    Ok((Some(mb.id), wire))
}

/// A mailbox gone (also between the lookup and the read or write) is `NONEXISTENT`.
fn not_found_is_nonexistent(e: StoreError) -> CmdError {
    match e {
        StoreError::NotFound(_) => CmdError::nonexistent(),
        other => other.into(),
    }
}

/// An entry name checked as RFC 5464 3.2 asks, in lower case; `BAD` saying why if it
/// is not one. `to_set`: the name of an entry to set, which must be below `/private`
/// or `/shared`, not one of them.
fn entry_name(entry: &Entry<'_>, to_set: bool) -> CmdResult<String> {
    let bad = |why: &str| CmdError::bad(format!("Invalid metadata entry name: {why}."));
    let name = std::str::from_utf8(entry.as_ref()).map_err(|_| bad("not UTF-8"))?;
    if name.len() > MAX_ENTRY_NAME {
        return Err(bad("too long"));
    }
    if name.chars().any(|ch| ch.is_control()) {
        return Err(bad("control character"));
    }
    if name.contains(['*', '%']) {
        return Err(bad("'*' and '%' are not allowed"));
    }
    if name.contains("//") {
        return Err(bad("empty level"));
    }
    if name.ends_with('/') {
        return Err(bad("trailing '/'"));
    }
    let name = name.to_ascii_lowercase();
    let below = ["/private", "/shared"].iter().find_map(|root| {
        let rest = name.strip_prefix(root)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    });
    match below {
        None => Err(bad("must start with /private or /shared")),
        Some("") if to_set => Err(bad("/private and /shared themselves cannot be set")),
        Some(_) => Ok(name),
    }
}

/// A value from the wire as bytes; `None` for NIL.
fn value_bytes(value: &NString8<'_>) -> Option<Vec<u8>> {
    match value {
        NString8::NString(NString(None)) => None,
        NString8::NString(NString(Some(string))) => Some(match string {
            IString::Quoted(quoted) => quoted.inner().as_bytes().to_vec(),
            IString::Literal(literal) => literal.as_ref().to_vec(),
        }),
        NString8::Literal8(literal) => Some(literal.data.to_vec()),
    }
}

/// An entry name for a response: an atom as in RFC 5464's examples
/// (`/private/comment`, which clients such as Sony's look for), else quoted, else a
/// literal (a UTF-8 name quoting cannot carry).
fn wire_entry(name: String) -> CmdResult<Entry<'static>> {
    let unsendable = || CmdError::no("Metadata entry name cannot be sent.");
    let astring = if let Ok(atom) = AtomExt::try_from(name.clone()) {
        AString::Atom(atom)
    } else if let Ok(quoted) = Quoted::try_from(name.clone()) {
        AString::String(IString::Quoted(quoted))
    } else {
        let literal = Literal::try_from(name.into_bytes()).map_err(|_| unsendable())?;
        AString::String(IString::Literal(literal))
    };
    Entry::try_from(astring).map_err(|_| unsendable())
}

/// A value for a response: NIL, a quoted string when it can be one (what simple
/// clients parse), a literal, or a `literal8` for bytes a literal cannot carry (NUL).
fn wire_value(value: Option<Vec<u8>>) -> CmdResult<NString8<'static>> {
    let Some(value) = value else {
        return Ok(NString8::NString(NString(None)));
    };
    let printable = value.len() < 1024 && value.iter().all(|b| (0x20..0x7f).contains(b));
    if printable
        && let Ok(text) = String::from_utf8(value.clone())
        && let Ok(quoted) = Quoted::try_from(text)
    {
        return Ok(NString8::NString(NString(Some(IString::Quoted(quoted)))));
    }
    if !value.contains(&0)
        && let Ok(literal) = Literal::try_from(value.clone())
    {
        return Ok(NString8::NString(NString(Some(IString::Literal(literal)))));
    }
    Ok(NString8::Literal8(Literal8 {
        data: Cow::Owned(value),
        mode: LiteralMode::Sync,
    }))
}

#[cfg(test)]
mod tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn metadata_commands() {
        let big = "x".repeat(40_000);
        let set_big = format!("a SETMETADATA INBOX (/private/big {{{}}}", big.len());
        let big_line = format!("{big})");
        table(
            Start::Authenticated,
            &[
                // Set, read back, remove with NIL; server entries under "".
                (
                    &[
                        "a SETMETADATA Archive (/private/comment \"My comment\" /shared/comment \"Shared\")",
                        "b GETMETADATA Archive /private/comment",
                        "c GETMETADATA Archive (/PRIVATE/Comment /shared/comment /private/none)",
                        "d SETMETADATA Archive (/private/comment NIL)",
                        "e GETMETADATA Archive /private/comment",
                        "f SETMETADATA \"\" (/shared/comment {5}",
                        "hello)",
                        "g GETMETADATA \"\" (/shared/comment /private/comment)",
                    ],
                    &[
                        "a OK SETMETADATA completed.",
                        "* METADATA \"Archive\" (/private/comment \"My comment\")",
                        "b OK GETMETADATA completed.",
                        "* METADATA \"Archive\" (/private/comment \"My comment\" \
                         /shared/comment \"Shared\" /private/none NIL)",
                        "c OK GETMETADATA completed.",
                        "d OK SETMETADATA completed.",
                        "* METADATA \"Archive\" (/private/comment NIL)",
                        "e OK GETMETADATA completed.",
                        "+ Ready for literal data",
                        "f OK SETMETADATA completed.",
                        "* METADATA \"\" (/shared/comment \"hello\" /private/comment NIL)",
                        "g OK GETMETADATA completed.",
                    ],
                ),
                // DEPTH and MAXSIZE.
                (
                    &[
                        "a SETMETADATA INBOX (/private/v \"top\" /private/v/a \"1\" /private/v/a/b \"22\" /private/vx \"no\")",
                        "b GETMETADATA (DEPTH 1) INBOX /private/v",
                        "c GETMETADATA (DEPTH infinity) INBOX /private/v",
                        "d GETMETADATA (DEPTH 0) INBOX /private/v",
                        "e GETMETADATA (MAXSIZE 1 DEPTH infinity) INBOX /private/v",
                        "f GETMETADATA (MAXSIZE 0) INBOX /private/v",
                    ],
                    &[
                        "a OK SETMETADATA completed.",
                        "* METADATA INBOX (/private/v \"top\" /private/v/a \"1\")",
                        "b OK GETMETADATA completed.",
                        "* METADATA INBOX (/private/v \"top\" /private/v/a \"1\" /private/v/a/b \"22\")",
                        "c OK GETMETADATA completed.",
                        "* METADATA INBOX (/private/v \"top\")",
                        "d OK GETMETADATA completed.",
                        "* METADATA INBOX (/private/v/a \"1\")",
                        "e OK [METADATA LONGENTRIES 3] GETMETADATA completed.",
                        "f OK [METADATA LONGENTRIES 3] GETMETADATA completed.",
                    ],
                ),
                // Limits: value size, then nothing of the command is set.
                (
                    &[
                        &set_big,
                        &big_line,
                        "b GETMETADATA INBOX /private/big",
                    ],
                    &[
                        "+ Ready for literal data",
                        "a NO [METADATA MAXSIZE 32768] Metadata values are limited to 32768 bytes.",
                        "* METADATA INBOX (/private/big NIL)",
                        "b OK GETMETADATA completed.",
                    ],
                ),
                // Sony's CPM client leaves out the list's closing parenthesis
                // (codec.rs reads it as if it were there); other malformed lines stay BAD.
                (
                    &[
                        "a SETMETADATA Archive (/private/comment \"Sony comment\"",
                        "b GETMETADATA \"Archive\" /private/comment",
                        "c SETMETADATA Archive (/private/comment",
                        "d SETMETADATA Archive (/private/comment \"x\") extra",
                    ],
                    &[
                        "a OK SETMETADATA completed.",
                        "* METADATA \"Archive\" (/private/comment \"Sony comment\")",
                        "b OK GETMETADATA completed.",
                        "c BAD...",
                        "d BAD...",
                    ],
                ),
                // Invalid names are BAD (RFC 5464 3.2); a missing mailbox NONEXISTENT.
                (
                    &[
                        "a GETMETADATA INBOX /comment",
                        "b SETMETADATA INBOX (/private//x \"v\")",
                        "c SETMETADATA INBOX (/private/x/ \"v\")",
                        "d GETMETADATA INBOX \"/private/*\"",
                        "e GETMETADATA INBOX \"/private/50%\"",
                        "f SETMETADATA INBOX (/private \"v\")",
                        "g SETMETADATA INBOX (/privatex/y \"v\")",
                        "h GETMETADATA Nowhere /private/comment",
                        "i SETMETADATA Nowhere (/private/comment \"v\")",
                        "j GETMETADATA INBOX /private",
                    ],
                    &[
                        "a BAD Invalid metadata entry name: must start with /private or /shared.",
                        "b BAD Invalid metadata entry name: empty level.",
                        "c BAD Invalid metadata entry name: trailing '/'.",
                        "d BAD Invalid metadata entry name: '*' and '%' are not allowed.",
                        "e BAD Invalid metadata entry name: '*' and '%' are not allowed.",
                        "f BAD Invalid metadata entry name: /private and /shared themselves cannot be set.",
                        "g BAD Invalid metadata entry name: must start with /private or /shared.",
                        "h NO [NONEXISTENT] Mailbox doesn't exist",
                        "i NO [NONEXISTENT] Mailbox doesn't exist",
                        "* METADATA INBOX (/private NIL)",
                        "j OK GETMETADATA completed.",
                    ],
                ),
            ],
        )
        .await;
    }

    /// The entry limit: the 101st entry of a mailbox is refused, and so is the whole
    /// command that would add it; replacing an entry at the limit still works.
    #[tokio::test]
    async fn too_many_entries() {
        let fill: Vec<String> = (0..super::MAX_ENTRIES)
            .map(|i| format!("/private/e{i} \"v\""))
            .collect();
        let fill = format!("a SETMETADATA Archive ({})", fill.join(" "));
        table(
            Start::Authenticated,
            &[(
                &[
                    &fill,
                    "b SETMETADATA Archive (/private/e0 \"new\" /private/one-more \"v\")",
                    "c GETMETADATA Archive (/private/e0 /private/one-more)",
                    "d SETMETADATA Archive (/private/e0 \"new\")",
                    "e SETMETADATA \"\" (/private/server \"still fine\")",
                    "f GETMETADATA Archive /private/e0",
                ],
                &[
                    "a OK SETMETADATA completed.",
                    "b NO [METADATA TOOMANY] At most 100 metadata entries per mailbox and per server.",
                    "* METADATA \"Archive\" (/private/e0 \"v\" /private/one-more NIL)",
                    "c OK GETMETADATA completed.",
                    "d OK SETMETADATA completed.",
                    "e OK SETMETADATA completed.",
                    "* METADATA \"Archive\" (/private/e0 \"new\")",
                    "f OK GETMETADATA completed.",
                ],
            )],
        )
        .await;
    }
}
