import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { inRun } from '../../src/online/run-context.ts'
import { applySteps, reverse, revertSteps, type Step } from '../../src/online/step.ts'
import { useTestDatabase } from '../support/database.ts'

describe('online/step', () => {
  const t = useTestDatabase('empty')

  it('applies steps in order and reverts them in reverse, reporting each; reverse swaps up and down', async () => {
    const done: string[] = []
    const step = (name: string): Step => ({ name, up: async () => void done.push(`up ${name}`), down: async () => void done.push(`down ${name}`) })
    const lines: string[] = []
    const logger = { info: (m: string) => lines.push(m) }
    await inRun({ logger }, () => applySteps(t.admin, [step('a'), reverse(step('b')), step('c')]))
    await inRun({ logger }, () => revertSteps(t.admin, [step('a'), reverse(step('b')), step('c')]))
    expect(done).toEqual(['up a', 'down b', 'up c', 'down c', 'up b', 'down a'])
    expect(lines.map((l) => l.replace(/\(\d+ ms\)/, '(n ms)'))).toEqual([
      '  a (n ms)', '  remove b (n ms)', '  c (n ms)', '  undo c (n ms)', '  undo remove b (n ms)', '  undo a (n ms)',
    ])
  })

  it('stops at the first step that fails, leaving the later ones undone', async () => {
    await sql`create table toy (id int)`.execute(t.admin)
    const failing: Step = { name: 'bad', up: async (db) => void (await sql`select nope from toy`.execute(db)), down: async () => {} }
    let later = false
    await expect(applySteps(t.admin, [failing, { name: 'later', up: async () => void (later = true), down: async () => {} }])).rejects.toThrow(/nope/)
    expect(later).toBe(false)
  })
})
