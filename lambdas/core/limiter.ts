/** At most `slots` calls of `run` in flight at once, whoever calls it. */
export interface Limiter {
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Calls running now. */
  inFlight(): number;
}

/** The others wait their turn in order; a slot is handed straight to the next waiter, so the bound holds at every moment. */
export function createLimiter(slots: number): Limiter {
  const limit = Math.max(1, Math.floor(slots));
  let running = 0;
  const waiting: (() => void)[] = [];
  return {
    inFlight: () => running,
    async run<T>(fn: () => Promise<T>): Promise<T> {
      if (running < limit) running++;
      else await new Promise<void>((resolve) => waiting.push(resolve));
      try {
        return await fn();
      } finally {
        const next = waiting.shift();
        if (next) next();
        else running--;
      }
    },
  };
}
