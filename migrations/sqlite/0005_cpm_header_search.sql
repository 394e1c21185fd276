-- SEARCH HEADER on the CPM headers answered from the index (INTERFACES.md 9.4), and the
-- messages stored before migration 0003 put into it.
--
-- A substring search for a needle of n characters: values equal to it are found by
-- cpm_headers_by_value; only values longer than n can contain it otherwise, and this
-- index finds those of one mailbox and header without reading the rest (CPM ids of one
-- kind mostly have one length, so searching a whole id reads nothing more). It carries
-- the value and the UID, so that it answers alone (SQLite prefers a covering index).
CREATE INDEX cpm_headers_by_length ON cpm_headers (account_id, mailbox_id, name, length(folded), folded, uid);

-- Messages whose CPM headers are not (known to be) indexed: every message without an
-- index row when this runs (stored before 0003, or without CPM headers). `cpmstore
-- serve` reads their headers at start (Store::backfill_cpm_headers) before it accepts
-- connections, and removes them from here; a row goes with its message.
CREATE TABLE cpm_headers_pending (
    account_id BIGINT NOT NULL,
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    PRIMARY KEY (account_id, mailbox_id, uid),
    FOREIGN KEY (account_id, mailbox_id, uid) REFERENCES messages (account_id, mailbox_id, uid)
        ON DELETE CASCADE ON UPDATE CASCADE
);
INSERT INTO cpm_headers_pending (account_id, mailbox_id, uid)
SELECT m.account_id, m.mailbox_id, m.uid FROM messages m
WHERE NOT EXISTS (
    SELECT 1 FROM cpm_headers h
    WHERE h.account_id = m.account_id AND h.mailbox_id = m.mailbox_id AND h.uid = m.uid
);
