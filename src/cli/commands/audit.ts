import { readFileSync, writeFileSync } from 'node:fs'
import { verifyAuditTrail, type AuditHead } from '../../audit/verify-audit.ts'
import { UsageError, type Command } from '../command.ts'
import { TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'

export const audit: Command = {
  name: 'audit',
  summary: 'audit verify: recomputes every tenant\'s audit hash chain, checks the app\'s signatures (keys from SKILLS_DB_AUDIT_KEYS, <id>:<secret>[,…]) and the audit tables\' definitions, and names the first row changed, removed, inserted out of order or backdated. Exit 1 when it finds one. Changes nothing; holds the migration lock while it reads.',
  positionals: [{ name: 'verify', required: true, help: 'the only audit command so far' }],
  options: {
    ...TARGET,
    tenant: { type: 'string', value: '<id>', help: 'only this tenant\'s chain' },
    heads: { type: 'string', value: '<file>', help: 'the heads an earlier run saved (--save-heads): rows removed or rewritten since are found too' },
    'save-heads': { type: 'string', value: '<file>', help: 'save each chain\'s head (seq and hash) there, for the next run\'s --heads; keep it outside the database' },
  },
  run(values, positionals) {
    if (positionals[0] !== 'verify') throw new UsageError(`unknown audit command "${positionals[0]}" (the only one is verify)`)
    const keys = (process.env.SKILLS_DB_AUDIT_KEYS ?? process.env.SKILLS_DB_AUDIT_KEY ?? '').split(',').filter((k) => k.trim())
    if (keys.length === 0) throw new Error('audit verify needs the audit key(s) the app signs with: set SKILLS_DB_AUDIT_KEYS=<id>:<secret>[,<id>:<secret>] (the app\'s SKILLS_DB_AUDIT_KEY, and older ones still in the trail)')
    const expectedHeads = typeof values.heads === 'string' ? readHeads(values.heads) : undefined
    return usingTarget(values, async (db) => {
      const report = await verifyAuditTrail(db, { keys, ...(typeof values.tenant === 'string' ? { tenantId: values.tenant } : {}), ...(expectedHeads ? { expectedHeads } : {}) })
      const failed = new Set(report.problems.map((p) => p.tenantId))
      for (const t of report.tenants) {
        // A chain that fails is counted up to its first problem, not through it.
        const counted = failed.has(t.tenantId) ? `${t.rows} row(s) in order before its first problem (below)` : `${t.rows} chained row(s)`
        console.log(`  tenant ${t.tenantId}: ${counted}${t.legacyRows ? `, ${t.legacyRows} from before the chain` : ''}${t.head ? `, head seq ${t.head.seq} ${t.head.rowHash.slice(0, 16)}…` : ''}`)
      }
      if (typeof values['save-heads'] === 'string') {
        writeFileSync(values['save-heads'], `${JSON.stringify(report.tenants.flatMap((t) => (t.head ? [t.head] : [])), null, 2)}\n`)
      }
      for (const p of report.problems) console.error(`  ${p.kind}: ${p.message}`)
      if (report.problems.length > 0) {
        console.error(`error: the audit trail fails verification: ${report.problems.length} problem(s), listed above (the first of each tenant's chain)`)
        return 1
      }
      console.log(`audit trail verified: ${report.tenants.length} tenant(s) with an audit trail, ${report.tenants.reduce((n, t) => n + t.rows, 0)} chained row(s), every one signed and in order`)
      return 0
    })
  },
}

function readHeads(file: string): AuditHead[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'))
  } catch (error) {
    throw new UsageError(`--heads ${file}: ${(error as Error).message.split('\n')[0]}`)
  }
  if (!Array.isArray(parsed) || !parsed.every((h) => typeof h?.tenantId === 'string' && typeof h?.seq === 'string' && /^[0-9a-f]{64}$/.test(h?.rowHash))) {
    throw new UsageError(`--heads ${file} is not a list of heads saved by skills-db audit verify --save-heads`)
  }
  return parsed as AuditHead[]
}
