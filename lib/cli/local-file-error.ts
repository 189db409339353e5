/**
 * A file of the operator's own machine could not be read or written (a full disk, a missing or
 * read-only directory): named with the path, never a raw Node stack.
 */
export class LocalFileError extends Error {
  override readonly name = 'LocalFileError';
  readonly path: string;
  readonly code: string | undefined;
  constructor(file: string, doing: 'read' | 'write', cause: unknown) {
    const code = (cause as NodeJS.ErrnoException)?.code;
    super(`Could not ${doing} ${file}: ${describeIoCode(code, (cause as Error)?.message)}`, { cause });
    this.path = file;
    this.code = code;
  }
}

export function describeIoCode(code: string | undefined, message = ''): string {
  switch (code) {
    case 'ENOSPC':
      return 'the disk is full (ENOSPC). Free space there (or choose another directory), then rerun';
    case 'EDQUOT':
      return 'the disk quota is exhausted (EDQUOT). Free space there, then rerun';
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${code}). Choose a directory you may write, then rerun`;
    case 'EROFS':
      return 'the file system is read-only (EROFS). Choose another directory, then rerun';
    case 'ENOENT':
      return 'the directory does not exist (ENOENT). Create it or choose another, then rerun';
    default:
      return `${code ? `${code}: ` : ''}${message}`;
  }
}
