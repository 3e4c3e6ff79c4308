-- resetgate's PostgreSQL schema, version 1. Applied by the gateway at start
-- (store::postgres::migrate), in one transaction, under an advisory lock.
-- Keys are text in the "C" collation: byte order, as the sled backend
-- orders them, whatever the database's default collation.

-- Flows by id; `due_ms` is when the flow expires or its next timer fires.
CREATE TABLE flows (
    id          text COLLATE "C" PRIMARY KEY,
    user_key    text COLLATE "C" NOT NULL,
    version     text COLLATE "C" NOT NULL,
    in_progress boolean NOT NULL,
    due_ms      bigint NOT NULL,
    body        bytea NOT NULL
);
-- flows_due: the flows due by a time, in (due_ms, id) order.
CREATE INDEX flows_by_due ON flows (due_ms, id);
-- versions_in_progress: the workflow versions that running flows use.
CREATE INDEX flows_in_progress ON flows (version) WHERE in_progress;

-- A user's lockout history (opaque to the store).
CREATE TABLE lockout (
    user_key text COLLATE "C" PRIMARY KEY,
    history  bytea NOT NULL
);

-- Enrollment data by user and gate (sealed by the runtime).
CREATE TABLE enrollments (
    user_key text COLLATE "C" NOT NULL,
    gate     text COLLATE "C" NOT NULL,
    data     bytea NOT NULL,
    PRIMARY KEY (user_key, gate)
);

-- Plugins' key-value namespaces.
CREATE TABLE kv (
    namespace text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    value     bytea NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- Due work (outbox deliveries, timers): claimed by one gateway at a time
-- with a lease (claim_due: FOR UPDATE SKIP LOCKED).
CREATE TABLE work (
    queue          text COLLATE "C" NOT NULL,
    id             text COLLATE "C" NOT NULL,
    due_ms         bigint NOT NULL,
    payload        bytea NOT NULL,
    attempt        integer NOT NULL DEFAULT 0,
    lease_until_ms bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, id)
);
CREATE INDEX work_by_due ON work (queue, due_ms, id);

