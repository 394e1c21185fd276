//! What a selected session has told its client about the mailbox — the UID <-> sequence
//! number map, each message's flags, the MODSEQ it has caught up to — and how it catches
//! up with the store, emitting EXISTS / RECENT / EXPUNGE / FETCH FLAGS (with MODSEQ
//! for a CONDSTORE-aware session; `VANISHED` instead of EXPUNGE for a QRESYNC one).

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::ops::Range;

use cpmstore_storage::{
    AccountId, Error as StoreError, Flags, Mailbox, MailboxChanges, MailboxId, MessageMeta, Store,
    UidRange,
};
use futures::TryStreamExt;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::SequenceSet;

use super::response::{
    flags_item, mailbox_flags, modseq_item, permanent_flags, push_data, push_ok, uid_sequence_set,
};
use super::seqset::Intervals;

/// What the session has enabled that changes how catching up is told (RFC 7162).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// FETCH responses carry MODSEQ, and a MODSEQ change alone is news.
    pub condstore: bool,
    /// Expunges are told as one `VANISHED uid-set` instead of `n EXPUNGE` lines.
    pub qresync: bool,
}

/// The selected mailbox as the client knows it.
pub struct MailboxView {
    pub mailbox: Mailbox,
    pub read_only: bool,
    /// UIDs in sequence order: `uids[seq - 1]`.
    uids: Vec<u32>,
    /// Flags parallel to `uids`.
    flags: Vec<Flags>,
    /// Each message's MODSEQ as last told (or known), parallel to `uids`.
    modseqs: Vec<u64>,
    /// UIDs that are \Recent for this session: ascending, disjoint ranges. A read-write
    /// session gets the ones it claimed from the store (at SELECT and whenever it is the
    /// first to see new messages), so no two sessions show a message as recent.
    recent: Vec<Range<u32>>,
    /// The MODSEQ the view has caught up to.
    pub modseq: u64,
    /// Expunged in the store but not yet told (EXPUNGE is deferred during FETCH, STORE
    /// and SEARCH so sequence numbers stay stable).
    pending_expunge: BTreeSet<u32>,
    /// The view's MODSEQ when the oldest of `pending_expunge` was deferred: every
    /// deferred expunge has a higher MODSEQ than this.
    pending_since: Option<u64>,
    /// Keywords the client has been told in FLAGS.
    pub keywords: Vec<String>,
}

impl MailboxView {
    pub fn new(
        mailbox: Mailbox,
        read_only: bool,
        messages: Vec<MessageMeta>,
        recent: Range<u32>,
        keywords: Vec<String>,
    ) -> Self {
        let modseq = mailbox.highestmodseq;
        let mut uids = Vec::with_capacity(messages.len());
        let mut flags = Vec::with_capacity(messages.len());
        let mut modseqs = Vec::with_capacity(messages.len());
        for m in messages {
            uids.push(m.uid);
            flags.push(m.flags);
            modseqs.push(m.modseq);
        }
        let mut view = MailboxView {
            mailbox,
            read_only,
            uids,
            flags,
            modseqs,
            recent: Vec::new(),
            modseq,
            pending_expunge: BTreeSet::new(),
            pending_since: None,
            keywords,
        };
        view.add_recent(recent);
        view
    }

    pub fn exists(&self) -> u32 {
        self.uids.len() as u32
    }

    pub fn recent_count(&self) -> u32 {
        self.uids.iter().filter(|u| self.is_recent(**u)).count() as u32
    }

    pub fn is_recent(&self, uid: u32) -> bool {
        // The range that could hold `uid` is the last one starting at or below it.
        let i = self.recent.partition_point(|r| r.start <= uid);
        i > 0 && self.recent[i - 1].contains(&uid)
    }

