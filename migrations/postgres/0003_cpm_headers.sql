-- The CPM header index (INTERFACES.md 9.4): the values of the top-level headers
-- Conversation-ID, Contribution-ID, InReplyTo-Contribution-ID and IMDN-Message-ID of
-- every message, so that `UID SEARCH HEADER <name> <value>`, the deposit's
-- idempotence check and event reports find a message without reading bodies.
--
-- Filled in the transaction that inserts the message (append, copy, move); the foreign
-- key to the message row keeps it exact without further code: a row goes with its
-- message (expunge, MOVE's source, mailbox delete, account removal all delete message
-- rows) and follows it when the rename of INBOX moves it to the new mailbox.
-- Messages stored before this migration are not in the index.
CREATE TABLE cpm_headers (
    account_id BIGINT NOT NULL,
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    -- the header name, lower-case (`imdn-message-id`)
    name       TEXT   NOT NULL,
    -- the value as in the message, unfolded, leading and trailing white space removed
    value      TEXT   NOT NULL,
    -- value in ASCII lower case: the search key (IMAP SEARCH is case-insensitive)
    folded     TEXT   NOT NULL,
    PRIMARY KEY (account_id, mailbox_id, uid, name, folded),
    FOREIGN KEY (account_id, mailbox_id, uid) REFERENCES messages (account_id, mailbox_id, uid)
        ON DELETE CASCADE ON UPDATE CASCADE
);
-- One index answers both a search in a mailbox and a search across the account
-- (event reports): the values searched for are nearly unique.
CREATE INDEX cpm_headers_by_value ON cpm_headers (account_id, name, folded, mailbox_id, uid);
