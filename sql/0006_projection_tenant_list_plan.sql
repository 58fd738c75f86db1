-- 0006: a tenant's releases planned once per connection (issue 25).
--
-- releases_by_tenant(uuid) was a LANGUAGE sql function whose body (an
-- aggregate over a FROM) cannot be inlined into its caller. PostgreSQL 15
-- plans such a body afresh on every call and keeps the plan for that one
-- query only: at 1,000,000 releases over 10,000 tenants the planning was
-- about 1 ms of the call's 2.4 ms (pgbench, one client, prepared), and under
-- the API's load (wrk, 4 connections) the tenant list missed its 10 ms p99.
-- PL/pgSQL keeps the plan of its statement for the session, so the API's
-- pooled connections plan the body once. The same query, the same answer
-- and the same caller's rights (row-level security still applies: the
-- function is not SECURITY DEFINER); the comment and grants of 0002 stay.
CREATE OR REPLACE FUNCTION helmq.releases_by_tenant(p_tenant_id uuid) RETURNS json LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT COALESCE(json_agg(helmq.release_json(r) ORDER BY r.namespace, r.release_name, r.created_at), '[]')
              FROM helmq.releases r WHERE r.tenant_id = p_tenant_id);
END;
$$;
