-- A chat message, with its workspaceId.
\set k random(1, :nkeys)
INSERT INTO "ChatMessage" (id, "userId", role, content, "workspaceId")
SELECT 'probe-' || gen_random_uuid(), user_id, 'USER', 'Show me my data', ws_id FROM bench.probe_keys WHERE n = :k;
