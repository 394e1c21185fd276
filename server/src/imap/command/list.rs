//! LIST and LSUB, with CHILDREN and SPECIAL-USE attributes; the extended LIST of
//! RFC 5258 (selection options SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE; several
//! patterns; return options SUBSCRIBED, CHILDREN, SPECIAL-USE) and RFC 5819's STATUS
//! return option, whose `* STATUS` follows each selectable mailbox's `* LIST` with the
//! items in the order asked (what an RCS Common Message Store client syncs with).

use std::collections::{BTreeMap, BTreeSet};

use cpmstore_storage::{Error as StoreError, Mailbox as StoredMailbox};
use imap_codec::imap_types::core::{AString, Atom, IString, Literal, QuotedChar};
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::status::StatusDataItemName;

use super::args::existing_mailbox_name;
use super::mailbox::{check_status_items, status_data};
use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::extended_list::{ExtendedList, ReturnOption};
use crate::imap::mailbox_view::MailboxView;
use crate::imap::response;
use crate::imap::state::Login;

/// Whether `name` matches the LIST pattern: `*` matches anything, `%` anything but `/`.
/// Dynamic programming over positions: O(pattern x name), whatever the pattern.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    // dp[j]: the pattern so far matches name[..j].
    let mut dp = vec![false; name.len() + 1];
    dp[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        match p {
            b'*' => {
                let mut any = false;
                for j in 0..=name.len() {
                    any |= dp[j];
                    next[j] = any;
                }
            }
            b'%' => {
                let mut any = false;
                for j in 0..=name.len() {
                    if j > 0 && name[j - 1] == b'/' {
                        any = false;
                    }
                    any |= dp[j];
                    next[j] = any;
                }
            }
            c => {
                for j in 1..=name.len() {
                    next[j] = dp[j - 1] && name[j - 1] == c;
                }
            }
        }
        dp = next;
    }
    dp[name.len()]
}

/// Matches, treating a leading `INBOX` in the name case-insensitively.
fn matches_name(pattern: &[u8], name: &str) -> bool {
    if matches(pattern, name.as_bytes()) {
        return true;
    }
    if let Some(rest) = name.strip_prefix("INBOX")
        && pattern.len() >= 5
        && pattern[..5].eq_ignore_ascii_case(b"INBOX")
    {
        let p = [b"INBOX".as_slice(), &pattern[5..]].concat();
        return matches(&p, format!("INBOX{rest}").as_bytes());
    }
    false
}

/// Queues one `* LIST` (or `* LSUB`) response: `attrs` are the name attributes without
/// their backslash (`Noselect`, `HasChildren`, a SPECIAL-USE name), the delimiter is `/`.
/// `childinfo` are the selection options a descendant satisfies (RFC 5258 CHILDINFO,
/// for RECURSIVEMATCH).
fn answer<A: AsRef<str>, S: SessionStream>(
    s: &mut Connection<S>,
    lsub: bool,
    name: &str,
    attrs: &[A],
    childinfo: &[&str],
) {
    // Attributes are ours or a stored SPECIAL-USE name (an atom when it was set); one
    // that is not an atom is left out.
    let items: Vec<FlagNameAttribute<'static>> = attrs
        .iter()
        .filter_map(|a| Atom::try_from(a.as_ref().to_owned()).ok())
        .map(FlagNameAttribute::from)
        .collect();
    let delimiter = QuotedChar::try_from('/').ok();
    // A name no stored mailbox can have on the wire (NUL in it) is left out.
    let Some(mailbox) = response::listed_mailbox(name) else {
        return;
    };
    let data = if lsub {
        Data::Lsub {
            items,
            delimiter,
            mailbox,
        }
    } else {
        Data::List {
            items,
            delimiter,
            mailbox,
        }
    };
    if childinfo.is_empty() {
        s.data(data);
        return;
    }
    // Raw escape: imap-types' `Data::List` has no field for the extended data items
    // (its `MboxListExtendedItem` is not part of the response). The line is encoded by
    // imap-codec and the item, built from our own atoms, goes before its CRLF.
    let mut line = Vec::new();
    response::push_data(&mut line, data);
    line.truncate(line.len().saturating_sub(2));
    let options: Vec<String> = childinfo.iter().map(|o| format!("\"{o}\"")).collect();
    line.extend_from_slice(format!(" (\"CHILDINFO\" ({}))\r\n", options.join(" ")).as_bytes());
    s.raw(&line);
}

