/*
  Warnings:

  - Made the column `workspaceId` on table `ChatMessage` required. This step will fail if there are existing NULL values in that column.
  - Made the column `workspaceId` on table `Connection` required. This step will fail if there are existing NULL values in that column.
  - Made the column `workspaceId` on table `Insight` required. This step will fail if there are existing NULL values in that column.
  - Made the column `workspaceId` on table `MetricDaily` required. This step will fail if there are existing NULL values in that column.

*/
-- SafetyCheck (hand-written after `prisma migrate dev --create-only`)
-- Refuse before changing anything while any "workspaceId" is still NULL, with
-- one message naming every such table and its row count, instead of the bare
-- "column contains null values" of SET NOT NULL. Each table is first probed
-- with LIMIT 1 (an index probe on "<Table>_workspaceId_idx", cheap even on
-- 10M rows); only tables that have a NULL are counted.
DO $$
DECLARE
  tbl text;
  has_null boolean;
  n bigint;
  problems text[] := '{}';
BEGIN
  FOREACH tbl IN ARRAY ARRAY['Connection', 'MetricDaily', 'Insight', 'ChatMessage'] LOOP
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE "workspaceId" IS NULL LIMIT 1)', tbl) INTO has_null;
    IF has_null THEN
      EXECUTE format('SELECT count(*) FROM %I WHERE "workspaceId" IS NULL', tbl) INTO n;
      problems := problems || format('%s has %s row(s) with NULL "workspaceId"', tbl, n);
    END IF;
  END LOOP;
  IF cardinality(problems) > 0 THEN
    RAISE EXCEPTION '%: run the backfill (npm run datahub:backfill-workspace) before this migration',
      array_to_string(problems, '; ')
      USING ERRCODE = 'not_null_violation',
            HINT = 'npm run datahub:backfill-workspace, then npm run datahub:check-workspace; if Prisma recorded '
                   'this migration as failed, run npx prisma migrate resolve --rolled-back '
                   '20251219171000_datahub_workspace_not_null before deploying again.';
  END IF;
END
$$;

-- AlterTable
ALTER TABLE "ChatMessage" ALTER COLUMN "workspaceId" SET NOT NULL;

-- AlterTable
ALTER TABLE "Connection" ALTER COLUMN "workspaceId" SET NOT NULL;

-- AlterTable
ALTER TABLE "Insight" ALTER COLUMN "workspaceId" SET NOT NULL;

-- AlterTable
ALTER TABLE "MetricDaily" ALTER COLUMN "workspaceId" SET NOT NULL;
