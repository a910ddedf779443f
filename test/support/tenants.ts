import { sql, type Kysely, type Transaction } from 'kysely'
import { expect } from 'vitest'
import type { DB } from '../../src/db-types.ts'
import { parseTenantKey } from '../../src/tenancy/tenant-key.ts'
import { enterTenant } from '../../src/tenancy/with-tenant.ts'
import { TEST_TENANT_KEY } from './tenant-key.ts'

export const A = 'tenant-a'
export const B = 'tenant-b'

/**
 * Makes the statements that follow it in the same transaction (or multi-statement query) create
 * tenants although other superuser sessions (the test's own pool) are connected: none of them is an
 * old single-tenant app, which is what the guard on tenants is about.
 */
export const NOT_THE_OLD_APP = `select set_config('skills_db.unconfined_sessions_ok', 'on', true);`

/**
 * Two tenants with a row in every table each, written as the superuser (who bypasses RLS).
 * Both tenants use the slug 'lint' and a 'default' settings row: per-tenant keys allow it.
 */
export async function seedTwoTenants(admin: Kysely<any>): Promise<void> {
  await sql.raw(`${NOT_THE_OLD_APP}
    insert into tenants (id, name, slug) values ('${A}', 'A', 'a'), ('${B}', 'B', 'b');`).execute(admin)
  await seedRowsOfTwoTenants(admin)
}

/** {@link seedTwoTenants}'s rows of tenants A and B, once the two tenants exist (made by createTenant, say). */
export async function seedRowsOfTwoTenants(admin: Kysely<any>): Promise<void> {
  await sql.raw(`
    insert into users (id, tenant_id, email) values
      ('uA1', '${A}', 'ann@a'), ('uA2', '${A}', 'al@a'), ('uB1', '${B}', 'ann@a'), ('uB2', '${B}', 'bo@b');
    insert into skills (id, tenant_id, name, slug, description, category, content, author_id) values
      ('sA1', '${A}', 'Lint', 'lint', 'd', 'dev', 'c', 'uA1'), ('sA2', '${A}', 'Fmt', 'fmt', 'd', 'dev', 'c', 'uA2'),
      ('sB1', '${B}', 'Lint', 'lint', 'd', 'dev', 'c', 'uB1'), ('sB2', '${B}', 'Fmt', 'fmt', 'd', 'dev', 'c', 'uB2');
    insert into ratings (id, tenant_id, skill_id, user_id, rating) values ('rA1', '${A}', 'sA1', 'uA1', 5), ('rB1', '${B}', 'sB1', 'uB1', 4);
    insert into usage_events (id, tenant_id, tool_name, skill_id, user_id) values ('eA1', '${A}', 'cli', 'sA1', 'uA1'), ('eB1', '${B}', 'cli', 'sB1', 'uB1');
    insert into skill_versions (id, tenant_id, skill_id, version, content_url, content_hash, content_type, name, description, created_by) values
      ('vA1', '${A}', 'sA1', 1, 'u', 'h', 't', 'n', 'd', 'uA1'), ('vB1', '${B}', 'sB1', 2, 'u', 'h', 't', 'n', 'd', 'uB1');
    insert into skill_embeddings (id, tenant_id, skill_id, embedding, model_name, model_version, input_hash) values
      ('mA1', '${A}', 'sA1', '{1,2}', 'm', '1', 'i'), ('mB1', '${B}', 'sB1', '{1,2}', 'm', '1', 'i');
    insert into skill_reviews (id, tenant_id, skill_id, requested_by, categories, summary, reviewed_content_hash, model_name) values
      ('wA1', '${A}', 'sA1', 'uA1', '{}', 's', 'h', 'm'), ('wB1', '${B}', 'sB1', 'uB1', '{}', 's', 'h', 'm');
    insert into api_keys (id, tenant_id, user_id, key_hash, key_prefix, name, revoked_at, expires_at) values
      ('kA1', '${A}', 'uA1', 'hash-a', 'sk_a', 'a', null, null),
      ('kB1', '${B}', 'uB1', 'hash-b', 'sk_b', 'b', null, now() + interval '1 day'),
      ('kA2', '${A}', 'uA2', 'hash-a-revoked', 'sk_r', 'r', now(), null),
      ('kA3', '${A}', 'uA2', 'hash-a-expired', 'sk_e', 'e', null, now() - interval '1 day');
    insert into site_settings (id, tenant_id, ollama_model) values ('default', '${A}', 'model-a'), ('default', '${B}', 'model-b');
    insert into audit_logs (tenant_id, actor_id, action) values ('${A}', 'uA1', 'seed'), ('${B}', 'uB1', 'seed');
  `).execute(admin)
}

