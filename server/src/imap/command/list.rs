//! LIST and LSUB, with CHILDREN and SPECIAL-USE attributes.

use std::collections::{BTreeMap, BTreeSet};

use imap_codec::imap_types::core::{Atom, QuotedChar};
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::Data;

use super::args::existing_mailbox_name;
use crate::imap::connection::{Connection, SessionStream};
use crate::imap::error::{CmdResult, Done};
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
fn answer<A: AsRef<str>, S: SessionStream>(
    s: &mut Connection<S>,
    lsub: bool,
    name: &str,
    attrs: &[A],
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
    s.data(if lsub {
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
    });
}

pub async fn list<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    reference: &Mailbox<'_>,
    pattern: &ListMailbox<'_>,
    lsub: bool,
) -> CmdResult {
    let account = login.user.id;
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
    if pattern.is_empty() && !lsub {
        // The hierarchy delimiter and root (RFC 3501 6.3.8).
        answer(s, false, "", &["Noselect"]);
        return Ok(Done::text("List completed."));
    }
    let mut full = reference.into_bytes();
    full.extend_from_slice(&pattern);

    let mailboxes = s.ctx.store.list_mailboxes(account).await?;
    let existing: BTreeMap<String, Option<String>> = mailboxes
        .iter()
        .map(|m| (m.name.clone(), m.special_use.clone()))
        .collect();
    // Every name and its superiors: a superior that is not a mailbox is \Noselect.
    let mut all: BTreeSet<String> = BTreeSet::new();
    for name in existing.keys() {
        let mut acc = String::new();
        for (i, part) in name.split('/').enumerate() {
            if i > 0 {
                acc.push('/');
            }
            acc.push_str(part);
            all.insert(acc.clone());
        }
    }
    let has_children = |name: &str| {
        let prefix = format!("{name}/");
        all.iter().any(|n| n.starts_with(&prefix))
    };

    let mut lines = Vec::new();
    if lsub {
        let subscribed: BTreeSet<String> = s
            .ctx
            .store
            .subscriptions(account)
            .await?
            .into_iter()
            .collect();
        let mut emitted = BTreeSet::new();
        for name in &subscribed {
            if matches_name(&full, name) {
                let mut attrs = Vec::new();
                if !existing.contains_key(name) {
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
    } else {
        for name in &all {
            if !matches_name(&full, name) {
                continue;
            }
            let mut attrs: Vec<String> = Vec::new();
            match existing.get(name) {
                Some(special) => {
                    if let Some(special) = special {
                        attrs.push(special.clone());
                    }
                }
                None => attrs.push("Noselect".into()),
            }
            attrs.push(if has_children(name) {
                "HasChildren".into()
            } else {
                "HasNoChildren".into()
            });
            lines.push((name.clone(), attrs));
        }
    }
    for (name, attrs) in lines {
        answer(s, lsub, &name, &attrs);
    }
    Ok(Done::text(if lsub {
        "Lsub completed."
    } else {
        "List completed."
    }))
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
}
