import { sql, type Kysely } from 'kysely'

/** Rows per table at scale 1 (the production copy the issue measured on). */
export const SCALE_1 = {
  users: 20_000, skills: 50_000, ratings: 200_000, usage_events: 1_000_000, skill_versions: 100_000,
  skill_embeddings: 50_000, skill_reviews: 30_000, api_keys: 20_000,
} as const

export type Counts = { -readonly [K in keyof typeof SCALE_1]: number }

export function countsAt(scale: number): Counts {
  const out = {} as Counts
  for (const [k, v] of Object.entries(SCALE_1)) out[k as keyof Counts] = Math.max(1, Math.round(v * scale))
  out.skill_embeddings = Math.min(out.skill_embeddings, out.skills)
  out.skill_reviews = Math.min(out.skill_reviews, out.skills)
  out.ratings = Math.min(out.ratings, out.skills * out.users)
  return out
}

/**
 * Fills a database that has the legacy schema, generating every row on the server
 * (generate_series): ids are 'u1', 's1', … so a load generator can pick existing rows.
 * Every FK and unique key holds.
 */
export async function fillProductionCopy(db: Kysely<any>, c: Counts): Promise<void> {
  const S = c.skills
  const U = c.users
  await sql`insert into users (id, email, name, created_at)
    select 'u' || g, 'user' || g || '@example.com', 'User ' || g, now() - g * interval '1 minute' from generate_series(1, ${U}) g`.execute(db)
  await sql`insert into skills (id, name, slug, description, category, tags, content, author_id, total_uses, created_at)
    select 's' || g, 'Skill ' || g, 'skill-' || g, 'Does thing ' || g, 'cat' || (g % 20), array['t' || (g % 7)], repeat('x', 200),
      'u' || (1 + g % ${U}), g % 1000, now() - g * interval '1 minute' from generate_series(1, ${S}) g`.execute(db)
  await sql`insert into ratings (id, skill_id, user_id, rating, comment)
    select 'r' || g, 's' || (1 + g % ${S}), 'u' || (1 + (g / ${S}) % ${U}), 1 + g % 5, 'ok' from generate_series(0, ${c.ratings - 1}) g`.execute(db)
  await sql`insert into usage_events (id, tool_name, skill_id, user_id, metadata, created_at)
    select 'e' || g, 'tool' || (g % 10), 's' || (1 + g % ${S}), 'u' || (1 + g % ${U}), jsonb_build_object('n', g),
      now() - (g % 100000) * interval '1 minute' from generate_series(1, ${c.usage_events}) g`.execute(db)
  await sql`insert into skill_versions (id, skill_id, version, content_url, content_hash, content_type, name, description, created_by)
    select 'v' || g, 's' || (1 + g % ${S}), 1 + g / ${S}, 'https://cdn/' || g, md5(g::text), 'text/markdown', 'Skill', 'desc', 'u' || (1 + g % ${U})
    from generate_series(0, ${c.skill_versions - 1}) g`.execute(db)
  await sql`insert into skill_embeddings (id, skill_id, embedding, model_name, model_version, input_hash)
    select 'm' || g, 's' || g, array(select random()::real from generate_series(1, 16)), 'nomic', '1', md5(g::text)
    from generate_series(1, ${c.skill_embeddings}) g`.execute(db)
  await sql`insert into skill_reviews (id, skill_id, requested_by, categories, summary, reviewed_content_hash, model_name)
    select 'w' || g, 's' || g, 'u' || (1 + g % ${U}), '{"quality": 4}', 'fine', md5(g::text), 'llm' from generate_series(1, ${c.skill_reviews}) g`.execute(db)
  await sql`insert into api_keys (id, user_id, key_hash, key_prefix, name)
    select 'k' || g, 'u' || (1 + g % ${U}), md5('key' || g), 'sk_' || g, 'key ' || g from generate_series(1, ${c.api_keys}) g`.execute(db)
  await sql`insert into site_settings (id) values ('default')`.execute(db)
  await sql`analyze`.execute(db)
}
