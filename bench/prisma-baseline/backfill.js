// The Data Hub workspaceId backfill as a team would write it with Prisma
// Client (the `npm run datahub:backfill-workspace` of the release checklist):
// one loop over the users, a few updateMany calls per user.  Same rule as
// tenancy.backfill in examples/datahub/dhrun.config.lua, same ids for the
// personal workspaces, so it leaves the same data behind.
//
//   node backfill.js            PG* environment variables say where the database is
//   BENCH_PRISMA_MAX_SECONDS=N  stop after the user that crosses N seconds (default: no limit)
//
// Prints one JSON line: {rows, users_done, users_total, seconds, capped, tables}.
"use strict";
const { PrismaClient } = require("./generated/client");
const { PrismaPg } = require("@prisma/adapter-pg");

async function main() {
  const maxSeconds = Number(process.env.BENCH_PRISMA_MAX_SECONDS || 0);
  // The same unix socket (or host) the other strategies use, from PG*.
  const adapter = new PrismaPg({
    host: process.env.PGHOST,
    port: Number(process.env.PGPORT || 5432),
    user: process.env.PGUSER,
    database: process.env.PGDATABASE,
  });
  const prisma = new PrismaClient({ adapter });
  const t0 = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e9;
  const tables = { Connection: 0, MetricDaily: 0, Insight: 0, ChatMessage: 0 };
  let usersDone = 0;
  let capped = false;

  const users = await prisma.user.findMany({ select: { id: true, name: true, email: true }, orderBy: { id: "asc" } });
  for (const user of users) {
    if (maxSeconds > 0 && elapsed() >= maxSeconds) {
      capped = true;
      break;
    }
    // The user's own workspace: the oldest one they own; a personal one if none.
    const owner = await prisma.workspaceMember.findFirst({
      where: { userId: user.id, role: "OWNER" },
      orderBy: [{ createdAt: "asc" }, { id: "asc" }],
      select: { workspaceId: true },
    });
    let workspaceId = owner && owner.workspaceId;
    if (!workspaceId) {
      workspaceId = "ws_personal_" + user.id;
      await prisma.workspace.upsert({
        where: { id: workspaceId },
        update: {},
        create: {
          id: workspaceId,
          name: (user.name ?? user.email) + "'s workspace",
          slug: "personal-" + user.id.toLowerCase(),
          members: { create: { id: "wm_personal_" + user.id, userId: user.id, role: "OWNER" } },
        },
      });
    }
    const data = { workspaceId };
    tables.Connection += (await prisma.connection.updateMany({ where: { userId: user.id, workspaceId: null }, data }))
      .count;
    // A metric row takes its connection's workspace, which is the user's.
    tables.MetricDaily += (await prisma.metricDaily.updateMany({
      where: { connection: { userId: user.id }, workspaceId: null }, data,
    })).count;
    tables.Insight += (await prisma.insight.updateMany({ where: { userId: user.id, workspaceId: null }, data })).count;
    tables.ChatMessage += (await prisma.chatMessage.updateMany({ where: { userId: user.id, workspaceId: null }, data }))
      .count;
    usersDone += 1;
  }
  const seconds = elapsed();
  await prisma.$disconnect();
  const rows = Object.values(tables).reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({ rows, users_done: usersDone, users_total: users.length, seconds, capped, tables }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
