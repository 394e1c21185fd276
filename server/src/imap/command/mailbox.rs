//! CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, STATUS.

use std::num::NonZeroU32;

use cpmstore_storage::{Error as StoreError, Mailbox as StoredMailbox, NewMailbox};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::args::{existing_mailbox_name, mailbox_name};
use crate::imap::connection::{Connection, Next, SessionStream};
use crate::imap::error::{CmdError, CmdResult, Done};
use crate::imap::mailbox_view::MailboxView;
use crate::imap::response;
use crate::imap::state::Login;

/// Longest mailbox name we accept, in bytes.
const MAX_NAME: usize = 255;
/// Deepest hierarchy we accept.
const MAX_DEPTH: usize = 16;

/// Checks a name for CREATE / RENAME's target; returns it without a trailing `/`.
pub fn valid_new_name(name: &str) -> CmdResult<String> {
    let name = name.strip_suffix('/').unwrap_or(name);
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name.starts_with('/')
        || name.contains("//")
        || name.split('/').count() > MAX_DEPTH
        || name.chars().any(|c| c.is_control() || c == '*' || c == '%');
    if bad {
        return Err(CmdError::bad("Invalid mailbox name."));
    }
    Ok(name.to_string())
}

pub async fn create<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    mailbox: &Mailbox<'_>,
) -> CmdResult {
    let account = login.user.id;
    let name = mailbox_name(mailbox)?;
    if name == "INBOX" {
        return Err(CmdError::no_code(
            "ALREADYEXISTS",
            "Mailbox already exists.",
        ));
    }
    let name = valid_new_name(&name)?;
    check_folder_rules(s, account, &name).await?;
    // Create missing superiors too (RFC 3501 6.3.3).
    let parts: Vec<&str> = name.split('/').collect();
    for depth in 1..parts.len() {
        let parent = parts[..depth].join("/");
        let new = NewMailbox {
            name: parent,
            special_use: None,
            subscribed: false,
        };
        match s.ctx.store.create_mailbox(account, new).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let new = NewMailbox {
        name,
        special_use: None,
        subscribed: false,
    };
    match s.ctx.store.create_mailbox(account, new).await {
        Ok(_) => Ok(Done::text("Create completed.")),
        Err(StoreError::AlreadyExists(_)) => Err(CmdError::no_code(
            "ALREADYEXISTS",
            "Mailbox already exists.",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Under `[cpm] enforce_folder_rules`, clients create folders only under the CPM root
/// (INTERFACES.md 9.1): the root itself and anything below it may be created; a name
/// elsewhere that exists already (a default mailbox) is `ALREADYEXISTS` as always, any
/// other `NO [CANNOT]` saying where folders may go.
async fn check_folder_rules<S: SessionStream>(
    s: &Connection<S>,
    account: cpmstore_storage::AccountId,
    name: &str,
) -> CmdResult<()> {
    let cpm = &s.ctx.cpm;
    if !cpm.enforce_folder_rules || in_cpm_tree(&cpm.root, name) {
        return Ok(());
    }
    match s.ctx.store.mailbox(account, name).await {
        Ok(_) => Err(CmdError::no_code(
            "ALREADYEXISTS",
            "Mailbox already exists.",
        )),
        Err(StoreError::NotFound(_)) => Err(CmdError::outside_cpm_root(&cpm.root)),
        Err(e) => Err(e.into()),
    }
}

/// Whether `name` is the CPM root or a folder under it.
pub fn in_cpm_tree(root: &str, name: &str) -> bool {
    name == root || is_history_folder(root, name)
}

/// Whether `name` is a Conversation or Session History folder: any folder strictly
/// under the CPM root (`<root>/<Conversation-ID>[/<Contribution-ID>]`, and what clients
/// create there).
pub fn is_history_folder(root: &str, name: &str) -> bool {
    name.strip_prefix(root)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty())
}

/// DELETE; says whether it was the selected mailbox (`view`), which the dispatcher
/// then leaves.
pub async fn delete<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    view: Option<&MailboxView>,
    mailbox: &Mailbox<'_>,
) -> CmdResult<(Done, bool)> {
    let account = login.user.id;
    // Not checked as modified UTF-7: a name stored before the check can still go.
    let name = existing_mailbox_name(mailbox)?;
    if name == "INBOX" {
        return Err(CmdError::no("INBOX can't be deleted."));
    }
    let all = s.ctx.store.list_mailboxes(account).await?;
    if !all.iter().any(|m| m.name == name) {
        return Err(CmdError::nonexistent());
    }
    let prefix = format!("{name}/");
    if all.iter().any(|m| m.name.starts_with(&prefix)) {
        return Err(CmdError::no_code(
            "HASCHILDREN",
            "Mailbox has children, delete them first.",
        ));
    }
    let selected_here = view.is_some_and(|view| view.mailbox.name == name);
    s.ctx.store.delete_mailbox(account, &name).await?;
    if selected_here {
        // The selected mailbox is gone: back to the authenticated state.
        s.bye("Selected mailbox was deleted, have to disconnect.");
        s.next = Next::Close;
    }
    Ok((Done::text("Delete completed."), selected_here))
}

pub async fn rename<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    from: &Mailbox<'_>,
    to: &Mailbox<'_>,
) -> CmdResult {
    let account = login.user.id;
    // The source may be a name stored before the modified UTF-7 check; the target not.
    let from = existing_mailbox_name(from)?;
    let to = mailbox_name(to)?;
    if to == "INBOX" {
        return Err(CmdError::no_code(
            "ALREADYEXISTS",
            "Target mailbox already exists.",
        ));
    }
    let to = valid_new_name(&to)?;
    if to == from || to.starts_with(&format!("{from}/")) {
        return Err(CmdError::no("Can't rename a mailbox under itself."));
    }
    match s.ctx.store.rename_mailbox(account, &from, &to).await {
        Ok(()) => Ok(Done::text("Rename completed.")),
        Err(StoreError::NotFound(_)) => Err(CmdError::nonexistent()),
        Err(StoreError::AlreadyExists(_)) => Err(CmdError::no_code(
            "ALREADYEXISTS",
            "Target mailbox already exists.",
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn subscribe<S: SessionStream>(
    s: &mut Connection<S>,
    login: &Login,
    mailbox: &Mailbox<'_>,
    on: bool,
) -> CmdResult {
    let account = login.user.id;
    // UNSUBSCRIBE only removes, so it takes any stored name; SUBSCRIBE checks it.
    let name = if on {
        mailbox_name(mailbox)?
    } else {
        existing_mailbox_name(mailbox)?
    };
    match s.ctx.store.set_subscribed(account, &name, on).await {
        Ok(()) => Ok(Done::text(if on {
            "Subscribe completed."
        } else {
            "Unsubscribe completed."
        })),
        Err(StoreError::NotFound(_)) => Err(CmdError::nonexistent()),
        Err(e) => Err(e.into()),
    }
}

/// STATUS; `view` is the selected mailbox, if any.
pub async fn status<S: SessionStream>(
    s: &mut Connection<S>,
    login: &mut Login,
    view: Option<&MailboxView>,
    mailbox: &Mailbox<'_>,
    items: &[StatusDataItemName],
) -> CmdResult {
    let account = login.user.id;
    let name = mailbox_name(mailbox)?;
    let mb = match s.ctx.store.mailbox(account, &name).await {
        Ok(mb) => mb,
        Err(StoreError::NotFound(_)) => return Err(CmdError::nonexistent()),
        Err(e) => return Err(e.into()),
    };
    check_status_items(items)?;
    // A CONDSTORE-enabling command (RFC 7162 3.1).
    if items.contains(&StatusDataItemName::HighestModSeq) {
        login.enable_condstore(view, &mut s.out);
    }
    let data = status_data(s, view, &mb, items).await?;
    s.data(data);
    Ok(Done::text("Status completed."))
}

/// The STATUS items served: others are BAD (checked before anything is answered).
pub fn check_status_items(items: &[StatusDataItemName]) -> CmdResult<()> {
    use StatusDataItemName as N;
    let served = |item: &N| {
        matches!(
            item,
            N::Messages | N::Recent | N::UidNext | N::UidValidity | N::Unseen | N::HighestModSeq
        )
    };
    if items.iter().all(served) {
        Ok(())
    } else {
        Err(CmdError::bad("Unsupported STATUS item."))
    }
}

/// The `* STATUS` of `mb` with `items` in the order asked: what STATUS answers, and
/// LIST's STATUS return option (RFC 5819). `view` is the selected mailbox, if any.
pub async fn status_data<S: SessionStream>(
    s: &mut Connection<S>,
    view: Option<&MailboxView>,
    mb: &StoredMailbox,
    items: &[StatusDataItemName],
) -> CmdResult<Data<'static>> {
    let counts = s.ctx.store.mailbox_counts(mb.account, mb.id).await?;
    // UIDNEXT and UIDVALIDITY are never 0; a store that said so is not believed.
    let invalid = || CmdError::no_code("CANNOT", "Mailbox has no valid UIDs.");
    let mut answer = Vec::new();
    for item in items {
        answer.push(match item {
            StatusDataItemName::Messages => StatusDataItem::Messages(counts.messages),
            StatusDataItemName::Recent => {
                // The selected mailbox as this session sees it; any other: the messages
                // no session has claimed as \Recent yet (Dovecot's answer too).
                StatusDataItem::Recent(match view {
                    Some(view) if view.mailbox.id == mb.id => view.recent_count(),
                    _ => counts.recent,
                })
            }
            StatusDataItemName::UidNext => {
                StatusDataItem::UidNext(NonZeroU32::new(mb.uidnext).ok_or_else(invalid)?)
            }
            StatusDataItemName::UidValidity => {
                StatusDataItem::UidValidity(NonZeroU32::new(mb.uidvalidity).ok_or_else(invalid)?)
            }
            StatusDataItemName::Unseen => StatusDataItem::Unseen(counts.unseen),
            StatusDataItemName::HighestModSeq => StatusDataItem::HighestModSeq(mb.highestmodseq),
            _ => return Err(CmdError::bad("Unsupported STATUS item.")),
        });
    }
    let mailbox = response::wire_mailbox(&mb.name).ok_or_else(CmdError::nonexistent)?;
    Ok(Data::Status {
        mailbox,
        items: answer.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::valid_new_name;

    #[test]
    fn names() {
        assert_eq!(valid_new_name("a/b/").unwrap(), "a/b");
        for bad in ["", "/a", "a//b", "a*", "a%b", "a\u{7}b", &"x".repeat(300)] {
            assert!(valid_new_name(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod table_tests {
    use crate::config::CpmConfig;
    use crate::imap::harness::Start;
    use crate::imap::testing::{table, table_cpm};

    /// `[cpm] enforce_folder_rules` (the default): folders only under the root; the
    /// root itself and the existing mailboxes stay; RENAME and DELETE of whole folders
    /// are allowed. Without the rules, the same CREATE succeeds.
    #[tokio::test]
    async fn cpm_folder_rules() {
        const WHY: &str = "NO [CANNOT] Clients may create folders only under RCSMessageStore \
                           (CPM message store folder rules); try RCSMessageStore/<name>.";
        table_cpm(
            CpmConfig::default(),
            Start::Authenticated,
            &[(
                &[
                    "a CREATE Work",
                    "b CREATE Work/2026",
                    "c CREATE RCSMessageStore",
                    "d CREATE RCSMessageStore/tel:+15550100",
                    "e CREATE RCSMessageStore/grp-1/contrib-1",
                    "f CREATE RCSMessageStore/Mine/",
                    "g CREATE Archive",
                    "h CREATE INBOX",
                    "i CREATE RCSMessageStorex",
                    "j CREATE rcsmessagestore/x",
                    "k CREATE \"&AGE-\"",
                    "l RENAME RCSMessageStore/Mine RCSMessageStore/Ours",
                    "m DELETE RCSMessageStore/grp-1/contrib-1",
                    "n CREATE RCSMessageStore",
                ],
                &[
                    &format!("a {WHY}"),
                    &format!("b {WHY}"),
                    "c OK Create completed.",
                    "d OK Create completed.",
                    "e OK Create completed.",
                    "f OK Create completed.",
                    "g NO [ALREADYEXISTS] Mailbox already exists.",
                    "h NO [ALREADYEXISTS] Mailbox already exists.",
                    &format!("i {WHY}"),
                    &format!("j {WHY}"),
                    "k NO [CANNOT] Invalid mailbox name: malformed modified UTF-7...",
                    "l OK Rename completed.",
                    "m OK Delete completed.",
                    "n NO [ALREADYEXISTS] Mailbox already exists.",
                ],
            )],
        )
        .await;
        let off = CpmConfig {
            enforce_folder_rules: false,
            ..CpmConfig::default()
        };
        table_cpm(
            off,
            Start::Authenticated,
            &[(&["a CREATE Work"], &["a OK Create completed."])],
        )
        .await;
    }

    #[tokio::test]
    async fn create_rename_delete_subscribe_status() {
        table(
            Start::Authenticated,
            &[(
                &[
                    "a CREATE Work/2026",
                    "b CREATE Work",
                    "c RENAME Work/2026 Work/2027",
                    "d DELETE Work",
                    "e DELETE Work/2027",
                    "f SUBSCRIBE Work",
                    "g UNSUBSCRIBE Work",
                    "h STATUS Work (MESSAGES UIDNEXT UNSEEN RECENT)",
                    "i DELETE INBOX",
                    "j CREATE inbox",
                ],
                &[
                    "a OK Create completed.",
                    "b NO [ALREADYEXISTS] Mailbox already exists.",
                    "c OK Rename completed.",
                    "d NO [HASCHILDREN] Mailbox has children, delete them first.",
                    "e OK Delete completed.",
                    "f OK Subscribe completed.",
                    "g OK Unsubscribe completed.",
                    "* STATUS \"Work\" (MESSAGES 0 UIDNEXT 1 UNSEEN 0 RECENT 0)",
                    "h OK Status completed.",
                    "i NO INBOX can't be deleted.",
                    "j NO [ALREADYEXISTS] Mailbox already exists.",
                ],
            )],
        )
        .await;
        table(
            Start::Selected { read_only: false },
            &[(
                &["a CREATE Gone", "b SELECT Gone", "c DELETE Gone"],
                &[
                    "a OK Create completed.",
                    "* OK [CLOSED] Previous mailbox closed.",
                    "* FLAGS (...",
                    "* OK [PERMANENTFLAGS (...",
                    "* 0 EXISTS",
                    "* 0 RECENT",
                    "* OK [UIDVALIDITY ...",
                    "* OK [UIDNEXT 1] Predicted next UID.",
                    "b OK [READ-WRITE] Select completed.",
                    "* BYE Selected mailbox was deleted, have to disconnect.",
                    "c OK Delete completed.",
                ],
            )],
        )
        .await;
    }
}
