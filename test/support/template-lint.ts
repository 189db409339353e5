import { loadAwsServiceSpecSync } from '@aws-cdk/aws-service-spec';

/**
 * A CloudFormation template check in the spirit of cfn-lint's error rules, for machines without
 * cfn-lint (it comes from PyPI): against the CloudFormation resource schemas of
 * @aws-cdk/aws-service-spec it reports
 * - a resource type CloudFormation does not have (E3006),
 * - a property a resource or nested type does not have (E3002), a required one missing (E3003),
 * - a Ref, Fn::GetAtt (and its attribute), Fn::Sub variable or DependsOn naming nothing (E1012, E1010, E1019, E3005),
 * - a Condition naming no condition (E8002).
 * Types of values are not checked (intrinsics make most of them unknowable here).
 */

type Db = ReturnType<typeof loadAwsServiceSpecSync>;
type Json = unknown;
type PropertyType = { type: string; reference?: { $ref: string }; element?: PropertyType; types?: PropertyType[] };
type Properties = Record<string, { required?: boolean; type: PropertyType }>;

let db: Db | undefined;
function spec(): Db {
  db ??= loadAwsServiceSpecSync();
  return db;
}

const PSEUDO = new Set(['AWS::AccountId', 'AWS::NotificationARNs', 'AWS::NoValue', 'AWS::Partition', 'AWS::Region', 'AWS::StackId', 'AWS::StackName', 'AWS::URLSuffix']);

function isIntrinsic(value: Json): boolean {
  if (!value || typeof value !== 'object' || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  return keys.length === 1 && (keys[0] === 'Ref' || keys[0]!.startsWith('Fn::') || keys[0] === 'Condition');
}

export function lintTemplate(template: Record<string, Json>): string[] {
  const problems: string[] = [];
  const resources = (template.Resources ?? {}) as Record<string, { Type: string; Properties?: Record<string, Json>; DependsOn?: string | string[]; Condition?: string }>;
  const parameters = new Set(Object.keys((template.Parameters ?? {}) as object));
  const conditions = new Set(Object.keys((template.Conditions ?? {}) as object));
  const resourceSpec = (type: string) => spec().lookup('resource', 'cloudFormationType', 'equals', type)[0];

  const checkRefs = (where: string, value: Json): void => {
    if (Array.isArray(value)) return value.forEach((v, i) => checkRefs(`${where}[${i}]`, v));
    if (!value || typeof value !== 'object') return;
    const obj = value as Record<string, Json>;
    if (typeof obj.Ref === 'string' && !resources[obj.Ref] && !parameters.has(obj.Ref) && !PSEUDO.has(obj.Ref)) {
      problems.push(`${where}: Ref ${obj.Ref} names no resource, parameter or pseudo parameter`);
    }
    const getAtt = obj['Fn::GetAtt'];
    if (Array.isArray(getAtt) && typeof getAtt[0] === 'string') {
      const target = resources[getAtt[0]];
      if (!target) problems.push(`${where}: Fn::GetAtt ${getAtt[0]} names no resource`);
      else if (typeof getAtt[1] === 'string' && target.Type.startsWith('AWS::') && !target.Type.startsWith('AWS::CloudFormation::')) {
        const attributes = resourceSpec(target.Type)?.attributes ?? {};
        if (!(getAtt[1] in attributes)) problems.push(`${where}: ${target.Type} has no attribute ${getAtt[1]}`);
      }
    }
    const sub = obj['Fn::Sub'];
    if (typeof sub === 'string' || Array.isArray(sub)) {
      const text = typeof sub === 'string' ? sub : String(sub[0]);
      const locals = Array.isArray(sub) && sub[1] && typeof sub[1] === 'object' ? Object.keys(sub[1] as object) : [];
      for (const m of text.matchAll(/\$\{([^!}][^}]*)\}/g)) {
        const name = m[1]!.split('.')[0]!;
        if (!locals.includes(name) && !resources[name] && !parameters.has(name) && !PSEUDO.has(m[1]!)) problems.push(`${where}: Fn::Sub \${${m[1]}} names nothing`);
      }
    }
    const ifCondition = obj['Fn::If'];
    if (Array.isArray(ifCondition) && typeof ifCondition[0] === 'string' && !conditions.has(ifCondition[0])) problems.push(`${where}: Fn::If names no condition ${ifCondition[0]}`);
    for (const [k, v] of Object.entries(obj)) checkRefs(`${where}.${k}`, v);
  };

  const checkValue = (where: string, value: Json, type: PropertyType): void => {
    if (isIntrinsic(value) || value === null || value === undefined) return;
    switch (type.type) {
      case 'ref': {
        if (typeof value !== 'object' || Array.isArray(value)) return;
        const def = spec().get('typeDefinition', type.reference!.$ref) as { properties: Properties } | undefined;
        if (def) checkProperties(where, value as Record<string, Json>, def.properties);
        return;
      }
      case 'array':
        if (Array.isArray(value)) value.forEach((v, i) => checkValue(`${where}[${i}]`, v, type.element!));
        return;
      case 'map':
        if (value && typeof value === 'object' && !Array.isArray(value)) for (const [k, v] of Object.entries(value)) checkValue(`${where}.${k}`, v, type.element!);
        return;
      case 'union': {
        // Valid when valid for one of the alternatives.
        const attempts = type.types!.map((t) => {
          const before = problems.length;
          checkValue(where, value, t);
          return problems.splice(before);
        });
        if (!attempts.some((a) => a.length === 0)) problems.push(...attempts[0]!);
        return;
      }
      default:
        return;
    }
  };

  const checkProperties = (where: string, values: Record<string, Json>, properties: Properties): void => {
    for (const [name, value] of Object.entries(values)) {
      const property = properties[name];
      if (!property) problems.push(`${where}: no property ${name}`);
      else checkValue(`${where}.${name}`, value, property.type);
    }
    for (const [name, property] of Object.entries(properties)) {
      if (property.required && !(name in values)) problems.push(`${where}: required property ${name} is missing`);
    }
  };

  for (const [id, resource] of Object.entries(resources)) {
    const where = `Resources.${id}`;
    for (const dep of [resource.DependsOn ?? []].flat()) if (!resources[dep]) problems.push(`${where}: DependsOn ${dep} names no resource`);
    if (resource.Condition !== undefined && !conditions.has(resource.Condition)) problems.push(`${where}: Condition ${resource.Condition} is not defined`);
    checkRefs(where, resource.Properties ?? {});
    if (resource.Type.startsWith('Custom::') || resource.Type === 'AWS::CloudFormation::CustomResource' || resource.Type === 'AWS::CDK::Metadata') continue;
    const rs = resourceSpec(resource.Type);
    if (!rs) {
      problems.push(`${where}: CloudFormation has no resource type ${resource.Type}`);
      continue;
    }
    checkProperties(`${where} (${resource.Type})`, (resource.Properties ?? {}) as Record<string, Json>, rs.properties as Properties);
  }
  checkRefs('Outputs', template.Outputs ?? {});
  return problems;
}
