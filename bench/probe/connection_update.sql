-- Connect / disconnect: flip one Connection's status.
\set k random(1, :nkeys)
UPDATE "Connection" SET status = CASE WHEN status = 'CONNECTED' THEN 'NOT_CONNECTED' ELSE 'CONNECTED' END::"ConnectionStatus",
       "updatedAt" = now()
 WHERE id = (SELECT conn_id FROM bench.probe_keys WHERE n = :k);
