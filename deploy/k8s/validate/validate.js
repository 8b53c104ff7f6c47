#!/usr/bin/env node
// Validates rendered Kubernetes manifests offline: every object against the
// Kubernetes OpenAPI schema (kubernetes-models) or the Prometheus Operator
// CRD schema, plus a strict check for unknown fields, which the OpenAPI
// schema alone allows (the API server drops them silently, or rejects them
// under kubectl --validate=strict).
//   node validate.js FILE.yaml...     (or - for stdin)
// Prints one line per object; exits 1 naming every problem.
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

// The model class of apiVersion/kind, or null when no package knows it.
function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = group === "monitoring.coreos.com"
    ? [`@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`]
    : [group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`];
  for (const name of candidates) {
    try {
      const mod = require(name);
      if (mod[kind]) return mod[kind];
    } catch (e) {
      if (e.code !== "MODULE_NOT_FOUND") throw e;
    }
  }
  return null;
}

// The schema errors of `doc` (ajv errors with instancePath), [] when valid.
function schemaErrors(Model, doc) {
  try {
    new Model(doc).validate();
    return [];
  } catch (e) {
    if (Array.isArray(e.errors)) return e.errors;
    return [{instancePath: "", message: e.message}];
  }
}

const PROBE = Symbol("unknown-field probe");

function setAt(root, keys, value) {
  let node = root;
  for (let i = 0; i < keys.length - 1; i++) node = node[keys[i]];
  node[keys[keys.length - 1]] = value;
}

function pointer(keys) {
  return keys.map((k) => "/" + String(k).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

// A field is known when the schema looks at it: replacing its value with a
// value no JSON schema type accepts (a Symbol) must raise an error at its own
// path. Fields under free-form maps (labels, annotations, resources, a
// ConfigMap's data) are checked too: the map's value schema rejects a Symbol.
function unknownFields(Model, doc) {
  const unknown = [];
  const walk = (node, keys) => {
    if (node === null || typeof node !== "object") return;
    const entries = Array.isArray(node) ? node.map((v, i) => [i, v]) : Object.entries(node);
    for (const [key, value] of entries) {
      const at = keys.concat([key]);
      if (!Array.isArray(node)) {
        const probe = structuredClone(doc);
        setAt(probe, at, PROBE);
        const where = pointer(at);
        const seen = schemaErrors(Model, probe).some(
            (e) => e.instancePath === where || e.instancePath.startsWith(where + "/"));
        if (!seen) {
          unknown.push(where);
          continue;  // its children are unknown too; name the top one only
        }
      }
      walk(value, at);
    }
  };
  walk(doc, []);
  return unknown;
}

function main(files) {
  let docs = [];
  for (const file of files) {
    const text = fs.readFileSync(file === "-" ? 0 : file, "utf8");
    for (const d of YAML.parseAllDocuments(text)) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
      const obj = d.toJS();
      if (obj !== null && obj !== undefined) docs.push({file, obj});
    }
  }
  if (docs.length === 0) {
    console.error("validate.js: no objects to validate");
    return 1;
  }
  let problems = 0;
  for (const {file, obj} of docs) {
    const name = `${file}: ${obj.apiVersion}/${obj.kind} ${obj.metadata && obj.metadata.name}`;
    const Model = obj.apiVersion && obj.kind ? modelFor(obj.apiVersion, obj.kind) : null;
    if (!Model) {
      console.log(`FAIL ${name}: no schema for this apiVersion/kind`);
      problems++;
      continue;
    }
    const errors = schemaErrors(Model, obj);
    const unknown = errors.length ? [] : unknownFields(Model, obj);
    for (const e of errors) console.log(`FAIL ${name}: ${e.instancePath || "/"} ${e.message}`);
    for (const u of unknown) console.log(`FAIL ${name}: ${u} is not a field of the schema`);
    if (errors.length || unknown.length) {
      problems++;
    } else {
      console.log(`ok   ${name}`);
    }
  }
  console.log(`validate.js: ${docs.length} objects, ${problems} with problems`);
  return problems ? 1 : 0;
}

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (e) {
    console.error(`validate.js: ${e.message}`);
    process.exitCode = 2;
  }
}

module.exports = {main};
