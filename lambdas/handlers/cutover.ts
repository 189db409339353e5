// Placeholder so the stack synthesizes before the engine team's handler lands; replace freely.
export async function handler(_event: unknown): Promise<never> {
  throw new Error('not implemented');
}
