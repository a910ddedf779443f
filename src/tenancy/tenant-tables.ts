/** The nine data tables that carry tenant_id. */
export const TENANT_TABLES = [
  'users', 'skills', 'ratings', 'usage_events', 'skill_versions',
  'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings',
] as const
