import * as vega from 'vega'
import { compile, type TopLevelSpec } from 'vega-lite'

export interface ChartSeries {
  variant: string
  bins: { t: number; maxMs: number; perSecond: number }[]
  marks: { t: number; label: string }[]
}

/**
 * App latency (slowest statement per 100 ms, log scale) and throughput over time, one pair of
 * panels per variant, the migration's steps marked. Rendered headless with vega to SVG.
 */
export async function renderChart(series: ChartSeries[]): Promise<string> {
  const panel = (s: ChartSeries, field: 'maxMs' | 'perSecond', title: string, log: boolean) => ({
    title: `${s.variant}: ${title}`,
    width: 900,
    height: 160,
    layer: [
      {
        data: { values: s.bins.map((b) => ({ ...b, maxMs: Math.max(b.maxMs, 0.1) })) },
        mark: { type: 'line', interpolate: 'step-after', strokeWidth: 1 },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'seconds since load start' },
          y: { field, type: 'quantitative', title: field === 'maxMs' ? 'slowest statement (ms)' : 'statements / s', scale: log ? { type: 'log' } : {} },
        },
      },
      {
        data: { values: s.marks },
        mark: { type: 'rule', color: '#c0392b', strokeDash: [3, 3] },
        encoding: { x: { field: 't', type: 'quantitative' } },
      },
      {
        data: { values: s.marks },
        mark: { type: 'text', angle: 270, align: 'left', baseline: 'bottom', dx: 4, fontSize: 9, color: '#c0392b' },
        encoding: { x: { field: 't', type: 'quantitative' }, y: { value: 150 }, text: { field: 'label' } },
      },
    ],
  })
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    vconcat: series.flatMap((s) => [panel(s, 'maxMs', 'app latency', true), panel(s, 'perSecond', 'app throughput', false)]),
  } as unknown as TopLevelSpec
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' })
  return view.toSVG()
}
