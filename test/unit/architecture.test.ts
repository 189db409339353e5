import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

/** lambdas/core is pure (STYLE.md): no database driver, no AWS SDK, no Node built-ins, no process. */

const CORE = path.join(__dirname, '..', '..', 'lambdas', 'core');

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : [],
  );
}

describe('architecture', () => {
  const files = tsFiles(CORE);
  it('finds the core modules', () => expect(files.length).toBeGreaterThan(10));
  it.each(files.map((f) => [path.relative(CORE, f), f]))('lambdas/core/%s imports no pg, @aws-sdk, node:* and uses no process', (_name, file) => {
    const text = readFileSync(file, 'utf8');
    const imports = [...text.matchAll(/(?:from|import|require\()\s*['"]([^'"]+)['"]/g)].map((m) => m[1]!);
    expect(imports.filter((i) => i === 'pg' || i.startsWith('pg-') || i.startsWith('@aws-sdk') || i.startsWith('node:') || ['fs', 'path', 'crypto', 'zlib', 'stream', 'os'].includes(i))).toEqual([]);
    expect(text).not.toMatch(/\bprocess\.(env|exit|argv|cwd|stdout|stderr)/);
  });
});
