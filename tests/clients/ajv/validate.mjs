// Validates messages against Croupier's JSON Schemas with ajv (draft 2020-12, formats on).
// stdin: {"schemas": {name: schema}, "cases": [[name, json text], ...]}
// stdout: [{"valid": bool, "errors": [text]}, ...], one per case, in order.
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { schemas, cases } = JSON.parse(Buffer.concat(chunks).toString("utf8"));

// strict: false lets pydantic's OpenAPI "discriminator" (with its "mapping") pass as an
// annotation; every validation keyword is still applied.
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const compiled = Object.fromEntries(
  Object.entries(schemas).map(([name, schema]) => [name, ajv.compile(schema)]),
);
const results = cases.map(([name, text]) => {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { valid: false, errors: [`not JSON: ${e.message}`] };
  }
  const check = compiled[name];
  const valid = check(value);
  return { valid, errors: (check.errors || []).map((e) => `${e.instancePath} ${e.message}`) };
});
process.stdout.write(JSON.stringify(results));
