import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createS3Client, putJsonObject, readObjectText } from '../../lambdas/io/s3';
import { startLocalS3 } from '../../lib/runner/local-s3';

/**
 * The local S3 server runs in a process of its own, as S3 does for the deployed functions: its HTTP
 * parsing, MD5s and disk writes do not share the backup's thread (README "Backup speed"). It must
 * never outlive the process that started it, even one killed with SIGKILL.
 */

const ROOT = join(__dirname, '..', '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('local S3 server', () => {
  it('serves from its own process and stops with stop()', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'tracetrack-local-s3-'));
    const server = await startLocalS3({ directory, buckets: ['tt-own-process'] });
    const s3 = createS3Client({ endpoint: server.endpoint, localServer: true });
    try {
      expect(server.pid).not.toBe(process.pid);
      await putJsonObject(s3, 'tt-own-process', 'a/b.json', { ok: true });
      expect(JSON.parse((await readObjectText(s3, 'tt-own-process', 'a/b.json'))!)).toEqual({ ok: true });
    } finally {
      s3.destroy();
      await server.stop();
    }
    expect(alive(server.pid)).toBe(false);
    rmSync(directory, { recursive: true, force: true });
  });

  it('keeps its caller alive until it has stopped: what the caller does after stop() happens (the CLI sets its exit code there)', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'tracetrack-local-s3-'));
    const script = `require('./lib/runner/local-s3').startLocalS3({ directory: ${JSON.stringify(directory)}, buckets: [] }).then((s) => s.stop()).then(() => console.log('after stop'));`;
    const out = await new Promise<string>((resolve) => {
      let text = '';
      const p = spawn(process.execPath, ['--import', 'tsx', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      p.stdout!.on('data', (d) => (text += String(d)));
      p.on('close', () => resolve(text));
    });
    expect(out).toContain('after stop');
    rmSync(directory, { recursive: true, force: true });
  });

  it('ends when the process that started it is killed with SIGKILL', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'tracetrack-local-s3-'));
    const script = `require('./lib/runner/local-s3').startLocalS3({ directory: ${JSON.stringify(directory)}, buckets: [] }).then((s) => { console.log('PID ' + s.pid); setInterval(() => {}, 1000); });`;
    const parent = spawn(process.execPath, ['--import', 'tsx', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    const serverPid: number = await new Promise((resolve, reject) => {
      let out = '';
      parent.stdout!.on('data', (d) => {
        out += String(d);
        const m = /PID (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      parent.on('exit', (code) => reject(new Error(`exited ${code} before the server started: ${out}`)));
    });
    expect(alive(serverPid)).toBe(true);
    parent.kill('SIGKILL');
    for (let i = 0; i < 100 && alive(serverPid); i += 1) await sleep(100);
    expect(alive(serverPid), 'the server outlived its parent').toBe(false);
    rmSync(directory, { recursive: true, force: true });
  });
});
