import type { Sample } from '../../fixtures/app-load.ts'

export interface LatencyStats {
  count: number
  p50: number
  p99: number
  max: number
}

export function latencyStats(samples: Sample[], from = -Infinity, to = Infinity, op?: Sample['op']): LatencyStats {
  const ms = samples.filter((s) => s.end >= from && s.end < to && !s.error && (!op || s.op === op)).map((s) => s.ms).sort((a, b) => a - b)
  const at = (p: number) => (ms.length ? ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]! : NaN)
  return { count: ms.length, p50: at(0.5), p99: at(0.99), max: ms.length ? ms.at(-1)! : NaN }
}

/** The longest interval inside [from, to] in which no app statement completed. */
export function longestStall(samples: Sample[], from: number, to: number): number {
  return longestStallWindow(samples, from, to).ms
}

/** The longest interval inside [from, to] in which no app statement completed, and when it began (epoch ms, to set beside a server log). */
export function longestStallWindow(samples: Sample[], from: number, to: number): { ms: number; start: number } {
  const ends = samples.map((s) => s.end).filter((e) => e >= from && e <= to).sort((a, b) => a - b)
  let longest = { ms: 0, start: from }
  let previous = from
  for (const end of [...ends, to]) {
    if (end - previous > longest.ms) longest = { ms: end - previous, start: previous }
    previous = end
  }
  return longest
}

export function errorsByMessage(samples: Sample[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const s of samples) if (s.error) out[s.error] = (out[s.error] ?? 0) + 1
  return out
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? NaN
}

/** Per 100 ms bin: the slowest statement and how many completed (for the chart). */
export function bins(samples: Sample[], origin: number, binMs = 100): { t: number; maxMs: number; perSecond: number }[] {
  const out = new Map<number, { maxMs: number; n: number }>()
  for (const s of samples) {
    const b = Math.floor((s.end - origin) / binMs)
    const cur = out.get(b) ?? { maxMs: 0, n: 0 }
    cur.maxMs = Math.max(cur.maxMs, s.ms)
    cur.n++
    out.set(b, cur)
  }
  const last = Math.max(0, ...out.keys())
  return Array.from({ length: last + 1 }, (_, b) => ({
    t: (b * binMs) / 1000,
    maxMs: out.get(b)?.maxMs ?? 0,
    perSecond: ((out.get(b)?.n ?? 0) * 1000) / binMs,
  }))
}
