/** Milliseconds on one clock shared by the main thread and workers (performance.now() is per thread). */
export const now = (): number => performance.timeOrigin + performance.now()
