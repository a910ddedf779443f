import type { IncomingMessage } from 'node:http'
import type { Kysely } from 'kysely'
import { createTenant, recordAudit, TenantRequestError, TenantTakenError, withTenant, type DB } from '../../src/index.ts'
import { authenticate, issueApiKey } from './auth.ts'
import { field, HttpError, readJson } from './http-json.ts'

export interface Answer {
  status: number
  body: unknown
}

/** POST /signup {name, slug, email}: the tenant, its first admin, and the admin's API key (shown this once). */
export async function signUp(db: Kysely<DB>, req: IncomingMessage): Promise<Answer> {
  const body = await readJson(req)
  const name = field(body, 'name', true)
  const slug = field(body, 'slug', true)
  const email = field(body, 'email', true)
  let created
  try {
    created = await createTenant(db, { name, slug }, { email })
  } catch (error) {
    if (error instanceof TenantTakenError) throw new HttpError(409, `the slug "${slug}" is taken: choose another`)
    if (error instanceof TenantRequestError) throw new HttpError(400, error.message)
    throw error
  }
  const { tenantId, adminId } = created
  const apiKey = await withTenant(db, tenantId, async (trx) => {
    const key = await issueApiKey(trx, tenantId, adminId!, 'sign-up')
    await recordAudit(trx, { actorId: adminId!, action: 'tenant.signup' })
    return key
  })
  return { status: 201, body: { tenantId, slug, apiKey } }
}

/** GET /t/:slug/skills: the tenant's skills, and only its own (row security, inside withTenant). */
export async function listSkills(db: Kysely<DB>, req: IncomingMessage, slug: string): Promise<Answer> {
  const { tenantId } = await authenticate(db, req, slug)
  const skills = await withTenant(db, tenantId, (trx) => trx.selectFrom('skills')
    .select(['id', 'slug', 'name', 'description', 'category', 'average_rating'])
    .orderBy('created_at').orderBy('id').execute())
  return { status: 200, body: { skills } }
}

/** POST /t/:slug/skills {name, description?, category?, content?}: a skill of the caller's. */
export async function addSkill(db: Kysely<DB>, req: IncomingMessage, slug: string): Promise<Answer> {
  const { tenantId, userId } = await authenticate(db, req, slug)
  const body = await readJson(req)
  const name = field(body, 'name', true)
  const skillSlug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')
  if (!skillSlug) throw new HttpError(400, '"name" needs a letter or a digit')
  try {
    const skill = await withTenant(db, tenantId, (trx) => trx.insertInto('skills').values({
      name, slug: skillSlug, author_id: userId,
      description: field(body, 'description') ?? '', category: field(body, 'category') ?? 'general', content: field(body, 'content') ?? '',
    }).returning(['id', 'slug', 'name']).executeTakeFirstOrThrow())
    return { status: 201, body: skill }
  } catch (error) {
    // Skill slugs are unique per tenant (0005): another tenant's skill of the same name is no conflict.
    if ((error as { code?: string }).code === '23505') throw new HttpError(409, `this tenant has a skill "${skillSlug}" already`)
    throw error
  }
}

/** POST /t/:slug/skills/:id/ratings {rating: 1–5}: the caller's rating (a second one replaces it), audited in the same transaction. */
export async function rateSkill(db: Kysely<DB>, req: IncomingMessage, slug: string, skillId: string): Promise<Answer> {
  const { tenantId, userId } = await authenticate(db, req, slug)
  const rating = (await readJson(req)).rating
  if (typeof rating !== 'number' || !Number.isInteger(rating) || rating < 1 || rating > 5) throw new HttpError(400, '"rating" must be a whole number from 1 to 5')
  return withTenant(db, tenantId, async (trx) => {
    // Another tenant's skill is not found either: row security hides it.
    const skill = await trx.selectFrom('skills').select('id').where('id', '=', skillId).executeTakeFirst()
    if (!skill) throw new HttpError(404, `no skill ${skillId} in /t/${slug}`)
    // One statement: an update, then an insert, let two first ratings at once both insert (one 500 in an outside review).
    await trx.insertInto('ratings').values({ skill_id: skillId, user_id: userId, rating })
      .onConflict((oc) => oc.columns(['tenant_id', 'skill_id', 'user_id']).doUpdateSet({ rating, updated_at: new Date() })).execute()
    const { average } = await trx.selectFrom('ratings').select((eb) => eb.fn.avg<string>('rating').as('average'))
      .where('skill_id', '=', skillId).executeTakeFirstOrThrow()
    const averageRating = Math.round(Number(average))
    await trx.updateTable('skills').set({ average_rating: averageRating }).where('id', '=', skillId).execute()
    // The audit row commits with the rating, or neither does.
    await recordAudit(trx, { actorId: userId, action: 'skill.rate', resourceType: 'skill', resourceId: skillId, metadata: { rating } })
    return { status: 201, body: { skillId, rating, averageRating } }
  })
}
