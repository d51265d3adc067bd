// Prisma 7 CLI configuration for the Data Hub example.
// Prisma 7 reads the connection URL from here, not from schema.prisma, and no
// longer loads .env by itself: DATABASE_URL must be in the environment for
// the commands that talk to the database (the release flow exports it).
// `prisma generate` and the build need no database, so without DATABASE_URL
// the datasource is left out rather than failing to resolve.
import { defineConfig } from "prisma/config";

const url = process.env.DATABASE_URL;

export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: {
    path: "prisma/migrations",
  },
  ...(url ? { datasource: { url } } : {}),
});
