// The directory capability: a group as its members and readers see it.

extension PostgresSchema {
    /// One group's view, as JSON, at a store instant; in a partitioned group a lease's slot is its partition.
    static func directoryFunctions(schema s: String) -> String {
        """
            CREATE OR REPLACE FUNCTION "\(s)".understudy_view(p_group text, p_now bigint) RETURNS jsonb
            LANGUAGE sql STABLE AS $fn$
                SELECT jsonb_build_object(
                    'group', g.name,
                    'goal', g.active_goal,
                    'partitioned', g.partitioned,
                    'lastToken', g.last_token,
                    'members', coalesce((
                        SELECT jsonb_agg(jsonb_build_object(
                            'id', m.member_id, 'incarnation', m.incarnation, 'weight', m.weight, 'host', m.host,
                            'pid', m.pid, 'join', m.join_seq, 'phase', m.phase, 'age', p_now - m.heartbeat_at
                        ) ORDER BY m.join_seq)
                        FROM "\(s)".members m WHERE m.group_name = g.name AND m.expires_at > p_now), '[]'::jsonb),
                    'leases', coalesce((
                        SELECT jsonb_agg(jsonb_build_object(
                            'slot', l.slot, 'holder', l.holder, 'token', l.token, 'remaining', l.expires_at - p_now
                        ) ORDER BY l.slot)
                        FROM "\(s)".leases l
                        WHERE l.group_name = g.name AND l.holder IS NOT NULL AND l.expires_at > p_now), '[]'::jsonb)
                )
                FROM "\(s)".groups g WHERE g.name = p_group
            $fn$;

            DROP FUNCTION IF EXISTS "\(s)".understudy_heartbeat(text, int, bigint, text, text, int, text, int, text, text, bigint, bigint);
        """
    }
}
