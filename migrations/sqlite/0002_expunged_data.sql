-- An expunged message stays readable for the sessions that have not yet been told of
-- the expunge (RFC 3501 allows no EXPUNGE response during FETCH, STORE and SEARCH, so a
-- session may still show it): its tombstone keeps the row as it was when expunged,
-- and its blob is kept while a tombstone refers to it. `Store::purge_expunged` forgets
-- the data (blob_hash becomes NULL) once it is older than the retention; the tombstone
-- itself stays for QRESYNC.
ALTER TABLE expunged ADD COLUMN internal_date BIGINT;
ALTER TABLE expunged ADD COLUMN internal_date_tz BIGINT;
ALTER TABLE expunged ADD COLUMN size BIGINT;
ALTER TABLE expunged ADD COLUMN system_flags BIGINT;
ALTER TABLE expunged ADD COLUMN keywords TEXT;
-- NULL: no data kept (expunged before this migration, or purged).
ALTER TABLE expunged ADD COLUMN blob_hash TEXT;
-- unix seconds
ALTER TABLE expunged ADD COLUMN expunged_at BIGINT;
CREATE INDEX expunged_kept ON expunged (expunged_at) WHERE blob_hash IS NOT NULL;
CREATE INDEX expunged_by_blob ON expunged (account_id, blob_hash) WHERE blob_hash IS NOT NULL;
