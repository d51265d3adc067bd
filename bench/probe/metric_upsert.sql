-- An app syncing a new day for a connection: insert (or bump) a MetricDaily
-- row, written with its workspaceId as the new app version does.
\set k random(1, :nkeys)
\set d random(1, 36500)
INSERT INTO "MetricDaily" ("connectionId", provider, date, impressions, clicks, spend, conversions, "workspaceId")
SELECT conn_id, provider, date '2025-12-01' + :d::int, 100, 1, 0.50, 0, ws_id FROM bench.probe_keys WHERE n = :k
ON CONFLICT ("connectionId", date) DO UPDATE SET clicks = "MetricDaily".clicks + 1;