-- The audit log: one hash chain per gateway lane (`{node}/{lane}`). A
-- chain's head is updated by compare-and-swap in the transaction that
-- appends to it; its entries are stored in groups (one request's records),
-- in the byte format of store/audit.rs, under the group's first sequence
-- number. `position` orders the groups of every chain (the global order).
CREATE TABLE audit_chains (
    chain    text COLLATE "C" PRIMARY KEY,
    next_seq bigint NOT NULL,
    head     bytea NOT NULL
);
-- A group's entries are at positions position * 1024 + 0, 1, ...: groups
-- take a number from a sequence (no lock shared by every commit), so the
-- global order has gaps; a group holds at most 1024 entries.
CREATE SEQUENCE audit_positions MINVALUE 0 START 0;
CREATE TABLE audit_groups (
    position  bigint PRIMARY KEY,
    chain     text COLLATE "C" NOT NULL,
    first_seq bigint NOT NULL,
    entries   integer NOT NULL,
    bytes     bytea NOT NULL,
    UNIQUE (chain, first_seq)
);

-- One commit: a request's changes in order, then its audit groups appended
-- to chain p_chain, whose head moves from (p_expect_seq, p_expect_head) to
-- (p_new_seq, p_new_head) by compare-and-swap; SQLSTATE RG001 if the head
-- is not where the caller expected (the caller re-reads it and tries
-- again). Called as one statement, so it is one transaction and one round
-- trip. Change i is ops[i] with its arguments at index i of the arrays:
--   1 put flow (a id, b user, c version, f in_progress, n due_ms, d body)
--   2 delete flow (a id)
--   3 put lockout (a user, d history)
--   4 put enrollment (a user, b gate, d data)
--   5 delete enrollment (a user, b gate)
--   6 put kv (a namespace, b key, d value)
--   7 delete kv (a namespace, b key)
--   8 enqueue (a queue, b id, n due_ms, d payload): unleased, attempt 0
--   9 finish (a queue, b id)
--  10 retry (a queue, b id, n due_ms): unleased, due again
--  11 schedule (a queue, b id, n due_ms, d payload): enqueue unless present
CREATE FUNCTION resetgate_commit(
    ops smallint[], a text[], b text[], c text[], n bigint[], f boolean[], d bytea[],
    p_chain text, p_expect_seq bigint, p_expect_head bytea,
    p_new_seq bigint, p_new_head bytea,
    p_group_seqs bigint[], p_group_counts integer[], p_groups bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    moved integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(ops, 1), 0) LOOP
        CASE ops[i]
        WHEN 1 THEN
            INSERT INTO flows (id, user_key, version, in_progress, due_ms, body)
            VALUES (a[i], b[i], c[i], f[i], n[i], d[i])
            ON CONFLICT (id) DO UPDATE SET user_key = EXCLUDED.user_key,
                version = EXCLUDED.version, in_progress = EXCLUDED.in_progress,
                due_ms = EXCLUDED.due_ms, body = EXCLUDED.body;
        WHEN 2 THEN
            DELETE FROM flows WHERE id = a[i];
        WHEN 3 THEN
            INSERT INTO lockout (user_key, history) VALUES (a[i], d[i])
            ON CONFLICT (user_key) DO UPDATE SET history = EXCLUDED.history;
        WHEN 4 THEN
            INSERT INTO enrollments (user_key, gate, data) VALUES (a[i], b[i], d[i])
            ON CONFLICT (user_key, gate) DO UPDATE SET data = EXCLUDED.data;
        WHEN 5 THEN
            DELETE FROM enrollments WHERE user_key = a[i] AND gate = b[i];
        WHEN 6 THEN
            INSERT INTO kv (namespace, key, value) VALUES (a[i], b[i], d[i])
            ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value;
        WHEN 7 THEN
            DELETE FROM kv WHERE namespace = a[i] AND key = b[i];
        WHEN 8 THEN
            INSERT INTO work (queue, id, due_ms, payload, attempt, lease_until_ms)
            VALUES (a[i], b[i], n[i], d[i], 0, 0)
            ON CONFLICT (queue, id) DO UPDATE SET due_ms = EXCLUDED.due_ms,
                payload = EXCLUDED.payload, attempt = 0, lease_until_ms = 0;
        WHEN 9 THEN
            DELETE FROM work WHERE queue = a[i] AND id = b[i];
        WHEN 10 THEN
            UPDATE work SET due_ms = n[i], lease_until_ms = 0
            WHERE queue = a[i] AND id = b[i];
        WHEN 11 THEN
            INSERT INTO work (queue, id, due_ms, payload, attempt, lease_until_ms)
            VALUES (a[i], b[i], n[i], d[i], 0, 0)
            ON CONFLICT (queue, id) DO NOTHING;
        ELSE
            RAISE EXCEPTION 'unknown change kind %', ops[i];
        END CASE;
    END LOOP;
    IF p_chain IS NOT NULL THEN
        IF p_expect_seq = 0 THEN
            INSERT INTO audit_chains (chain, next_seq, head)
            VALUES (p_chain, p_new_seq, p_new_head)
            ON CONFLICT (chain) DO NOTHING;
        ELSE
            UPDATE audit_chains SET next_seq = p_new_seq, head = p_new_head
            WHERE chain = p_chain AND next_seq = p_expect_seq AND head = p_expect_head;
        END IF;
        GET DIAGNOSTICS moved = ROW_COUNT;
        IF moved <> 1 THEN
            RAISE EXCEPTION 'the head of audit chain % moved', p_chain USING ERRCODE = 'RG001';
        END IF;
        FOR i IN 1 .. coalesce(array_length(p_groups, 1), 0) LOOP
            INSERT INTO audit_groups (position, chain, first_seq, entries, bytes)
            VALUES (nextval('audit_positions'), p_chain, p_group_seqs[i],
                    p_group_counts[i], p_groups[i]);
        END LOOP;
    END IF;
END
$$;
