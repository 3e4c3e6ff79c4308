-- Schema 3: fewer round trips per request step (store/postgres.rs, "Users'
-- locks"). A request takes its user's lock and reads its flow and the
-- user's lockout history in one statement, and its last commit releases the
-- lock in the same statement.

-- Takes the user's (session-level) advisory lock, then reads the flow (if
-- named) and the user's lockout history. A VOLATILE function's statements
-- each take a new snapshot, so the reads see every commit made before the
-- lock was granted (the previous holder's last one included).
CREATE OR REPLACE FUNCTION resetgate_lock(p_lock bigint, p_flow text, p_user text)
RETURNS TABLE (flow_body bytea, lockout_history bytea)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_lock(p_lock);
    flow_body := (SELECT f.body FROM flows f WHERE f.id = p_flow);
    lockout_history := (SELECT l.history FROM lockout l WHERE l.user_key = p_user);
    RETURN NEXT;
END
$$;

-- A commit (resetgate_commit) that also releases the user's lock, which
-- this session holds: the lock is taken again at transaction level (at once:
-- the session holds it) and the session's hold released, so the lock stays
-- held until this transaction ends, after its changes are visible. A session
-- that does not hold the lock refuses the commit (nothing is written).
CREATE OR REPLACE FUNCTION resetgate_commit_unlock(
    ops smallint[], a text[], b text[], c text[], n bigint[], f boolean[], d bytea[],
    p_chain text, p_expect_seq bigint, p_expect_head bytea,
    p_new_seq bigint, p_new_head bytea,
    p_group_seqs bigint[], p_group_counts integer[], p_groups bytea[],
    p_group_users text[], p_lock bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM resetgate_commit(ops, a, b, c, n, f, d, p_chain, p_expect_seq, p_expect_head,
        p_new_seq, p_new_head, p_group_seqs, p_group_counts, p_groups, p_group_users);
    PERFORM pg_advisory_xact_lock(p_lock);
    IF NOT pg_advisory_unlock(p_lock) THEN
        RAISE EXCEPTION 'this session does not hold the user''s lock' USING ERRCODE = 'RG002';
    END IF;
END
$$;
