import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The architecture, kept by test (node-pg-migrate keeps the same guard): `lambdas/core` is pure, imports
 * point down (bin → lib → lambdas/handlers → lambdas/engine → lambdas/io → lambdas/core), nothing imports
 * in a cycle, and no function outside the tests grows past 80 lines.
 */

const ROOT = resolve(__dirname, '..', '..');
const SOURCE_DIRS = ['bin', 'lib', 'lambdas'];

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (/\.ts$/.test(entry) && !entry.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

const FILES = SOURCE_DIRS.flatMap((d) => sourceFiles(join(ROOT, d)));
const rel = (p: string) => relative(ROOT, p).replace(/\\/g, '/');

function parse(file: string): ts.SourceFile {
  return ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
}

/** Module specifiers of every import, export … from, require() and import() of a file. */
function importsOf(source: ts.SourceFile): string[] {
  const out: string[] = [];
  const visit = (node: ts.Node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.arguments.length === 1 && ts.isStringLiteral(node.arguments[0]!)) {
      const callee = node.expression;
      if ((ts.isIdentifier(callee) && callee.text === 'require') || callee.kind === ts.SyntaxKind.ImportKeyword) out.push((node.arguments[0] as ts.StringLiteral).text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

function resolveLocal(from: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  const base = resolve(dirname(from), spec);
  for (const candidate of [`${base}.ts`, join(base, 'index.ts'), base]) {
    try {
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not this one
    }
  }
  return null;
}

/** Layers from the bottom up; a file may import its own layer and those below. */
const LAYERS = ['lambdas/core', 'lambdas/io', 'lambdas/engine', 'lambdas/handlers', 'lib', 'bin'];
const layerOf = (file: string) => LAYERS.findIndex((l) => rel(file).startsWith(`${l}/`));

describe('architecture', () => {
  const graph = new Map(FILES.map((f) => [f, importsOf(parse(f))]));

  it('lambdas/core imports no driver, SDK or Node module and does not touch process', () => {
    const offences: string[] = [];
    for (const [file, specs] of graph) {
      if (!rel(file).startsWith('lambdas/core/')) continue;
      for (const spec of specs) {
        if (!spec.startsWith('.')) offences.push(`${rel(file)} imports ${spec}`);
      }
      if (/\bprocess\./.test(readFileSync(file, 'utf8'))) offences.push(`${rel(file)} touches process`);
    }
    expect(offences).toEqual([]);
  });

  it('every import points down the layers', () => {
    const offences: string[] = [];
    for (const [file, specs] of graph) {
      for (const spec of specs) {
        const target = resolveLocal(file, spec);
        if (!target || layerOf(target) < 0 || layerOf(file) < 0) continue;
        if (layerOf(target) > layerOf(file)) offences.push(`${rel(file)} imports ${rel(target)}`);
      }
    }
    expect(offences).toEqual([]);
  });

  it('no import cycle', () => {
    const edges = new Map([...graph].map(([f, specs]) => [f, specs.map((s) => resolveLocal(f, s)).filter((t): t is string => t !== null && graph.has(t))]));
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (f: string) => {
      state.set(f, 'open');
      stack.push(f);
      for (const t of edges.get(f) ?? []) {
        if (state.get(t) === 'open') cycles.push([...stack.slice(stack.indexOf(t)), t].map(rel).join(' → '));
        else if (!state.has(t)) visit(t);
      }
      stack.pop();
      state.set(f, 'done');
    };
    for (const f of edges.keys()) if (!state.has(f)) visit(f);
    expect(cycles).toEqual([]);
  });

  it('no function is longer than 80 lines', () => {
    const long: string[] = [];
    for (const file of FILES) {
      const source = parse(file);
      const visit = (node: ts.Node) => {
        if (ts.isFunctionLike(node) && 'body' in node && node.body) {
          const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line;
          const end = source.getLineAndCharacterOfPosition(node.getEnd()).line;
          if (end - start + 1 > 80) long.push(`${rel(file)}:${start + 1} ${end - start + 1} lines`);
        }
        ts.forEachChild(node, visit);
      };
      visit(source);
    }
    expect(long).toEqual([]);
  });
});