    /// Whether `changes` brings messages this view has not seen yet (their \Recent
    /// status must be settled before [`MailboxView::apply`]).
    pub fn has_new(&self, changes: &MailboxChanges) -> bool {
        let last = self.last_uid();
        changes.changed.iter().any(|m| m.uid > last)
    }

    /// Makes the UIDs of `range` \Recent for this session.
    pub fn add_recent(&mut self, range: Range<u32>) {
        if range.is_empty() {
            return;
        }
        self.recent.push(range);
        self.recent.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<u32>> = Vec::with_capacity(self.recent.len());
        for r in self.recent.drain(..) {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        self.recent = merged;
    }

    /// The UIDs in sequence order.
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    pub fn uid_of(&self, seq: u32) -> Option<u32> {
        self.uids.get((seq as usize).checked_sub(1)?).copied()
    }

    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|i| i as u32 + 1)
    }

    pub fn flags_of(&self, uid: u32) -> Option<&Flags> {
        self.uids.binary_search(&uid).ok().map(|i| &self.flags[i])
    }

    /// The message's MODSEQ as the view knows it.
    pub fn modseq_of(&self, uid: u32) -> Option<u64> {
        self.uids.binary_search(&uid).ok().map(|i| self.modseqs[i])
    }

    pub fn is_expunged(&self, uid: u32) -> bool {
        self.pending_expunge.contains(&uid)
    }

    /// The UIDs expunged in the store that the client has not been told of yet.
    pub fn pending_expunges(&self) -> impl Iterator<Item = u32> + '_ {
        self.pending_expunge.iter().copied()
    }

    pub fn last_uid(&self) -> u32 {
        self.uids.last().copied().unwrap_or(0)
    }

    /// Records flags (and the MODSEQ they got) this session itself set, so catching up
    /// does not repeat them.
    pub fn set_flags(&mut self, uid: u32, flags: Flags, modseq: u64) {
        if let Ok(i) = self.uids.binary_search(&uid) {
            self.flags[i] = flags;
            self.modseqs[i] = self.modseqs[i].max(modseq);
        }
    }

    /// First sequence number without \Seen, for `[UNSEEN n]`.
    pub fn first_unseen(&self) -> Option<u32> {
        self.flags
            .iter()
            .position(|f| !f.system.contains(cpmstore_storage::SystemFlags::SEEN))
            .map(|i| i as u32 + 1)
    }

    /// Resolves a sequence set to the UIDs of messages in the view, ascending. Sequence
    /// numbers beyond EXISTS are an error (the client is out of sync), UIDs that do not
    /// exist are ignored (RFC 3501 6.4.8).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<u32>, String> {
        if uid {
            let intervals = Intervals::new(set, self.last_uid());
            return Ok(intervals.select(&self.uids).collect());
        }
        let max = self.exists();
        let intervals = Intervals::new(set, max);
        match intervals.bounds() {
            None => Ok(Vec::new()),
            Some((lo, hi)) if lo == 0 || hi > max => Err("Invalid messageset".into()),
            Some(_) => {
                let mut out = Vec::new();
                for &(lo, hi) in intervals.as_slice() {
                    out.extend_from_slice(&self.uids[lo as usize - 1..hi as usize]);
                }
                Ok(out)
            }
        }
    }

    /// Catches up with what the store reports changed since `self.modseq`, appending the
    /// untagged responses to `out`. EXPUNGE responses are only emitted when
    /// `allow_expunge` (not during FETCH, STORE or SEARCH); until then the messages stay
    /// in the view. A `condstore` session (RFC 7162 3.1) is told MODSEQ with every flag
    /// change, and also of a message whose MODSEQ moved while its flags came back to
    /// what they were.
    pub fn apply(
        &mut self,
        changes: MailboxChanges,
        allow_expunge: bool,
        report: Report,
        out: &mut Vec<u8>,
    ) {
        let condstore = report.condstore;
        for uid in changes.expunged {
            if self.uids.binary_search(&uid).is_ok() {
                self.pending_expunge.insert(uid);
                self.pending_since.get_or_insert(self.modseq);
            }
        }
        if allow_expunge {
            self.flush_expunges(report.qresync, out);
        }
        let before = self.uids.len();
        let mut flag_updates = Vec::new();
        for meta in changes.changed {
            match self.uids.binary_search(&meta.uid) {
                Ok(i) => {
                    if self.pending_expunge.contains(&meta.uid) {
                        continue;
                    }
                    let newer = meta.modseq > self.modseqs[i];
                    if newer {
                        self.modseqs[i] = meta.modseq;
                    }
                    if self.flags[i] != meta.flags {
                        self.flags[i] = meta.flags.clone();
                        flag_updates.push(meta.uid);
                    } else if newer && condstore {
                        flag_updates.push(meta.uid);
                    }
                }
                Err(_) if meta.uid > self.last_uid() => {
                    self.uids.push(meta.uid);
                    self.flags.push(meta.flags);
                    self.modseqs.push(meta.modseq);
                }
                // Expunged before we ever saw it, or older than what we hold.
                Err(_) => {}
            }
        }
        self.announce_keywords(out);
        if self.uids.len() != before {
            push_data(out, Data::Exists(self.exists()));
            push_data(out, Data::Recent(self.recent_count()));
        }
        for uid in flag_updates {
            if let Some(data) = self.fetch_flags(uid, condstore) {
                push_data(out, data);
            }
        }
        self.modseq = self.modseq.max(changes.highestmodseq);
    }

    /// Announces keywords that messages of the view carry but the client has not been
    /// told: one `* FLAGS` line with all of them, then (read-write) `* OK
    /// [PERMANENTFLAGS ...]`, so that no response uses a keyword before FLAGS lists it.
    /// Called before any response that shows flags the view has just taken in.
    pub fn announce_keywords(&mut self, out: &mut Vec<u8>) {
        let mut new = false;
        for kw in self.flags.iter().flat_map(|f| f.keywords.iter()) {
            if !self.keywords.iter().any(|k| k.eq_ignore_ascii_case(kw)) {
                self.keywords.push(kw.clone());
                new = true;
            }
        }
        if !new {
            return;
        }
        push_data(out, Data::Flags(mailbox_flags(&self.keywords)));
        if !self.read_only {
            let permanent = permanent_flags(&self.keywords);
            push_ok(
                out,
                Some(Code::PermanentFlags(permanent)),
                "Flags permitted.",
            );
        }
    }

    /// Tells the client about expunges it has not heard of yet: `n EXPUNGE` lines, or
    /// with QRESYNC (`vanished`) one `VANISHED uid-set` line (RFC 7162 3.2.10).
    /// When messages that were \Recent go, the new RECENT count follows (as Dovecot
    /// sends it), so the client's count never exceeds EXISTS.
    pub fn flush_expunges(&mut self, vanished: bool, out: &mut Vec<u8>) {
        self.pending_since = None;
        if self.pending_expunge.is_empty() {
            return;
        }
        let recent_gone = self
            .pending_expunge
            .iter()
            .any(|&uid| self.uids.binary_search(&uid).is_ok() && self.is_recent(uid));
        self.remove_pending(vanished, out);
        if recent_gone {
            push_data(out, Data::Recent(self.recent_count()));
        }
    }

    fn remove_pending(&mut self, vanished: bool, out: &mut Vec<u8>) {
        if vanished {
            let gone: Vec<u32> = std::mem::take(&mut self.pending_expunge)
                .into_iter()
                .filter(|uid| self.uids.binary_search(uid).is_ok())
                .collect();
            if gone.is_empty() {
                return;
            }
            // One pass over the three parallel lists keeps the survivors.
            let keep: Vec<bool> = self
                .uids
                .iter()
                .map(|uid| gone.binary_search(uid).is_err())
                .collect();
            let mut k = keep.iter();
            self.uids.retain(|_| k.next().copied().unwrap_or(true));
            let mut k = keep.iter();
            self.flags.retain(|_| k.next().copied().unwrap_or(true));
            let mut k = keep.iter();
            self.modseqs.retain(|_| k.next().copied().unwrap_or(true));
            if let Some(known_uids) = uid_sequence_set(&gone) {
                push_data(
                    out,
                    Data::Vanished {
                        earlier: false,
                        known_uids,
                    },
                );
            }
            return;
        }
        // Highest sequence number first, so the earlier numbers stay valid as we go.
        for uid in std::mem::take(&mut self.pending_expunge).into_iter().rev() {
            if let Ok(i) = self.uids.binary_search(&uid) {
                self.uids.remove(i);
                self.flags.remove(i);
                self.modseqs.remove(i);
                if let Some(seq) = nz(i as u32 + 1) {
                    push_data(out, Data::Expunge(seq));
                }
            }
        }
    }

    /// While expunges are deferred, the HIGHESTMODSEQ a CONDSTORE client may safely
    /// resynchronise from: below every deferred expunge's MODSEQ, though FETCH responses
    /// may already have shown it higher MODSEQs (RFC 7162 3.2 requires telling it).
    pub fn deferred_highestmodseq(&self) -> Option<u64> {
        if self.pending_expunge.is_empty() {
            None
        } else {
            self.pending_since
        }
    }

    /// `* seq FETCH (UID uid FLAGS (...))` for a message of the view, with `MODSEQ (n)`
    /// for a CONDSTORE-aware session: how a flag change is told.
    pub fn fetch_flags(&self, uid: u32, condstore: bool) -> Option<Data<'static>> {
        let seq = nz(self.seq_of(uid)?)?;
        let flags = self.flags_of(uid)?;
        let mut items = vec![
            MessageDataItem::Uid(nz(uid)?),
            flags_item(flags, self.is_recent(uid)),
        ];
        if condstore {
            items.extend(self.modseq_of(uid).and_then(modseq_item));
        }
        Data::fetch(seq, items).ok()
    }
}

