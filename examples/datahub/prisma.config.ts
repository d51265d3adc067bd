// Prisma 7 CLI configuration for the Data Hub example.
// Prisma 7 reads the connection URL from here, not from schema.prisma, and no
// longer loads .env by itself: DATABASE_URL must be in the environment (the
// release flow exports it for every npx prisma step).
import { defineConfig, env } from "prisma/config";

export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: {
    path: "prisma/migrations",
  },
  datasource: {
    url: env("DATABASE_URL"),
  },
});
