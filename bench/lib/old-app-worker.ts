/**
 * The old app's load in a worker thread, so its event loop is not the migrator's: in production
 * they are different processes, and sharing one loop would slow both in the measurement.
 */
import { parentPort, workerData, Worker } from 'node:worker_threads'
import { startNewApp } from './new-app.ts'
import { startOldApp, type OldAppLoad, type Sample } from './old-app.ts'

if (parentPort && (workerData?.oldApp || workerData?.newApp)) {
  const load = workerData.newApp ? startNewApp(workerData.url, workerData.options) : startOldApp(workerData.url, workerData.options)
  parentPort.once('message', async () => {
    await load.stop()
    parentPort!.postMessage({ samples: load.samples, acknowledged: load.acknowledged })
  })
}

export interface OldAppInWorker {
  stop(): Promise<Pick<OldAppLoad, 'samples' | 'acknowledged'>>
}

export function startOldAppWorker(url: string, options: Parameters<typeof startOldApp>[1]): OldAppInWorker {
  return startInWorker({ oldApp: true, url, options })
}

/** The multi-tenant app's load (new-app.ts) in a worker thread, as the old app's. */
export function startNewAppWorker(url: string, options: Parameters<typeof startNewApp>[1]): OldAppInWorker {
  return startInWorker({ newApp: true, url, options })
}

function startInWorker(data: Record<string, unknown>): OldAppInWorker {
  // Workers do not inherit tsx's loader from a `tsx` parent: the worker registers it, then loads this file.
  const bootstrap = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}) })`
  const worker = new Worker(bootstrap, { eval: true, workerData: data })
  let failure: Error | undefined
  worker.on('error', (error) => (failure = error))
  return {
    stop: () =>
      new Promise((resolve, reject) => {
        if (failure) return reject(failure)
        worker.once('message', (result: { samples: Sample[]; acknowledged: string[] }) => void worker.terminate().then(() => resolve(result)))
        worker.once('error', reject)
        worker.postMessage('stop')
      }),
  }
}
