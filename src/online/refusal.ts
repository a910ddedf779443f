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

/**
 * A migration, or a step of one, declined to go on, before it changed anything: {@link DataLossRefused},
 * {@link DownBlocked}, or one of the other {@link RefusalKind}s. The message is `reason; remedy`.
 * A failed run's {@link MigrationError} has the same kind, reason and remedy, and this as its cause.
 */
export class Refusal extends Error {
  /** Always `'Refusal'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'Refusal'
  constructor(
    /** Which refusal; a caller picks its advice by it. */
    readonly kind: RefusalKind,
    /** Why the step declined, without the remedy. */
    readonly reason: string,
    /** What overrules it or what to change, in the library's terms (its options); absent when nothing does. */
    readonly remedy?: string,
  ) {
    super(remedy ? `${reason}; ${remedy}` : reason)
  }
}
