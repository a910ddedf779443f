import { sql, type Kysely } from 'kysely'
import { refuseDataLoss } from '../online/data-loss-guard.ts'

/**
 * The schema production has today (made by Drizzle). On an existing database this migration is
 * adopted (verified against the catalog and recorded), never run; see migrator/legacy-adoption.ts.
 */
export async function up(db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const s = trx.schema
    const id = (c: any) => c.primaryKey().defaultTo(sql`gen_random_uuid()::text`)
    const now = (c: any) => c.notNull().defaultTo(sql`now()`)

    await s.createTable('users')
      .addColumn('id', 'text', id)
      .addColumn('email', 'text', (c) => c.notNull())
      .addColumn('name', 'text')
      .addColumn('image', 'text')
      .addColumn('role', 'text', (c) => c.notNull().defaultTo('member'))
      .addColumn('created_at', 'timestamp', now)
      .addColumn('updated_at', 'timestamp', now)
      .addUniqueConstraint('users_email_unique', ['email'])
      .execute()

    await s.createTable('skills')
      .addColumn('id', 'text', id)
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('slug', 'text', (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull())
      .addColumn('category', 'text', (c) => c.notNull())
      .addColumn('tags', sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'`))
      .addColumn('content', 'text', (c) => c.notNull())
      .addColumn('author_id', 'text')
      .addColumn('forked_from_id', 'text')
      .addColumn('total_uses', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('average_rating', 'integer')
      .addColumn('status', 'text', (c) => c.notNull().defaultTo('published'))
      .addColumn('created_at', 'timestamp', now)
      .addColumn('updated_at', 'timestamp', now)
      .addUniqueConstraint('skills_slug_unique', ['slug'])
      .addForeignKeyConstraint('skills_author_id_users_id_fk', ['author_id'], 'users', ['id'], (fk) => fk.onDelete('set null'))
      .execute()
    await s.createIndex('skills_author_id_idx').on('skills').column('author_id').execute()

    await s.createTable('ratings')
      .addColumn('id', 'text', id)
      .addColumn('skill_id', 'text', (c) => c.notNull())
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('rating', 'integer', (c) => c.notNull())
      .addColumn('comment', 'text')
      .addColumn('hours_saved', 'integer')
      .addColumn('created_at', 'timestamp', now)
      .addColumn('updated_at', 'timestamp', now)
      .addUniqueConstraint('ratings_skill_id_user_id_unique', ['skill_id', 'user_id'])
      .addForeignKeyConstraint('ratings_skill_id_skills_id_fk', ['skill_id'], 'skills', ['id'], (fk) => fk.onDelete('cascade'))
      .addForeignKeyConstraint('ratings_user_id_users_id_fk', ['user_id'], 'users', ['id'], (fk) => fk.onDelete('cascade'))
      .execute()

    await s.createTable('usage_events')
      .addColumn('id', 'text', id)
      .addColumn('tool_name', 'text', (c) => c.notNull())
      .addColumn('skill_id', 'text')
      .addColumn('user_id', 'text')
      .addColumn('metadata', 'jsonb')
      .addColumn('created_at', 'timestamp', now)
      .addForeignKeyConstraint('usage_events_skill_id_skills_id_fk', ['skill_id'], 'skills', ['id'], (fk) => fk.onDelete('set null'))
      .addForeignKeyConstraint('usage_events_user_id_users_id_fk', ['user_id'], 'users', ['id'], (fk) => fk.onDelete('set null'))
      .execute()
    await s.createIndex('usage_events_skill_id_idx').on('usage_events').column('skill_id').execute()
    await s.createIndex('usage_events_created_at_idx').on('usage_events').column('created_at').execute()

    await s.createTable('skill_versions')
      .addColumn('id', 'text', id)
      .addColumn('skill_id', 'text', (c) => c.notNull())
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('content_url', 'text', (c) => c.notNull())
      .addColumn('content_hash', 'text', (c) => c.notNull())
      .addColumn('content_type', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('description', 'text', (c) => c.notNull())
      .addColumn('metadata', 'jsonb')
      .addColumn('created_by', 'text')
      .addColumn('created_at', 'timestamp', now)
      .addUniqueConstraint('skill_versions_skill_id_version_unique', ['skill_id', 'version'])
      .addForeignKeyConstraint('skill_versions_skill_id_skills_id_fk', ['skill_id'], 'skills', ['id'], (fk) => fk.onDelete('cascade'))
      .addForeignKeyConstraint('skill_versions_created_by_users_id_fk', ['created_by'], 'users', ['id'], (fk) => fk.onDelete('set null'))
      .execute()

    await s.createTable('skill_embeddings')
      .addColumn('id', 'text', id)
      .addColumn('skill_id', 'text', (c) => c.notNull())
      .addColumn('embedding', sql`real[]`, (c) => c.notNull())
      .addColumn('model_name', 'text', (c) => c.notNull())
      .addColumn('model_version', 'text', (c) => c.notNull())
      .addColumn('input_hash', 'text', (c) => c.notNull())
      .addColumn('created_at', 'timestamp', now)
      .addColumn('updated_at', 'timestamp', now)
      .addUniqueConstraint('skill_embeddings_skill_id_unique', ['skill_id'])
      .addForeignKeyConstraint('skill_embeddings_skill_id_skills_id_fk', ['skill_id'], 'skills', ['id'], (fk) => fk.onDelete('cascade'))
      .execute()

    await s.createTable('skill_reviews')
      .addColumn('id', 'text', id)
      .addColumn('skill_id', 'text', (c) => c.notNull())
      .addColumn('requested_by', 'text')
      .addColumn('categories', 'jsonb', (c) => c.notNull())
      .addColumn('summary', 'text', (c) => c.notNull())
      .addColumn('suggested_description', 'text')
      .addColumn('reviewed_content_hash', 'text', (c) => c.notNull())
      .addColumn('model_name', 'text', (c) => c.notNull())
      .addColumn('is_visible', 'boolean', (c) => c.notNull().defaultTo(true))
      .addColumn('created_at', 'timestamp', now)
      .addUniqueConstraint('skill_reviews_skill_id_unique', ['skill_id'])
      .addForeignKeyConstraint('skill_reviews_skill_id_skills_id_fk', ['skill_id'], 'skills', ['id'], (fk) => fk.onDelete('cascade'))
      .addForeignKeyConstraint('skill_reviews_requested_by_users_id_fk', ['requested_by'], 'users', ['id'], (fk) => fk.onDelete('set null'))
      .execute()

    await s.createTable('api_keys')
      .addColumn('id', 'text', id)
      .addColumn('user_id', 'text', (c) => c.notNull())
      .addColumn('key_hash', 'text', (c) => c.notNull())
      .addColumn('key_prefix', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('last_used_at', 'timestamp')
      .addColumn('expires_at', 'timestamp')
      .addColumn('revoked_at', 'timestamp')
      .addColumn('created_at', 'timestamp', now)
      .addUniqueConstraint('api_keys_key_hash_unique', ['key_hash'])
      .addForeignKeyConstraint('api_keys_user_id_users_id_fk', ['user_id'], 'users', ['id'], (fk) => fk.onDelete('cascade'))
      .execute()

    await s.createTable('site_settings')
      .addColumn('id', 'text', (c) => c.primaryKey().defaultTo('default'))
      .addColumn('semantic_similarity_enabled', 'boolean', (c) => c.notNull().defaultTo(false))
      .addColumn('ollama_url', 'text', (c) => c.notNull().defaultTo('http://localhost:11434'))
      .addColumn('ollama_model', 'text', (c) => c.notNull().defaultTo('nomic-embed-text'))
      .addColumn('embedding_dimensions', 'integer', (c) => c.notNull().defaultTo(768))
      .addColumn('updated_at', 'timestamp', now)
      .execute()
  })
}

const BASELINE_TABLES = [
  'api_keys', 'ratings', 'site_settings', 'skill_embeddings', 'skill_reviews',
  'skill_versions', 'usage_events', 'skills', 'users',
] as const

export async function down(db: Kysely<any>): Promise<void> {
  await refuseDataLoss(db, 'dropping the baseline tables deletes all their rows', async () => {
    const counts = await Promise.all(
      BASELINE_TABLES.map((t) => sql<{ n: boolean }>`select exists (select from ${sql.table(t)}) as n`.execute(db)),
    )
    return counts.some((r) => r.rows[0]?.n)
  })
  await db.transaction().execute(async (trx) => {
    for (const table of BASELINE_TABLES) await trx.schema.dropTable(table).ifExists().execute()
  })
}