/// What a LIST asks for, basic or extended (RFC 5258, 5819).
#[derive(Debug, Default)]
struct Query {
    /// Reference and pattern, joined, one per non-empty pattern.
    patterns: Vec<Vec<u8>>,
    /// An empty pattern was given: the hierarchy delimiter is asked for.
    root: bool,
    /// Selection options (REMOTE is accepted and means nothing here).
    subscribed: bool,
    special_use: bool,
    recursive: bool,
    /// The SUBSCRIBED return option: `\Subscribed` on subscribed names.
    return_subscribed: bool,
    /// The STATUS return option's items, in the order asked.
    status: Option<Vec<StatusDataItemName>>,
}

/// LIST (RFC 3501) and LSUB.
pub async fn list<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    reference: &Mailbox<'_>,
    pattern: &ListMailbox<'_>,
    lsub: bool,
) -> CmdResult {
    let reference = match reference {
        Mailbox::Inbox => "INBOX".to_string(),
        // LIST only matches stored names, so the reference and the pattern are not
        // checked as modified UTF-7: a malformed one matches nothing new, and names
        // stored before the check stay visible so that clients can clean them up.
        other => existing_mailbox_name(other)?,
    };
    let pattern: Vec<u8> = match pattern {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(st) => st.as_ref().to_vec(),
    };
    if !lsub {
        let query = Query {
            root: pattern.is_empty(),
            patterns: joined(&reference, &[pattern]),
            ..Query::default()
        };
        return run(s, login, None, &query).await;
    }
    let mut full = reference.into_bytes();
    full.extend_from_slice(&pattern);
    let account = login.user.id;
    let subscribed: BTreeSet<String> = s
        .ctx
        .store
        .subscriptions(account)
        .await?
        .into_iter()
        .collect();
    let existing: BTreeSet<String> = s
        .ctx
        .store
        .list_mailboxes(account)
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    let mut lines = Vec::new();
    let mut emitted = BTreeSet::new();
    for name in &subscribed {
        if matches_name(&full, name) {
            let mut attrs = Vec::new();
            if !existing.contains(name) {
                attrs.push("Noselect".to_string());
            }
            emitted.insert(name.clone());
            lines.push((name.clone(), attrs));
        } else if full.last() == Some(&b'%') {
            // A `%` that stops at a superior of a subscribed name lists that superior
            // as \Noselect (RFC 3501 6.3.9).
            let parts: Vec<&str> = name.split('/').collect();
            for depth in 1..parts.len() {
                let parent = parts[..depth].join("/");
                if matches_name(&full, &parent)
                    && !subscribed.contains(&parent)
                    && emitted.insert(parent.clone())
                {
                    lines.push((parent, vec!["Noselect".to_string()]));
                }
            }
        }
    }
    for (name, attrs) in lines {
        answer(s, true, &name, &attrs, &[]);
    }
    Ok(Done::text("Lsub completed."))
}

/// Each non-empty pattern with the reference before it.
fn joined(reference: &str, patterns: &[Vec<u8>]) -> Vec<Vec<u8>> {
    patterns
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| [reference.as_bytes(), p].concat())
        .collect()
}