class Rollback extends Error {}

/**
 * Runs `fn` in a transaction that is always rolled back, in `context`; returns fn's result or the
 * error it threw. Entering an unknown tenant throws (as withTenant does), before `fn`.
 */
export async function attempt<T>(db: Kysely<DB>, context: TenantContext, fn: (trx: Transaction<DB>) => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: { code?: string; message: string } }> {
  let outcome: { ok: true; value: T } | { ok: false; error: { code?: string; message: string } } | undefined
  try {
    await db.transaction().execute(async (trx) => {
      if (context.kind === 'switched') {
        await enterTenant(trx, context.from, KEY)
        await take(trx, context.to)
      } else if (context.kind !== 'none') {
        await take(trx, context)
      }
      try {
        outcome = { ok: true, value: await fn(trx) }
      } catch (error) {
        outcome = { ok: false, error: error as { code?: string; message: string } }
      }
      throw new Rollback()
    })
  } catch (error) {
    if (!(error instanceof Rollback)) throw error
  }
  return outcome!
}

/**
 * One step of a transaction's tenant context: a tenant entered with the key (as withTenant does),
 * or what SQL of the app role can do without the key: name a tenant in the setting, empty the
 * setting, or turn off the flag that says a tenant was entered.
 */
export type ContextStep = { kind: 'tenant'; id: string } | { kind: 'named'; id: string } | { kind: 'empty' } | { kind: 'unflagged' }

/** A transaction's tenant context: one step, none, or tenant `from` entered with the key and then a switch inside the same transaction. */
export type TenantContext = ContextStep | { kind: 'none' } | { kind: 'switched'; from: string; to: ContextStep }

const KEY = parseTenantKey(TEST_TENANT_KEY, 'TEST_TENANT_KEY')

async function take(trx: Transaction<DB>, step: ContextStep): Promise<void> {
  if (step.kind === 'tenant') await enterTenant(trx, step.id, KEY)
  if (step.kind === 'named') await sql`select set_config('app.current_tenant_id', ${step.id}, true)`.execute(trx)
  if (step.kind === 'empty') await sql`select set_config('app.current_tenant_id', '', true)`.execute(trx)
  if (step.kind === 'unflagged') await sql`select set_config('tenant_context.entered', 'off', true)`.execute(trx)
}

/**
 * The tenant whose rows a transaction in `context` works on: the last one entered with the key,
 * when nothing but the key changed it since. Anything else, a forged switch after a real entry
 * included, must fail closed: no tenant's rows, no write.
 */
export function tenantSeen(context: TenantContext): string | undefined {
  if (context.kind === 'tenant') return context.id
  if (context.kind === 'switched' && context.to.kind === 'tenant') return context.to.id
  return undefined
}

/**
 * Row security's refusal of a new row in `table`, as Postgres words it (after `prefix`). On Citus
 * the error comes from a worker and names the shard (`"users_102008"`), as docs/app.md, "What an app
 * changes on Citus", tells apps.
 */
export function rowSecurityRefusal(table: string, { shardNames = false, prefix = '' } = {}): unknown {
  const message = `new row violates row-level security policy for table "${table}"`
  return shardNames ? expect.stringMatching(new RegExp(`^${prefix}new row violates row-level security policy for table "${table}(_\\d+)?"$`)) : prefix + message
}
