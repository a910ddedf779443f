import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Kysely } from 'kysely'
import { createDb, type DB } from '../../src/index.ts'
import { HttpError, sendJson } from './http-json.ts'
import { addSkill, listSkills, rateSkill, signUp, type Answer } from './routes.ts'

export interface MarketplaceOptions {
  /** The app role's URL (postgres://app_user:…@host/skills): never the owner's or a superuser's. */
  databaseUrl: string
  /** 0: any free port. Default 3000. */
  port?: number
  host?: string
  /** Default SKILLS_DB_TENANT_KEY, as createDb's. */
  tenantKey?: string
  /** Default SKILLS_DB_AUDIT_KEY, as createDb's. */
  auditKey?: string
}

export interface Marketplace {
  url: string
  close(): Promise<void>
}

/**
 * The example marketplace: a JSON API over Node's http on skills-db. Sign-up makes a tenant and its
 * first admin; every /t/:slug/… request resolves the tenant by its slug, authenticates the API key
 * in that tenant, and does its work inside withTenant.
 *
 * @example
 * const app = await startMarketplace({ databaseUrl: 'postgres://app_user:dev@127.0.0.1:54329/skills', port: 0 })
 * await fetch(`${app.url}/signup`, { method: 'POST', body: JSON.stringify({ name: 'Acme', slug: 'acme', email: 'ann@acme.example' }) })
 * await app.close()
 */
export async function startMarketplace(options: MarketplaceOptions): Promise<Marketplace> {
  // Both keys before the first request: sign-up commits the tenant, then issues its key and audits
  // it; without an audit key that second step failed, leaving a taken slug with no key (an outside
  // review's half-done sign-up).
  for (const [given, variable] of [[options.tenantKey, 'SKILLS_DB_TENANT_KEY'], [options.auditKey, 'SKILLS_DB_AUDIT_KEY']] as const) {
    if (!given && !process.env[variable]) throw new Error(`the marketplace signs with the tenant key and the audit key: pass them, or set ${variable} (. .data/dev-keys.env on the development server)`)
  }
  const db = createDb(options.databaseUrl, {
    applicationName: 'marketplace example',
    ...(options.tenantKey ? { tenantKey: options.tenantKey } : {}),
    ...(options.auditKey ? { auditKey: options.auditKey } : {}),
  })
  const server = createServer((req, res) => {
    // A client that went away before the answer is no error of the server's.
    route(db, req).catch(failure).then(({ status, body }) => sendJson(res, status, body)).catch(() => {})
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 3000, options.host ?? '127.0.0.1', resolve)
  })
  const { address, port } = server.address() as AddressInfo
  return {
    url: `http://${address}:${port}`,
    async close() {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await db.destroy()
    },
  }
}

const SKILLS = /^\/t\/([^/]+)\/skills$/
const RATINGS = /^\/t\/([^/]+)\/skills\/([^/]+)\/ratings$/

async function route(db: Kysely<DB>, req: IncomingMessage): Promise<Answer> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname
  const method = req.method ?? 'GET'
  let match: RegExpExecArray | null
  if (path === '/signup') return method === 'POST' ? signUp(db, req) : notAllowed('POST')
  if ((match = SKILLS.exec(path))) {
    const slug = segment(match[1]!)
    return method === 'GET' ? listSkills(db, req, slug) : method === 'POST' ? addSkill(db, req, slug) : notAllowed('GET, POST')
  }
  if ((match = RATINGS.exec(path))) {
    return method === 'POST' ? rateSkill(db, req, segment(match[1]!), segment(match[2]!)) : notAllowed('POST')
  }
  throw new HttpError(404, `no route ${method} ${path}: try POST /signup, GET or POST /t/<slug>/skills, POST /t/<slug>/skills/<id>/ratings`)
}

/** A path segment, decoded; a slug or id holds letters, digits, _ and - only, so anything else (a NUL, which PostgreSQL refuses in text) names nothing here. */
function segment(text: string): string {
  let decoded: string
  try {
    decoded = decodeURIComponent(text)
  } catch {
    throw new HttpError(400, `the URL has a bad %-escape: ${text}`)
  }
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(decoded)) throw new HttpError(404, `nothing is named ${JSON.stringify(decoded)} here: a slug or id is letters, digits, _ and -`)
  return decoded
}

function notAllowed(allowed: string): never {
  throw new HttpError(405, `this route takes ${allowed}`)
}

/** A client's mistake gets its message; anything else a 500 whose detail stays in the server's log. */
function failure(error: unknown): Answer {
  if (error instanceof HttpError) return { status: error.status, body: { error: error.message } }
  console.error(`marketplace: ${(error as Error).message?.split('\n')[0] ?? String(error)}`)
  return { status: 500, body: { error: 'internal error (the server log says what)' } }
}