/// The extended LIST (RFC 5258) with LIST-STATUS (RFC 5819); `view` is the selected
/// mailbox, if any (for STATUS RECENT and CONDSTORE's HIGHESTMODSEQ).
pub async fn list_extended<S: SessionStream>(
    s: &mut Connection<S>,
    login: &mut Login,
    view: Option<&MailboxView>,
    args: &ExtendedList,
) -> CmdResult {
    let mut query = Query::default();
    for option in &args.selection {
        match option.as_str() {
            "SUBSCRIBED" => query.subscribed = true,
            "SPECIAL-USE" => query.special_use = true,
            "RECURSIVEMATCH" => query.recursive = true,
            // Every mailbox here is local.
            "REMOTE" => {}
            other => {
                return Err(CmdError::bad(format!(
                    "Unknown LIST selection option {other}."
                )));
            }
        }
    }
    if query.recursive && !query.subscribed && !query.special_use {
        return Err(CmdError::bad(
            "RECURSIVEMATCH needs another selection option (SUBSCRIBED or SPECIAL-USE).",
        ));
    }
    for option in &args.returns {
        match option {
            ReturnOption::Plain(name) => match name.as_str() {
                "SUBSCRIBED" => query.return_subscribed = true,
                // Children and special-use attributes are always given.
                "CHILDREN" | "SPECIAL-USE" => {}
                other => {
                    return Err(CmdError::bad(format!(
                        "Unknown LIST return option {other}."
                    )));
                }
            },
            ReturnOption::Status(names) => {
                let items = names
                    .iter()
                    .map(|name| status_item(name))
                    .collect::<CmdResult<Vec<_>>>()?;
                check_status_items(&items)?;
                query.status = Some(items);
            }
        }
    }
    // The reference as LIST's (not checked as modified UTF-7; see `list`).
    let reference = Literal::try_from(args.reference.clone())
        .map_err(|_| CmdError::bad("Invalid reference name."))?;
    let reference =
        existing_mailbox_name(&Mailbox::from(AString::String(IString::Literal(reference))))?;
    query.root = args.patterns.iter().any(Vec::is_empty);
    query.patterns = joined(&reference, &args.patterns);
    if query
        .status
        .as_ref()
        .is_some_and(|items| items.contains(&StatusDataItemName::HighestModSeq))
    {
        // STATUS HIGHESTMODSEQ enables CONDSTORE (RFC 7162 3.1), here as in STATUS.
        login.enable_condstore(view, &mut s.out);
    }
    run(s, login, view, &query).await
}

/// A STATUS item's name as LIST's STATUS return option gives it.
fn status_item(name: &str) -> CmdResult<StatusDataItemName> {
    use StatusDataItemName as N;
    Ok(match name {
        "MESSAGES" => N::Messages,
        "RECENT" => N::Recent,
        "UIDNEXT" => N::UidNext,
        "UIDVALIDITY" => N::UidValidity,
        "UNSEEN" => N::Unseen,
        "DELETED" => N::Deleted,
        "DELETED-STORAGE" => N::DeletedStorage,
        "SIZE" => N::Size,
        "HIGHESTMODSEQ" => N::HighestModSeq,
        _ => return Err(CmdError::bad(format!("Unknown STATUS item {name}."))),
    })
}

