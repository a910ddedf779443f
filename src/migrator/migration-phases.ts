/**
 * The phases of skills-db's migrations, in the order a database goes through them:
 *
 * - `expand`: what `latest` (and boot) applies. The single-tenant app keeps running, on any role.
 * - `open`: the database opens to a second tenant (`skills-db open`). The single-tenant app must be
 *   confined by then (no superuser or BYPASSRLS role): its global keys and indexes, which would let
 *   the app role observe other tenants' values, go.
 * - `contract`: the single-tenant app is retired (`skills-db contract`).
 *
 * A migration file says its phase with `export const phase = 'open' | 'contract'` (none: expand).
 * Later files may belong to an earlier phase than earlier ones (0011 is expand, 0010 contract), so
 * a run applies, in name order, the pending migrations of every phase it may reach: a database
 * reaches a phase once the operator runs that phase's command, and stays there. The one exception:
 * `contract` on a database that was opened applies what the open phase has pending first (0010,
 * written before the open phase, is safe beside other tenants only after 0017).
 */
export type Phase = 'expand' | 'open' | 'contract'

const ORDER: readonly Phase[] = ['expand', 'open', 'contract']

export const phaseRank = (phase: Phase): number => ORDER.indexOf(phase)

/** The phase a file declares (anything else than `open` or `contract` is expand). */
export function declaredPhase(exported: unknown): Phase {
  return exported === 'open' || exported === 'contract' ? exported : 'expand'
}

/** The furthest phase among applied migrations: the database is there, and `latest` may apply up to it. */
export function reachedPhase(applied: readonly string[], phaseOf: ReadonlyMap<string, Phase>): Phase {
  return applied.reduce<Phase>((most, name) => {
    const phase = phaseOf.get(name) ?? 'expand'
    return phaseRank(phase) > phaseRank(most) ? phase : most
  }, 'expand')
}

/** The furthest of two phases. */
export const furthest = (a: Phase, b: Phase): Phase => (phaseRank(a) >= phaseRank(b) ? a : b)

/** What the operator runs to apply a phase's migrations. */
export const PHASE_COMMAND: Record<Exclude<Phase, 'expand'>, { cli: string; api: string; when: string }> = {
  open: { cli: 'skills-db open', api: 'migrateOpen()', when: 'before a second tenant is created, once the single-tenant app runs on a confined role' },
  contract: { cli: 'skills-db contract', api: 'migrateContract()', when: 'once the single-tenant app is retired' },
}
