/**
 * The plan's five migrations, verbatim from shared/seeds/000_ddd05f4c674db233.txt: what the benchmark
 * compares skills-db against (run as plain SQL in one transaction, the way the plan describes).
 */
export const PLAN_STEPS: { name: string; sql: string }[] = [
  {
    name: "0002_add_tenants",
    sql: `-- Create tenants table
CREATE TABLE IF NOT EXISTS tenants (
  id text PRIMARY KEY DEFAULT gen_random_uuid()::text,
  name text NOT NULL,
  slug text NOT NULL UNIQUE,
  domain text,
  logo text,
  is_active boolean NOT NULL DEFAULT true,
  plan text NOT NULL DEFAULT 'freemium',
  created_at timestamp NOT NULL DEFAULT now(),
  updated_at timestamp NOT NULL DEFAULT now()
);

-- Seed a default tenant for backfilling existing data
INSERT INTO tenants (id, name, slug, domain)
VALUES ('default-tenant-000-0000-000000000000', 'Default', 'default', NULL)
ON CONFLICT (slug) DO NOTHING;
`,
  },
  {
    name: "0003_add_tenant_id_columns",
    sql: `-- Add nullable tenant_id to all 9 data tables
ALTER TABLE users ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE skills ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE ratings ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE skill_versions ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE skill_embeddings ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE skill_reviews ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS tenant_id text;
ALTER TABLE site_settings ADD COLUMN IF NOT EXISTS tenant_id text;
`,
  },
  {
    name: "0004_backfill_tenant_id",
    sql: `-- Backfill all existing rows with the default tenant ID
-- WHERE tenant_id IS NULL makes this idempotent (safe to re-run)
UPDATE users SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE skills SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE ratings SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE usage_events SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE skill_versions SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE skill_embeddings SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE skill_reviews SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE api_keys SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
UPDATE site_settings SET tenant_id = 'default-tenant-000-0000-000000000000' WHERE tenant_id IS NULL;
`,
  },
  {
    name: "0005_enforce_tenant_id",
    sql: `-- Enforce NOT NULL on all tenant_id columns
ALTER TABLE users ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE skills ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE ratings ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE usage_events ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE skill_versions ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE skill_embeddings ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE skill_reviews ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE api_keys ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE site_settings ALTER COLUMN tenant_id SET NOT NULL;

-- Add foreign key constraints
ALTER TABLE users ADD CONSTRAINT users_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE skills ADD CONSTRAINT skills_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE ratings ADD CONSTRAINT ratings_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE usage_events ADD CONSTRAINT usage_events_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE skill_versions ADD CONSTRAINT skill_versions_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE skill_embeddings ADD CONSTRAINT skill_embeddings_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE skill_reviews ADD CONSTRAINT skill_reviews_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE api_keys ADD CONSTRAINT api_keys_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);
ALTER TABLE site_settings ADD CONSTRAINT site_settings_tenant_id_fk FOREIGN KEY (tenant_id) REFERENCES tenants(id);

-- Replace global unique constraints with composite unique constraints
-- Skills: slug is unique per tenant (not globally)
ALTER TABLE skills DROP CONSTRAINT IF EXISTS skills_slug_unique;
ALTER TABLE skills ADD CONSTRAINT skills_tenant_slug_unique UNIQUE (tenant_id, slug);

-- Skill embeddings: skill_id is unique per tenant
ALTER TABLE skill_embeddings DROP CONSTRAINT IF EXISTS skill_embeddings_skill_id_unique;
ALTER TABLE skill_embeddings ADD CONSTRAINT skill_embeddings_tenant_skill_unique UNIQUE (tenant_id, skill_id);

-- Skill reviews: skill_id is unique per tenant
ALTER TABLE skill_reviews DROP CONSTRAINT IF EXISTS skill_reviews_skill_id_unique;
ALTER TABLE skill_reviews ADD CONSTRAINT skill_reviews_tenant_skill_unique UNIQUE (tenant_id, skill_id);

-- Site settings: id is unique per tenant (each tenant gets its own settings row)
-- Note: site_settings already has id as PK; add composite unique for (tenant_id, id)
-- Actually, since id is already PK, we just need tenant_id to be part of the lookup.
-- The singleton pattern changes: instead of WHERE id='default', use WHERE tenant_id=? AND id='default'

-- Add tenant_id indexes for query performance
CREATE INDEX IF NOT EXISTS users_tenant_id_idx ON users (tenant_id);
CREATE INDEX IF NOT EXISTS skills_tenant_id_idx ON skills (tenant_id);
CREATE INDEX IF NOT EXISTS ratings_tenant_id_idx ON ratings (tenant_id);
CREATE INDEX IF NOT EXISTS usage_events_tenant_id_idx ON usage_events (tenant_id);
CREATE INDEX IF NOT EXISTS skill_versions_tenant_id_idx ON skill_versions (tenant_id);
CREATE INDEX IF NOT EXISTS skill_embeddings_tenant_id_idx ON skill_embeddings (tenant_id);
CREATE INDEX IF NOT EXISTS skill_reviews_tenant_id_idx ON skill_reviews (tenant_id);
CREATE INDEX IF NOT EXISTS api_keys_tenant_id_idx ON api_keys (tenant_id);
CREATE INDEX IF NOT EXISTS site_settings_tenant_id_idx ON site_settings (tenant_id);

-- Enable RLS on all tenant-scoped tables
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE skills ENABLE ROW LEVEL SECURITY;
ALTER TABLE ratings ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE skill_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE skill_embeddings ENABLE ROW LEVEL SECURITY;
ALTER TABLE skill_reviews ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE site_settings ENABLE ROW LEVEL SECURITY;

-- FORCE RLS so even table owners see filtered rows
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE skills FORCE ROW LEVEL SECURITY;
ALTER TABLE ratings FORCE ROW LEVEL SECURITY;
ALTER TABLE usage_events FORCE ROW LEVEL SECURITY;
ALTER TABLE skill_versions FORCE ROW LEVEL SECURITY;
ALTER TABLE skill_embeddings FORCE ROW LEVEL SECURITY;
ALTER TABLE skill_reviews FORCE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE site_settings FORCE ROW LEVEL SECURITY;

-- Create RLS policies for tenant isolation
-- Policy: rows are visible/writable only when tenant_id matches the session variable
CREATE POLICY tenant_isolation ON users FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON skills FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON ratings FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON usage_events FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON skill_versions FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON skill_embeddings FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON skill_reviews FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON api_keys FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE POLICY tenant_isolation ON site_settings FOR ALL
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));
`,
  },
  {
    name: "0006_create_audit_logs",
    sql: `-- Create append-only audit_logs table
CREATE TABLE IF NOT EXISTS audit_logs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  actor_id text,
  tenant_id text,
  action text NOT NULL,
  resource_type text,
  resource_id text,
  ip_address text,
  metadata jsonb,
  created_at timestamptz DEFAULT now() NOT NULL
);

-- Indexes for efficient querying
CREATE INDEX IF NOT EXISTS audit_logs_tenant_created_idx ON audit_logs (tenant_id, created_at DESC);
CREATE INDEX IF NOT EXISTS audit_logs_actor_idx ON audit_logs (actor_id, created_at DESC);
CREATE INDEX IF NOT EXISTS audit_logs_action_idx ON audit_logs (action, created_at DESC);

-- Make append-only: create trigger to prevent UPDATE/DELETE
-- Using trigger approach (works regardless of database role setup)
CREATE OR REPLACE FUNCTION prevent_audit_modification()
RETURNS TRIGGER AS $$
BEGIN
  RAISE EXCEPTION 'Direct modification of audit_logs is forbidden';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER no_audit_update
  BEFORE UPDATE OR DELETE ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION prevent_audit_modification();
`,
  },
]
