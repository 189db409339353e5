import type { RecordedRequest } from './s3';

/**
 * The IAM policies a synthesized template attaches to a role, evaluated for one action on one
 * resource ARN: an explicit Allow whose Action and Resource patterns match, and no Deny that does.
 * Conditions are not evaluated (the roles of this stack have none; a statement with one is not counted
 * as an Allow). Resource expressions are resolved with `resolve` (Fn::GetAtt / Ref of the template's
 * resources to the local stand-ins' ARNs).
 */

type Statement = { Effect: 'Allow' | 'Deny'; Action: string | string[]; Resource: unknown; Condition?: unknown };
type Template = { Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }> };

export type ArnResolver = (logicalId: string, attribute: string | null) => string;

function resolveValue(value: unknown, resolve: ArnResolver): string {
  if (typeof value === 'string') return value;
  const v = value as Record<string, unknown>;
  if (Array.isArray(v['Fn::Join'])) {
    const [separator, parts] = v['Fn::Join'] as [string, unknown[]];
    return parts.map((p) => resolveValue(p, resolve)).join(separator);
  }
  if (Array.isArray(v['Fn::GetAtt'])) return resolve(String(v['Fn::GetAtt'][0]), String(v['Fn::GetAtt'][1]));
  if (typeof v.Ref === 'string') {
    if (v.Ref === 'AWS::Partition') return 'aws';
    return resolve(v.Ref, null);
  }
  return `unresolved:${JSON.stringify(value)}`;
}

function matches(pattern: string, value: string, ignoreCase: boolean): boolean {
  const re = new RegExp(`^${pattern.split('*').map((p) => p.split('?').map((q) => q.replace(/[.+^${}()|[\]\\]/g, '\\$&')).join('.')).join('.*')}$`, ignoreCase ? 'i' : '');
  return re.test(value);
}

/** Every statement of the policies attached to `roleId` (AWS::IAM::Policy resources naming it). */
export function roleStatements(template: Template, roleId: string): Statement[] {
  return Object.values(template.Resources)
    .filter((r) => r.Type === 'AWS::IAM::Policy' && ((r.Properties?.Roles as { Ref?: string }[] | undefined) ?? []).some((x) => x.Ref === roleId))
    .flatMap((r) => (r.Properties!.PolicyDocument as { Statement: Statement[] }).Statement);
}

export function isAllowed(statements: Statement[], action: string, resource: string, resolve: ArnResolver): boolean {
  const applies = (s: Statement) =>
    [s.Action].flat().some((a) => matches(a, action, true)) &&
    [s.Resource].flat().some((r) => matches(resolveValue(r, resolve), resource, false));
  if (statements.some((s) => s.Effect === 'Deny' && applies(s))) return false;
  return statements.some((s) => s.Effect === 'Allow' && s.Condition === undefined && applies(s));
}

/** The IAM action(s) an S3 REST request (path style) needs, with the resource ARN of each. */
export function s3Actions(request: RecordedRequest): { action: string; resource: string }[] {
  const [, bucket, ...rest] = request.path.split('/');
  const key = decodeURIComponent(rest.join('/'));
  const q = request.query;
  const object = `arn:aws:s3:::${bucket}/${key}`;
  const bucketArn = `arn:aws:s3:::${bucket}`;
  const m = request.method;
  if (!key) {
    if (m === 'GET' && q.has('uploads')) return [{ action: 's3:ListBucketMultipartUploads', resource: bucketArn }];
    if (m === 'GET' && q.has('location')) return [{ action: 's3:GetBucketLocation', resource: bucketArn }];
    if (m === 'GET' && (q.has('list-type') || [...q.keys()].every((k) => ['prefix', 'delimiter', 'marker', 'max-keys', 'continuation-token', 'start-after', 'encoding-type'].includes(k)))) {
      return [{ action: 's3:ListBucket', resource: bucketArn }];
    }
    return [{ action: `unknown:${m} bucket ?${q.toString()}`, resource: bucketArn }];
  }
  if ((m === 'GET' || m === 'HEAD') && q.has('uploadId')) return [{ action: 's3:ListMultipartUploadParts', resource: object }];
  if (m === 'GET' || m === 'HEAD') return [{ action: 's3:GetObject', resource: object }];
  if (m === 'PUT' && request.headers['x-amz-copy-source']) return [{ action: 's3:PutObject', resource: object }, { action: 's3:GetObject', resource: `arn:aws:s3:::${decodeURIComponent(String(request.headers['x-amz-copy-source']).replace(/^\//, ''))}` }];
  if (m === 'PUT' || (m === 'POST' && (q.has('uploads') || q.has('uploadId')))) return [{ action: 's3:PutObject', resource: object }];
  if (m === 'DELETE' && q.has('uploadId')) return [{ action: 's3:AbortMultipartUpload', resource: object }];
  if (m === 'DELETE') return [{ action: 's3:DeleteObject', resource: object }];
  return [{ action: `unknown:${m} object ?${q.toString()}`, resource: object }];
}