/// The rows of `uids` (ascending) as a session showing them reads them, in UID order:
/// each message's current row, or for one expunged since (by this session's deferred
/// expunge or another session's) the row its tombstone keeps until the content is
/// purged (`limits.expunged_retention_secs`). A message with neither is absent.
pub async fn read_rows(
    store: &dyn Store,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[u32],
) -> Result<Vec<MessageMeta>, StoreError> {
    let mut rows: Vec<MessageMeta> = store
        .fetch(account, mailbox, &to_ranges(uids))
        .try_collect()
        .await?;
    if rows.len() < uids.len() {
        let gone: Vec<u32> = {
            let mut live = rows.iter().map(|m| m.uid).peekable();
            uids.iter()
                .copied()
                .filter(|&u| {
                    while live.next_if(|&l| l < u).is_some() {}
                    live.next_if_eq(&u).is_none()
                })
                .collect()
        };
        let kept = store
            .fetch_expunged(account, mailbox, &to_ranges(&gone))
            .await?;
        if !kept.is_empty() {
            rows.extend(
                kept.into_iter()
                    .filter(|m| gone.binary_search(&m.uid).is_ok()),
            );
            rows.sort_unstable_by_key(|m| m.uid);
            rows.dedup_by_key(|m| m.uid);
        }
    }
    Ok(rows)
}

