-- cpmstore schema, SQLite.
--
-- The PostgreSQL schema (migrations/postgres) has the same tables, columns and keys, so
-- that one SQL text (storage/src/sql.rs) works on both:
-- * every integer is a BIGINT (booleans are 0/1), bytes are BLOB, text is TEXT;
-- * every table that holds subscriber data leads with account_id, in its columns and in
--   its keys, so the data can be sharded by account.
--
-- `accounts.account_id` and `mailboxes.id` are AUTOINCREMENT so that an id is never
-- reused after a removal: a session holding the id of a deleted mailbox gets NotFound,
-- never someone else's mailbox.

CREATE TABLE accounts (
    account_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    username         TEXT    NOT NULL UNIQUE,
    status           TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    -- bytes; NULL is unlimited
    quota            BIGINT,
    -- unix seconds
    created_at       BIGINT  NOT NULL,
    -- the last UIDVALIDITY handed to a mailbox of the account: the next one is
    -- max(now, last + 1), so a re-created name never gets an old value again
    last_uidvalidity BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE credentials (
    account_id       BIGINT  NOT NULL PRIMARY KEY REFERENCES accounts (account_id) ON DELETE CASCADE,
    argon2_phc       TEXT    NOT NULL,
    scram_salt       BLOB    NOT NULL,
    scram_iterations BIGINT  NOT NULL,
    scram_stored_key BLOB    NOT NULL,
    scram_server_key BLOB    NOT NULL,
    updated_at       BIGINT  NOT NULL
);

CREATE TABLE psk_identities (
    account_id BIGINT NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    identity   TEXT   NOT NULL,
    -- AEAD nonce || ciphertext+tag, sealed by the server's auth layer
    sealed_key BLOB   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, identity),
    UNIQUE (identity)
);

CREATE TABLE addresses (
    account_id BIGINT NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    -- normalised address URI (tel:+358..., sip:alice@...)
    address    TEXT   NOT NULL,
    PRIMARY KEY (account_id, address),
    UNIQUE (address)
);

CREATE TABLE mailboxes (
    account_id    BIGINT  NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    -- full hierarchical name, '/' separated; INBOX is always 'INBOX'
    name          TEXT    NOT NULL,
    uidvalidity   BIGINT  NOT NULL,
    uidnext       BIGINT  NOT NULL DEFAULT 1,
    highestmodseq BIGINT  NOT NULL DEFAULT 1,
    -- first UID still \Recent for the next session that claims it
    recent_uid    BIGINT  NOT NULL DEFAULT 1,
    -- recent_uid before the last claim (lets one UPDATE ... RETURNING hand it out)
    recent_prev   BIGINT  NOT NULL DEFAULT 1,
    -- RFC 6154 attribute without the backslash
    special_use   TEXT,
    UNIQUE (account_id, name),
    UNIQUE (account_id, id)
);

-- RFC 3501: a subscription may outlive its mailbox, so subscriptions are names.
CREATE TABLE subscriptions (
    account_id BIGINT NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    PRIMARY KEY (account_id, name)
);

-- Content-addressed per account: hash is the SHA-256 of data, in lower-case hex.
CREATE TABLE blobs (
    account_id BIGINT NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    hash       TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    data       BLOB   NOT NULL,
    PRIMARY KEY (account_id, hash)
);

CREATE TABLE messages (
    account_id       BIGINT NOT NULL,
    mailbox_id       BIGINT NOT NULL,
    uid              BIGINT NOT NULL,
    modseq           BIGINT NOT NULL,
    -- unix seconds, and the offset from UTC in minutes it was given with
    internal_date    BIGINT NOT NULL,
    internal_date_tz BIGINT NOT NULL DEFAULT 0,
    size             BIGINT NOT NULL,
    -- bit set: 1 \Seen, 2 \Answered, 4 \Flagged, 8 \Deleted, 16 \Draft
    system_flags     BIGINT NOT NULL DEFAULT 0,
    -- space-separated keywords, sorted case-insensitively, unique
    keywords         TEXT   NOT NULL DEFAULT '',
    blob_hash        TEXT   NOT NULL,
    PRIMARY KEY (account_id, mailbox_id, uid),
    FOREIGN KEY (account_id, mailbox_id) REFERENCES mailboxes (account_id, id) ON DELETE CASCADE,
    FOREIGN KEY (account_id, blob_hash) REFERENCES blobs (account_id, hash)
);
CREATE INDEX messages_by_modseq ON messages (account_id, mailbox_id, modseq);
CREATE INDEX messages_by_blob ON messages (account_id, blob_hash);

-- Keywords ever used in a mailbox (FLAGS / PERMANENTFLAGS); folded is the lower-case key.
CREATE TABLE mailbox_keywords (
    account_id BIGINT NOT NULL,
    mailbox_id BIGINT NOT NULL,
    folded     TEXT   NOT NULL,
    keyword    TEXT   NOT NULL,
    PRIMARY KEY (account_id, mailbox_id, folded),
    FOREIGN KEY (account_id, mailbox_id) REFERENCES mailboxes (account_id, id) ON DELETE CASCADE
);

-- Tombstones: a session learns what was expunged after a MODSEQ (QRESYNC-style catch-up).
CREATE TABLE expunged (
    account_id BIGINT NOT NULL,
    mailbox_id BIGINT NOT NULL,
    uid        BIGINT NOT NULL,
    modseq     BIGINT NOT NULL,
    PRIMARY KEY (account_id, mailbox_id, uid),
    FOREIGN KEY (account_id, mailbox_id) REFERENCES mailboxes (account_id, id) ON DELETE CASCADE
);
CREATE INDEX expunged_by_modseq ON expunged (account_id, mailbox_id, modseq);

-- RFC 5464 entries; mailbox_id NULL is a server (account-level) entry. Entry names are
-- stored lower-case (they compare case-insensitively).
CREATE TABLE metadata (
    account_id BIGINT NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    mailbox_id BIGINT,
    entry      TEXT   NOT NULL,
    value      BLOB   NOT NULL,
    FOREIGN KEY (account_id, mailbox_id) REFERENCES mailboxes (account_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX metadata_server_entry ON metadata (account_id, entry) WHERE mailbox_id IS NULL;
CREATE UNIQUE INDEX metadata_mailbox_entry ON metadata (account_id, mailbox_id, entry) WHERE mailbox_id IS NOT NULL;

-- Push whitelists; context '' is the default context, else the PROVURL.
CREATE TABLE whitelists (
    account_id BIGINT NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    context    TEXT   NOT NULL,
    loaded_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, context)
);

CREATE TABLE whitelist_entries (
    account_id BIGINT NOT NULL,
    context    TEXT   NOT NULL,
    -- order as provisioned
    position   BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    -- JSON array of the addresses an fqdn resolved to at load
    resolved   TEXT   NOT NULL DEFAULT '[]',
    PRIMARY KEY (account_id, context, position),
    FOREIGN KEY (account_id, context) REFERENCES whitelists (account_id, context) ON DELETE CASCADE
);
