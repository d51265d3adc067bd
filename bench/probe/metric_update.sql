-- An app re-syncing one day of metrics: update an existing MetricDaily row
-- (a row lock on a row the backfill may be rewriting at that moment).
\set id random(1, :maxid)
UPDATE "MetricDaily" SET clicks = clicks + 1 WHERE id = :id;
