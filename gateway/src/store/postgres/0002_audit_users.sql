-- Schema 2: the audit log by user. Each group lists the users its entries
-- concern (`users`, GIN-indexed), so a query by user reads that user's
-- groups instead of the whole log; the commit function takes each group's
-- users (one text per group, the users separated by newlines — user keys
-- are hex digests). Groups stored before are filled in by the migration's
-- own code (store/postgres.rs), in the same transaction.
ALTER TABLE audit_groups ADD COLUMN users text[] NOT NULL DEFAULT '{}';
CREATE INDEX audit_groups_users ON audit_groups USING gin (users);

DROP FUNCTION resetgate_commit(
    smallint[], text[], text[], text[], bigint[], boolean[], bytea[],
    text, bigint, bytea, bigint, bytea, bigint[], integer[], bytea[]
);

-- As in schema 1, and each group's users.
CREATE FUNCTION resetgate_commit(
    ops smallint[], a text[], b text[], c text[], n bigint[], f boolean[], d bytea[],
    p_chain text, p_expect_seq bigint, p_expect_head bytea,
    p_new_seq bigint, p_new_head bytea,
    p_group_seqs bigint[], p_group_counts integer[], p_groups bytea[],
    p_group_users text[]
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
            INSERT INTO audit_groups (position, chain, first_seq, entries, bytes, users)
            VALUES (nextval('audit_positions'), p_chain, p_group_seqs[i],
                    p_group_counts[i], p_groups[i],
                    string_to_array(p_group_users[i], E'\n'));
        END LOOP;
    END IF;
END
$$;