/// A client's UID set as store ranges, `*` standing for `max` (RFC 3501: the largest
/// UID in use).
pub fn uid_set_ranges(set: &SequenceSet, max: u32) -> Vec<UidRange> {
    Intervals::new(set, max)
        .as_slice()
        .iter()
        .map(|&(start, end)| UidRange { start, end })
        .collect()
}

/// Compresses ascending UIDs into ranges for the store.
pub fn to_ranges(uids: &[u32]) -> Vec<UidRange> {
    let mut ranges: Vec<UidRange> = Vec::new();
    for &u in uids {
        match ranges.last_mut() {
            Some(r) if r.end.checked_add(1) == Some(u) => r.end = u,
            _ => ranges.push(UidRange::one(u)),
        }
    }
    ranges
}

/// Formats ascending UIDs as an IMAP sequence set (`1:3,7`), e.g. for COPYUID.
pub fn uid_set_string(uids: &[u32]) -> String {
    to_ranges(uids)
        .iter()
        .map(|r| {
            if r.start == r.end {
                r.start.to_string()
            } else {
                format!("{}:{}", r.start, r.end)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A sequence number for untagged responses.
pub fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpmstore_storage::{AccountId, MailboxId};

    fn meta(uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            modseq: 1,
            flags: Flags::default(),
            internal_date: 0,
            internal_date_tz: 0,
            size: 1,
            blob: String::new(),
        }
    }

    fn view(uids: &[u32]) -> MailboxView {
        let mailbox = Mailbox {
            id: MailboxId(1),
            account: AccountId(1),
            name: "INBOX".into(),
            uidvalidity: 1,
            uidnext: 100,
            highestmodseq: 5,
            special_use: None,
            subscribed: true,
        };
        MailboxView::new(
            mailbox,
            false,
            uids.iter().map(|u| meta(*u)).collect(),
            100..100,
            vec![],
        )
    }

    fn set(s: &str) -> SequenceSet {
        SequenceSet::try_from(s).unwrap()
    }

    #[test]
    fn resolves_sequence_and_uid_sets() {
        let v = view(&[3, 5, 9, 10]);
        assert_eq!(v.resolve(&set("1:*"), false).unwrap(), vec![3, 5, 9, 10]);
        assert_eq!(v.resolve(&set("2,4"), false).unwrap(), vec![5, 10]);
        assert!(v.resolve(&set("5"), false).is_err());
        assert_eq!(v.resolve(&set("4:9"), true).unwrap(), vec![5, 9]);
        // 559:* includes the last message even when 559 is above it.
        assert_eq!(v.resolve(&set("559:*"), true).unwrap(), vec![10]);
        assert_eq!(v.resolve(&set("100"), true).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn expunges_are_deferred_and_numbered_from_the_top() {
        let mut v = view(&[3, 5, 9]);
        let mut out = Vec::new();
        let changes = MailboxChanges {
            highestmodseq: 6,
            uidnext: 100,
            changed: vec![],
            expunged: vec![3, 9],
        };
        v.apply(changes, false, Report::default(), &mut out);
        assert!(out.is_empty());
        assert_eq!(v.exists(), 3);
        v.flush_expunges(false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n"
        );
        assert_eq!(v.uid_of(1), Some(5));
    }

    #[test]
    fn expunging_recent_messages_tells_the_new_recent_count() {
        let mut v = view(&[3, 5, 9]);
        v.add_recent(5..10);
        let mut out = Vec::new();
        let changes = MailboxChanges {
            highestmodseq: 6,
            uidnext: 100,
            changed: vec![],
            expunged: vec![9],
        };
        v.apply(changes, true, Report::default(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 3 EXPUNGE\r\n* 1 RECENT\r\n"
        );
        // A message that was not \Recent: no RECENT line.
        let mut out = Vec::new();
        let changes = MailboxChanges {
            highestmodseq: 7,
            uidnext: 100,
            changed: vec![],
            expunged: vec![3],
        };
        v.apply(changes, true, Report::default(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "* 1 EXPUNGE\r\n");
    }

    #[test]
    fn new_messages_and_flag_changes() {
        let mut v = view(&[3]);
        let mut out = Vec::new();
        let mut changed = meta(3);
        changed.flags.system.0 = cpmstore_storage::SystemFlags::SEEN;
        let changes = MailboxChanges {
            highestmodseq: 7,
            uidnext: 100,
            changed: vec![changed, meta(4)],
            expunged: vec![],
        };
        v.apply(changes, true, Report::default(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("* 2 EXISTS\r\n"), "{text}");
        assert!(
            text.contains("* 1 FETCH (UID 3 FLAGS (\\Seen))\r\n"),
            "{text}"
        );
        assert_eq!(v.modseq, 7);
    }

    #[test]
    fn condstore_sessions_are_told_modseq() {
        let mut v = view(&[3, 4]);
        let mut out = Vec::new();
        let mut flagged = meta(3);
        flagged.modseq = 8;
        flagged.flags.system.0 = cpmstore_storage::SystemFlags::FLAGGED;
        // 4's flags came back to what they were, but its MODSEQ moved.
        let mut same = meta(4);
        same.modseq = 8;
        let changes = MailboxChanges {
            highestmodseq: 8,
            uidnext: 100,
            changed: vec![flagged.clone(), same.clone()],
            expunged: vec![],
        };
        v.apply(changes.clone(), true, CONDSTORE, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "* 1 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ (8))\r\n\
             * 2 FETCH (UID 4 FLAGS () MODSEQ (8))\r\n"
        );
        assert_eq!(v.modseq_of(3), Some(8));
        // The same changes again: nothing new to tell.
        let mut out = Vec::new();
        v.apply(changes, true, CONDSTORE, &mut out);
        assert!(out.is_empty());
        // Without CONDSTORE, a MODSEQ alone is not news.
        let mut plain = view(&[4]);
        let mut out = Vec::new();
        let changes = MailboxChanges {
            highestmodseq: 8,
            uidnext: 100,
            changed: vec![same],
            expunged: vec![],
        };
        plain.apply(changes, true, Report::default(), &mut out);
        assert!(out.is_empty());
        assert_eq!(plain.modseq_of(4), Some(8));
    }

    const CONDSTORE: Report = Report {
        condstore: true,
        qresync: false,
    };

    #[test]
    fn qresync_sessions_are_told_vanished() {
        let mut v = view(&[3, 5, 6, 9]);
        let mut out = Vec::new();
        let changes = MailboxChanges {
            highestmodseq: 6,
            uidnext: 100,
            // 4 was never in the view: not the client's news.
            changed: vec![],
            expunged: vec![4, 5, 6, 9],
        };
        let report = Report {
            condstore: true,
            qresync: true,
        };
        v.apply(changes, false, report, &mut out);
        assert!(out.is_empty(), "deferred like EXPUNGE");
        v.flush_expunges(true, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "* VANISHED 5:6,9\r\n");
        assert_eq!((v.exists(), v.uid_of(1), v.uid_of(2)), (1, Some(3), None));
        let mut out = Vec::new();
        v.flush_expunges(true, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn uid_set_ranges_resolve_the_star() {
        assert_eq!(
            uid_set_ranges(&set("5:*,2,20:10"), 7),
            vec![
                UidRange::one(2),
                UidRange { start: 5, end: 7 },
                UidRange { start: 10, end: 20 }
            ]
        );
    }

    #[test]
    fn recent_ranges_merge() {
        let mut v = view(&[1, 2, 3, 5, 8, 9]);
        assert_eq!(v.recent_count(), 0);
        v.add_recent(2..4);
        v.add_recent(8..9);
        v.add_recent(3..6);
        v.add_recent(7..7);
        assert_eq!(v.recent, vec![2..6, 8..9]);
        let recent: Vec<u32> = [1, 2, 3, 5, 8, 9]
            .into_iter()
            .filter(|u| v.is_recent(*u))
            .collect();
        assert_eq!(recent, [2, 3, 5, 8]);
        assert_eq!(v.recent_count(), 4);
    }

    #[test]
    fn uid_sets_format() {
        assert_eq!(uid_set_string(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    }
}
