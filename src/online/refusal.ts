/**
 * A migration, or a step of one, that declines to go on. The kind tells a caller which (the CLI
 * names its own flag for the ones an option overrules); the message is the reason, then the
 * remedy in the library's terms. Thrown before the step changes anything.
 */
export type RefusalKind =
  /** a `down` would destroy data it cannot restore: the run's `allowDataLoss` accepts the loss */
  | 'data-loss'
  /** a `down` cannot rebuild what came before until the data changes (no option overrules it) */
  | 'down-blocked'
  /** the contract phase beside sessions of the old app's roles: `allowOldAppSessions` */
  | 'old-app-sessions'
  /** timestamps read as UTC while the server's TimeZone is another: `timestampsAreUtc` */
  | 'timestamps-not-utc'

export class Refusal extends Error {
  override name = 'Refusal'
  constructor(readonly kind: RefusalKind, readonly reason: string, readonly remedy?: string) {
    super(remedy ? `${reason}; ${remedy}` : reason)
  }
}
