-- A generated insight for one connection, with its workspaceId.
\set k random(1, :nkeys)
INSERT INTO "Insight" (id, "userId", "connectionId", provider, title, body, "workspaceId")
SELECT 'probe-' || gen_random_uuid(), user_id, conn_id, provider, 'probe insight', 'written by the benchmark probe',
       ws_id
  FROM bench.probe_keys WHERE n = :k;
