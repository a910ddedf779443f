import { describe, expect, it } from 'vitest'
import { DataLossRefused, DownBlocked, guardDown, refuseDataLoss } from '../../src/online/data-loss-guard.ts'
import { Refusal } from '../../src/online/refusal.ts'
import { inRun } from '../../src/online/run-context.ts'
import { useTestDatabase } from '../support/database.ts'

describe('online/data-loss-guard', () => {
  const t = useTestDatabase('empty')

  it('refuses a loss unless the run allows it, and asks only when armed', async () => {
    const refused = refuseDataLoss(t.admin, 'the toy rows would go', async () => true)
    await expect(refused).rejects.toThrow('refusing to roll back: the toy rows would go; allowDataLoss accepts the loss')
    await expect(refused).rejects.toMatchObject({ kind: 'data-loss', reason: 'refusing to roll back: the toy rows would go', remedy: 'allowDataLoss accepts the loss' })
    await expect(refused).rejects.toBeInstanceOf(DataLossRefused)
    await expect(refused).rejects.toBeInstanceOf(Refusal)
    await expect(refuseDataLoss(t.admin, 'nothing would go', async () => false)).resolves.toBeUndefined()
    let asked = false
    await inRun({ allowDataLoss: true }, () => refuseDataLoss(t.admin, 'x', async () => (asked = true)))
    expect(asked).toBe(false)
  })

  it('a down the data blocks is a refusal no option overrules', () => {
    expect(new DownBlocked('remove the duplicates first')).toMatchObject({ kind: 'down-blocked', message: 'remove the duplicates first' })
  })

  it('guardDown checks on the way down only', async () => {
    let checked = 0
    const step = guardDown('toy guard', async () => void checked++)
    await step.up(t.admin)
    expect(checked).toBe(0)
    await step.down(t.admin)
    expect(checked).toBe(1)
  })
})
