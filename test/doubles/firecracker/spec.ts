/**
 * Validates Firecracker API bodies against the pinned OpenAPI spec with
 * Firecracker's own recipe (tests/framework/swagger_validator.py): `$ref`s
 * inlined, `additionalProperties: false` on every schema that does not
 * declare it, `required` emptied for PATCH bodies, JSON Schema Draft 4,
 * concrete paths mapped onto templates segment by segment, formats ignored.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ErrorObject, ValidateFunction } from "ajv";
import AjvDraft04 from "ajv-draft-04";
import { parse } from "yaml";

// ajv-draft-04 is CommonJS: Node hands ESM its module.exports, whose `default` is the class.
const Ajv = AjvDraft04.default;

export const SPEC_PATH = fileURLToPath(new URL("./firecracker-openapi.yaml", import.meta.url));

type Schema = Record<string, unknown>;

export interface SpecDocument {
  info: { version: string };
  paths: Record<string, Record<string, { parameters?: Schema[]; responses?: Record<string, Schema> }>>;
  definitions: Record<string, Schema>;
}

export interface SchemaIssue {
  /** Draft-4 keyword that failed (required, additionalProperties, enum, type...). */
  keyword: string;
  /** JSON pointer of the failing value in the body. */
  instancePath: string;
  message: string;
  params: Record<string, unknown>;
  /** The (resolved) schema object the keyword belongs to. */
  parentSchema: Schema | undefined;
}

export interface ValidationOutcome {
  valid: boolean;
  /** Spec template the path matched ("/drives/{drive_id}"), undefined when none. */
  template: string | undefined;
  issues: SchemaIssue[];
}

export interface SpecValidator {
  readonly spec: SpecDocument;
  validateRequest(method: string, path: string, body: unknown): ValidationOutcome;
  validateResponse(method: string, path: string, status: number, body: unknown): ValidationOutcome;
  /** Compiles every schema now (they are compiled on first use otherwise); returns how many. */
  compileAll(): number;
}

export function loadSpec(path = SPEC_PATH): SpecDocument {
  return parse(readFileSync(path, "utf8")) as SpecDocument;
}

export function createSpecValidator(spec: SpecDocument = loadSpec()): SpecValidator {
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false, verbose: true });
  // Schemas are resolved up front and compiled on first use: compiling all of
  // them costs most of a second, and one boot exercises only a few.
  const schemas = new Map<string, Schema>();
  for (const [template, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const upper = method.toUpperCase();
      for (const parameter of operation.parameters ?? []) {
        if (parameter.in !== "body" || !parameter.schema) continue;
        const schema = resolveSchema(parameter.schema as Schema, spec.definitions);
        // Draft 4 forbids an empty `required`; deleting it is what emptying it means.
        if (upper === "PATCH") delete schema.required;
        schemas.set(key("request", upper, template), schema);
      }
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        if (!response.schema) continue;
        schemas.set(
          key("response", upper, template, status),
          resolveSchema(response.schema as Schema, spec.definitions),
        );
      }
    }
  }
  const compiled = new Map<string, ValidateFunction>();
  const validators = {
    get(name: string): ValidateFunction | undefined {
      const schema = schemas.get(name);
      if (!schema) return undefined;
      let validator = compiled.get(name);
      if (!validator) {
        validator = ajv.compile(schema);
        compiled.set(name, validator);
      }
      return validator;
    },
  };
  const errorValidator = ajv.compile(resolveSchema({ $ref: "#/definitions/Error" }, spec.definitions));

  function run(validator: ValidateFunction | undefined, template: string | undefined, body: unknown) {
    if (!validator) {
      return {
        valid: false,
        template,
        issues: [issue("path", "", `not in the spec`, {})],
      } satisfies ValidationOutcome;
    }
    const valid = validator(dropNulls(body)) as boolean;
    return { valid, template, issues: (validator.errors ?? []).map(toIssue) };
  }

  return {
    spec,
    compileAll() {
      for (const name of schemas.keys()) validators.get(name);
      return compiled.size;
    },
    validateRequest(method, path, body) {
      const template = matchTemplate(spec, path);
      return run(template ? validators.get(key("request", method, template)) : undefined, template, body);
    },
    validateResponse(method, path, status, body) {
      const template = matchTemplate(spec, path);
      if (status >= 400) return run(errorValidator, template, body);
      return run(
        template ? validators.get(key("response", method, template, String(status))) : undefined,
        template,
        body,
      );
    },
  };
}

function key(...parts: string[]): string {
  return parts.join(" ");
}

/** Inlines `#/definitions/*` refs and closes every schema that does not say otherwise. */
export function resolveSchema(schema: Schema, definitions: Record<string, Schema>): Schema {
  const ref = schema.$ref;
  if (typeof ref === "string" && ref.startsWith("#/definitions/")) {
    const target = definitions[ref.slice("#/definitions/".length)];
    if (target) return resolveSchema(target, definitions);
  }
  const resolved: Schema = { ...schema };
  if (resolved.properties && typeof resolved.properties === "object") {
    resolved.properties = Object.fromEntries(
      Object.entries(resolved.properties as Record<string, Schema>).map(([name, value]) => [
        name,
        resolveSchema(value, definitions),
      ]),
    );
  }
  if (resolved.items && typeof resolved.items === "object" && !Array.isArray(resolved.items)) {
    resolved.items = resolveSchema(resolved.items as Schema, definitions);
  }
  if (!("additionalProperties" in resolved)) resolved.additionalProperties = false;
  if (Array.isArray(resolved.required)) resolved.required = [...resolved.required];
  return resolved;
}

/** "/drives/rootfs" → "/drives/{drive_id}"; exact paths win. */
export function matchTemplate(spec: SpecDocument, path: string): string | undefined {
  if (spec.paths[path]) return path;
  const parts = path.split("/");
  for (const template of Object.keys(spec.paths)) {
    const templateParts = template.split("/");
    if (templateParts.length !== parts.length) continue;
    if (
      templateParts.every(
        (part, index) => (part.startsWith("{") && part.endsWith("}")) || part === parts[index],
      )
    ) {
      return template;
    }
  }
  return undefined;
}

function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.filter((item) => item !== null).map(dropNulls);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .filter(([, item]) => item !== null)
        .map(([name, item]) => [name, dropNulls(item)]),
    );
  }
  return value;
}

function toIssue(error: ErrorObject): SchemaIssue {
  return issue(
    error.keyword,
    error.instancePath,
    error.message ?? error.keyword,
    error.params as Record<string, unknown>,
    error.parentSchema as Schema | undefined,
  );
}

function issue(
  keyword: string,
  instancePath: string,
  message: string,
  params: Record<string, unknown>,
  parentSchema?: Schema,
): SchemaIssue {
  return { keyword, instancePath, message, params, parentSchema };
}
