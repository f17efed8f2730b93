-- refcache schema version 3: a submission is one statement.

-- The live value of call `p_key` from an execution other than `p_ref`, read with a snapshot of its own: called by
-- the submission's INSERT after it inserted the row (it may have waited there for the transaction that ended the
-- call's previous execution, whose value the INSERT's own snapshot does not see). VOLATILE plpgsql, so that it is
-- never inlined into the calling statement and its query takes a fresh snapshot (READ COMMITTED).
CREATE FUNCTION {schema}.landed_value(p_key text, p_ref text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (SELECT v.ref_id FROM {schema}.task_values v
            WHERE v.cache_key = p_key AND v.ref_id <> p_ref AND v.expires_at > now()
            ORDER BY v.expires_at DESC LIMIT 1);
END
$$;
