import { readdirSync, readFileSync } from 'node:fs'
import { GUARD_MIGRATION, MIGRATIONS_DIR } from '../../src/migrator/migration-provider.ts'
import { sql, type Kysely } from 'kysely'
import { ROOT } from './cli.ts'

/** Every migration in the code, by name, oldest first (the guard of 0000 aside). */
export const ALL_MIGRATION_NAMES = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.ts$/.test(f)).map((f) => f.slice(0, -3)).filter((n) => n !== GUARD_MIGRATION).sort()
/** The migrations of the contract phase: those that export `phase = 'contract'`. */
export const CONTRACT_MIGRATION_NAMES = ALL_MIGRATION_NAMES.filter((n) => /^export const phase = 'contract'$/m.test(readFileSync(`${MIGRATIONS_DIR}${n}.ts`, 'utf8')))
/** What `latest` applies: every migration before the first of the contract phase. */
export const MIGRATION_NAMES = CONTRACT_MIGRATION_NAMES.length ? ALL_MIGRATION_NAMES.slice(0, ALL_MIGRATION_NAMES.indexOf(CONTRACT_MIGRATION_NAMES[0]!)) : ALL_MIGRATION_NAMES

export const LEGACY_SQL = readFileSync(`${ROOT}test/fixtures/legacy-schema.sql`, 'utf8')

/** Builds the database the single-tenant app has today (Drizzle-made), with a few rows in every table. */
export async function buildLegacyDatabase(db: Kysely<any>, { rows = true } = {}): Promise<void> {
  await sql.raw(LEGACY_SQL).execute(db)
  if (rows) await sql.raw(LEGACY_ROWS).execute(db)
}

export const LEGACY_ROWS = `
insert into users (id, email, name) values ('u1', 'ann@example.com', 'Ann'), ('u2', 'bob@example.com', 'Bob');
insert into skills (id, name, slug, description, category, content, author_id, tags)
  values ('s1', 'Lint', 'lint', 'Lints', 'dev', 'body', 'u1', '{a,b}'), ('s2', 'Fmt', 'fmt', 'Formats', 'dev', 'body', 'u2', '{}');
insert into ratings (id, skill_id, user_id, rating, comment) values ('r1', 's1', 'u2', 5, 'great'), ('r2', 's2', 'u1', 3, null);
insert into usage_events (id, tool_name, skill_id, user_id, metadata) values ('e1', 'cli', 's1', 'u1', '{"n":1}'), ('e2', 'web', null, null, null);
insert into skill_versions (id, skill_id, version, content_url, content_hash, content_type, name, description, created_by)
  values ('v1', 's1', 1, 'https://x/1', 'h1', 'text/markdown', 'Lint', 'Lints', 'u1');
insert into skill_embeddings (id, skill_id, embedding, model_name, model_version, input_hash)
  values ('m1', 's1', '{0.1,0.2,0.3}', 'nomic', '1', 'ih1');
insert into skill_reviews (id, skill_id, requested_by, categories, summary, reviewed_content_hash, model_name)
  values ('w1', 's1', 'u2', '{"quality":4}', 'fine', 'h1', 'llm');
insert into api_keys (id, user_id, key_hash, key_prefix, name) values ('k1', 'u1', 'hash-1', 'sk_1', 'laptop');
insert into site_settings (id, semantic_similarity_enabled) values ('default', true);
`

/** The nine data tables of the legacy schema (the ones that get tenant_id). */
export const TENANT_TABLES = [
  'users', 'skills', 'ratings', 'usage_events', 'skill_versions',
  'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings',
] as const
export const APP_TABLES = TENANT_TABLES

/** Every row of every app table as JSON text, per table, without tenant_id: what "nothing lost" compares. */
export async function tableContents(db: Kysely<any>, tables: readonly string[] = APP_TABLES): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {}
  for (const table of tables) {
    const { rows } = await sql<{ r: string }>`
      select (to_jsonb(t) - 'tenant_id')::text as r from ${sql.table(table)} t order by 1`.execute(db)
    out[table] = rows.map((x) => x.r)
  }
  return out
}