/// Answers a LIST: every name matching a pattern and the selection options, once, in
/// name order, each followed by its STATUS when asked and the mailbox is selectable.
async fn run<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    view: Option<&MailboxView>,
    query: &Query,
) -> CmdResult {
    let account = login.user.id;
    if query.root {
        // The hierarchy delimiter and root (RFC 3501 6.3.8).
        answer(s, false, "", &["Noselect"], &[]);
    }
    if query.patterns.is_empty() {
        return Ok(Done::text("List completed."));
    }
    let mailboxes = s.ctx.store.list_mailboxes(account).await?;
    let existing: BTreeMap<&str, &StoredMailbox> =
        mailboxes.iter().map(|m| (m.name.as_str(), m)).collect();
    // Every name and its superiors: a superior that is not a mailbox is \Noselect.
    let mut all: BTreeSet<String> = BTreeSet::new();
    for name in existing.keys() {
        add_with_superiors(&mut all, name);
    }
    let subscribed: BTreeSet<String> = if query.subscribed || query.return_subscribed {
        s.ctx
            .store
            .subscriptions(account)
            .await?
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    // The names that may be listed: the hierarchy, and with SUBSCRIBED the subscribed
    // names (and their superiors, for RECURSIVEMATCH), mailboxes or not.
    let mut candidates = all.clone();
    if query.subscribed {
        for name in &subscribed {
            if query.recursive {
                add_with_superiors(&mut candidates, name);
            } else {
                candidates.insert(name.clone());
            }
        }
    }
    let selected = |name: &str| {
        (!query.subscribed || subscribed.contains(name))
            && (!query.special_use || existing.get(name).is_some_and(|m| m.special_use.is_some()))
    };
    let matched = |name: &str| query.patterns.iter().any(|p| matches_name(p, name));
    let mut childinfo: Vec<&str> = Vec::new();
    if query.subscribed {
        childinfo.push("SUBSCRIBED");
    }
    if query.special_use {
        childinfo.push("SPECIAL-USE");
    }
    for name in &candidates {
        if !matched(name) {
            continue;
        }
        // RECURSIVEMATCH: a descendant that satisfies the selection but is not listed
        // itself is told as CHILDINFO on this name (RFC 5258 3.5).
        let prefix = format!("{name}/");
        let child_selected = query.recursive
            && candidates
                .range(prefix.clone()..)
                .take_while(|d| d.starts_with(&prefix))
                .any(|d| selected(d) && !matched(d));
        if !selected(name) && !child_selected {
            continue;
        }
        let mailbox = existing.get(name.as_str()).copied();
        let mut attrs: Vec<String> = Vec::new();
        match mailbox {
            Some(m) => attrs.extend(m.special_use.clone()),
            None if all.contains(name) => attrs.push("Noselect".into()),
            None => attrs.push("NonExistent".into()),
        }
        if (query.subscribed || query.return_subscribed) && subscribed.contains(name) {
            attrs.push("Subscribed".into());
        }
        if all.contains(name) {
            let children = all
                .range(prefix.clone()..)
                .next()
                .is_some_and(|n| n.starts_with(&prefix));
            attrs.push(
                if children {
                    "HasChildren"
                } else {
                    "HasNoChildren"
                }
                .into(),
            );
        }
        answer(
            s,
            false,
            name,
            &attrs,
            if child_selected { &childinfo } else { &[] },
        );
        if let (Some(items), Some(mailbox)) = (&query.status, mailbox) {
            // A mailbox whose status cannot be had (deleted meanwhile) gets none
            // (RFC 5819: STATUS is for the selectable mailboxes listed).
            match status_data(s, view, mailbox, items).await {
                Ok(data) => s.data(data),
                Err(CmdError::Store(StoreError::NotFound(_)) | CmdError::No { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        s.maybe_flush().await?;
    }
    Ok(Done::text("List completed."))
}

/// Adds `name` and each of its superiors to `set`.
fn add_with_superiors(set: &mut BTreeSet<String>, name: &str) {
    let mut at = 0;
    while let Some(slash) = name[at..].find('/') {
        set.insert(name[..at + slash].to_string());
        at += slash + 1;
    }
    set.insert(name.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "a/b/c", true),
            ("%", "a", true),
            ("%", "a/b", false),
            ("a/%", "a/b", true),
            ("a/%", "a/b/c", false),
            ("a*c", "a/b/c", true),
            ("a%c", "a/b/c", false),
            ("%/%", "a/b", true),
            ("Sent", "Sent", true),
            ("sent", "Sent", false),
            (
                "*a*a*a*a*a*a*a*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ];
        for (p, n, want) in cases {
            assert_eq!(matches(p.as_bytes(), n.as_bytes()), *want, "{p} vs {n}");
        }
        assert!(matches_name(b"inbox", "INBOX"));
        assert!(matches_name(b"iNbOx/%", "INBOX/x"));
    }
}

#[cfg(test)]
mod table_tests {
    use crate::imap::harness::Start;
    use crate::imap::testing::table;

    #[tokio::test]
    async fn list_and_lsub() {
        table(
            Start::Authenticated,
            &[
                (
                    &[
                        "a LIST \"\" \"\"",
                        "b LIST \"\" INBOX",
                        "c LIST \"\" Nothing*",
                    ],
                    &[
                        "* LIST (\\Noselect) \"/\" \"\"",
                        "a OK List completed.",
                        "* LIST (\\HasNoChildren) \"/\" INBOX",
                        "b OK List completed.",
                        "c OK List completed.",
                    ],
                ),
                (
                    &["a LSUB \"\" INBOX"],
                    &["* LSUB () \"/\" INBOX", "a OK Lsub completed."],
                ),
            ],
        )
        .await;
    }

    /// LIST-STATUS as an RCS Common Message Store client uses it (one `* STATUS` after
    /// each selectable mailbox, items in the order asked), several patterns, and
    /// errors.
    #[tokio::test]
    async fn list_status_and_patterns() {
        table(
            Start::Authenticated,
            &[(
                &[
                    "a CREATE RCSMessageStore/tel:+15551234567",
                    "b CREATE RCSMessageStore/conv-1/sess-1",
                    "c LIST \"\" \"RCSMessageStore/*\" RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ))",
                    "d LIST \"\" RCSMessageStore/% RETURN (STATUS (UIDVALIDITY MESSAGES))",
                    "e LIST \"\" (\"INBOX\" Arch* \"Sent\" \"Ar%\") RETURN (STATUS (UNSEEN MESSAGES RECENT))",
                    "f LIST \"\" (\"\" INBOX)",
                    "g LIST () \"\" \"Nothing*\" RETURN ()",
                    "h LIST (RECURSIVEMATCH) \"\" *",
                    "i LIST (FOO) \"\" *",
                    "j LIST \"\" * RETURN (STATUS (SIZE))",
                    "k LIST \"\" * RETURN (STATUS (FOO))",
                    "l LIST \"\" * RETURN (FOO)",
                    "m LIST \"\" * RETURN (STATUS ())",
                ],
                &[
                    "a OK Create completed.",
                    "b OK Create completed.",
                    "* LIST (\\HasChildren) \"/\" \"RCSMessageStore/conv-1\"",
                    "* STATUS \"RCSMessageStore/conv-1\" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY ... HIGHESTMODSEQ ...)",
                    "* LIST (\\HasNoChildren) \"/\" \"RCSMessageStore/conv-1/sess-1\"",
                    "* STATUS \"RCSMessageStore/conv-1/sess-1\" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY ... HIGHESTMODSEQ ...)",
                    "* LIST (\\HasNoChildren) \"/\" \"RCSMessageStore/tel:+15551234567\"",
                    "* STATUS \"RCSMessageStore/tel:+15551234567\" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY ... HIGHESTMODSEQ ...)",
                    "c OK List completed.",
                    "* LIST (\\HasChildren) \"/\" \"RCSMessageStore/conv-1\"",
                    "* STATUS \"RCSMessageStore/conv-1\" (UIDVALIDITY ... MESSAGES 0)",
                    "* LIST (\\HasNoChildren) \"/\" \"RCSMessageStore/tel:+15551234567\"",
                    "* STATUS \"RCSMessageStore/tel:+15551234567\" (UIDVALIDITY ... MESSAGES 0)",
                    "d OK List completed.",
                    "* LIST (\\Archive \\HasNoChildren) \"/\" \"Archive\"",
                    "* STATUS \"Archive\" (UNSEEN 0 MESSAGES 1 RECENT 0)",
                    "* LIST (\\HasNoChildren) \"/\" INBOX",
                    "* STATUS INBOX (UNSEEN 2 MESSAGES 3 RECENT 0)",
                    "* LIST (\\Sent \\HasNoChildren) \"/\" \"Sent\"",
                    "* STATUS \"Sent\" (UNSEEN 0 MESSAGES 0 RECENT 0)",
                    "e OK List completed.",
                    "* LIST (\\Noselect) \"/\" \"\"",
                    "* LIST (\\HasNoChildren) \"/\" INBOX",
                    "f OK List completed.",
                    "g OK List completed.",
                    "h BAD RECURSIVEMATCH needs another selection option (SUBSCRIBED or SPECIAL-USE).",
                    "i BAD Unknown LIST selection option FOO.",
                    "j BAD Unsupported STATUS item.",
                    "k BAD Unknown STATUS item FOO.",
                    "l BAD Unknown LIST return option FOO.",
                    "m BAD Error in IMAP command: could not parse it.",
                ],
            )],
        )
        .await;
    }

    /// Selection options (SUBSCRIBED with \NonExistent names, RECURSIVEMATCH's
    /// CHILDINFO, SPECIAL-USE, REMOTE) and the SUBSCRIBED return option.
    #[tokio::test]
    async fn list_extended_selection() {
        table(
            Start::Authenticated,
            &[(
                &[
                    "a CREATE Work/2026/q1",
                    "b SUBSCRIBE Work/2026/q1",
                    "c CREATE Gone",
                    "d SUBSCRIBE Gone",
                    "e DELETE Gone",
                    "f LIST (SUBSCRIBED) \"\" \"*\"",
                    "g LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"",
                    "h LIST (SUBSCRIBED REMOTE RECURSIVEMATCH) \"Work/\" \"%\"",
                    "i LIST (SPECIAL-USE) \"\" \"*\" RETURN (SPECIAL-USE)",
                    "j LIST \"\" \"W*\" RETURN (SUBSCRIBED CHILDREN)",
                    "k LIST (SUBSCRIBED) \"\" (\"G*\" \"\") RETURN (STATUS (MESSAGES))",
                ],
                &[
                    "a OK Create completed.",
                    "b OK Subscribe completed.",
                    "c OK Create completed.",
                    "d OK Subscribe completed.",
                    "e OK Delete completed.",
                    "* LIST (\\Archive \\Subscribed \\HasNoChildren) \"/\" \"Archive\"",
                    "* LIST (\\Drafts \\Subscribed \\HasNoChildren) \"/\" \"Drafts\"",
                    "* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\"",
                    "* LIST (\\Subscribed \\HasNoChildren) \"/\" INBOX",
                    "* LIST (\\Junk \\Subscribed \\HasNoChildren) \"/\" \"Junk\"",
                    "* LIST (\\Sent \\Subscribed \\HasNoChildren) \"/\" \"Sent\"",
                    "* LIST (\\Trash \\Subscribed \\HasNoChildren) \"/\" \"Trash\"",
                    "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Work/2026/q1\"",
                    "f OK List completed.",
                    "* LIST (\\Archive \\Subscribed \\HasNoChildren) \"/\" \"Archive\"",
                    "* LIST (\\Drafts \\Subscribed \\HasNoChildren) \"/\" \"Drafts\"",
                    "* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\"",
                    "* LIST (\\Subscribed \\HasNoChildren) \"/\" INBOX",
                    "* LIST (\\Junk \\Subscribed \\HasNoChildren) \"/\" \"Junk\"",
                    "* LIST (\\Sent \\Subscribed \\HasNoChildren) \"/\" \"Sent\"",
                    "* LIST (\\Trash \\Subscribed \\HasNoChildren) \"/\" \"Trash\"",
                    "* LIST (\\HasChildren) \"/\" \"Work\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
                    "g OK List completed.",
                    "* LIST (\\HasChildren) \"/\" \"Work/2026\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
                    "h OK List completed.",
                    "* LIST (\\Archive \\HasNoChildren) \"/\" \"Archive\"",
                    "* LIST (\\Drafts \\HasNoChildren) \"/\" \"Drafts\"",
                    "* LIST (\\Junk \\HasNoChildren) \"/\" \"Junk\"",
                    "* LIST (\\Sent \\HasNoChildren) \"/\" \"Sent\"",
                    "* LIST (\\Trash \\HasNoChildren) \"/\" \"Trash\"",
                    "i OK List completed.",
                    "* LIST (\\HasChildren) \"/\" \"Work\"",
                    "* LIST (\\HasChildren) \"/\" \"Work/2026\"",
                    "* LIST (\\Subscribed \\HasNoChildren) \"/\" \"Work/2026/q1\"",
                    "j OK List completed.",
                    // No STATUS for a name that is no mailbox.
                    "* LIST (\\Noselect) \"/\" \"\"",
                    "* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\"",
                    "k OK List completed.",
                ],
            )],
        )
        .await;
    }

    /// In the selected state: STATUS RECENT is the session's, and HIGHESTMODSEQ enables
    /// CONDSTORE (told with the selected mailbox's HIGHESTMODSEQ, as STATUS does).
    #[tokio::test]
    async fn list_status_when_selected() {
        table(
            Start::Selected { read_only: false },
            &[(
                &[
                    "a LIST \"\" (INBOX Archive) RETURN (STATUS (RECENT HIGHESTMODSEQ))",
                    "b LIST \"\" INBOX RETURN (STATUS (HIGHESTMODSEQ))",
                ],
                &[
                    "* OK [HIGHESTMODSEQ ...] Highest",
                    "* LIST (\\Archive \\HasNoChildren) \"/\" \"Archive\"",
                    "* STATUS \"Archive\" (RECENT 0 HIGHESTMODSEQ ...)",
                    "* LIST (\\HasNoChildren) \"/\" INBOX",
                    "* STATUS INBOX (RECENT 0 HIGHESTMODSEQ ...)",
                    "a OK List completed.",
                    "* LIST (\\HasNoChildren) \"/\" INBOX",
                    "* STATUS INBOX (HIGHESTMODSEQ ...)",
                    "b OK List completed.",
                ],
            )],
        )
        .await;
        table(
            Start::NotAuthenticated,
            &[(
                &["a LIST \"\" * RETURN (CHILDREN)"],
                &["a BAD Command not allowed before login."],
            )],
        )
        .await;
    }
}
