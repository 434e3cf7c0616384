#!/usr/bin/env python3
"""Turn a Kubernetes OpenAPI v2 document (swagger.json) into kubeconform schemas.

    openapi2jsonschema.py SWAGGER_JSON OUT_DIR KUBE_VERSION

writes, for every kind the document defines (x-kubernetes-group-version-kind):

    OUT_DIR/v<KUBE_VERSION>-standalone/<kind>-<group>-<version>.json
    OUT_DIR/v<KUBE_VERSION>-standalone-strict/<kind>-<group>-<version>.json

which is the layout kubeconform expects under `-schema-location OUT_DIR`
(`-strict` selects the second directory). <group> is the first label of the
API group ("apps", "rbac" for rbac.authorization.k8s.io) and is left out for the
core group: deployment-apps-v1.json, clusterrole-rbac-v1.json, service-v1.json.

Each file is standalone: the kind's schema plus, under "definitions", every
definition it reaches, so references stay local and recursive types work. The
conversion follows what the API server accepts rather than the letter of the
OpenAPI types:

- IntOrString accepts a string or an integer, Quantity a string or a number;
- an optional field (not listed in "required") also accepts null;
- in the strict variant every object with declared properties rejects any
  other property (additionalProperties: false); free-form maps keep theirs.

It also writes OUT_DIR/cluster-scoped-kinds.txt, one "apiVersion kind" a line,
for the kinds whose API paths have no {namespace} segment (Namespace,
ClusterRole, ...), derived from the same document.

Standard library only.
"""

import copy
import json
import os
import sys

REF_PREFIX = "#/definitions/"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
# Suffix of the definition that is the same type or null (for optional fields).
NULLABLE = ".nullable"


def convert(node, strict):
    """Return a JSON Schema (draft 4) copy of an OpenAPI v2 schema node."""
    if isinstance(node, list):
        return [convert(item, strict) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        out = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        if "description" in node:
            out["description"] = node["description"]
        return out
    out = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            required = set(node.get("required", []))
            out[key] = {
                name: convert_property(prop, name in required, strict)
                for name, prop in value.items()
            }
        else:
            out[key] = convert(value, strict)
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def convert_property(prop, required, strict):
    out = convert(prop, strict)
    if required:
        return out
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        # Draft 4 ignores the siblings of $ref: point at the definition's nullable twin.
        return {"$ref": ref + NULLABLE}
    return nullable(out)


def nullable(schema):
    """A copy of schema that also accepts null (an anyOf would bury errors in alternatives)."""
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str) and kind != "null":
        out["type"] = [kind, "null"]
    elif isinstance(out.get("oneOf"), list):
        out["oneOf"] = out["oneOf"] + [{"type": "null"}]
    return out


def refs(node, found):
    """Add the definition names that node refers to, directly, to found."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX):])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for item in node:
            refs(item, found)


def closure(name, definitions):
    """Names of every definition reachable from definition name (itself excluded unless recursive)."""
    seen, todo = set(), [name]
    while todo:
        direct = set()
        refs(definitions[todo.pop()], direct)
        for ref in direct - seen:
            if ref not in definitions:
                raise SystemExit(f"{name}: reference to undefined {ref}")
            seen.add(ref)
            todo.append(ref)
    return seen


def api_version(gvk):
    group, version = gvk.get("group", ""), gvk["version"]
    return f"{group}/{version}" if group else version


def file_name(gvk):
    """kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json for this group/version/kind."""
    suffix = ""
    if gvk.get("group"):
        suffix += "-" + gvk["group"].split(".")[0].lower()
    suffix += "-" + gvk["version"].lower()
    return gvk["kind"].lower() + suffix + ".json"


def cluster_scoped_kinds(paths):
    """(apiVersion, kind) of kinds served only by paths without a {namespace} segment."""
    namespaced = {}
    for path, item in paths.items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            gvk = operation.get("x-kubernetes-group-version-kind")
            if not gvk:
                continue
            key = (api_version(gvk), gvk["kind"])
            namespaced[key] = namespaced.get(key, False) or "{namespace}" in path
    return sorted(key for key, is_namespaced in namespaced.items() if not is_namespaced)


def main(argv):
    if len(argv) != 4:
        raise SystemExit(__doc__.split("\n\n")[1])
    swagger_path, out_dir, kube_version = argv[1], argv[2], argv[3].lstrip("v")
    with open(swagger_path, encoding="utf-8") as f:
        doc = json.load(f)
    definitions = doc["definitions"]

    base = copy.deepcopy(definitions)
    if QUANTITY in base:
        quantity = base[QUANTITY]
        base[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
        if "description" in quantity:
            base[QUANTITY]["description"] = quantity["description"]

    written = 0
    for strict in (False, True):
        variant = f"v{kube_version}-standalone" + ("-strict" if strict else "")
        target = os.path.join(out_dir, variant)
        os.makedirs(target, exist_ok=True)
        converted = {name: convert(schema, strict) for name, schema in base.items()}
        converted.update({name + NULLABLE: nullable(schema) for name, schema in converted.items()})
        names = {}
        for name, schema in sorted(definitions.items()):
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                fname = file_name(gvk)
                if fname in names:
                    raise SystemExit(f"{fname}: defined by both {names[fname]} and {name}")
                names[fname] = name
                out = dict(converted[name])
                reached = closure(name, converted)
                if reached:
                    out["definitions"] = {ref: converted[ref] for ref in sorted(reached)}
                with open(os.path.join(target, fname), "w", encoding="utf-8") as f:
                    json.dump(out, f, separators=(",", ":"), sort_keys=True)
                written += 1

    with open(os.path.join(out_dir, "cluster-scoped-kinds.txt"), "w", encoding="utf-8") as f:
        f.write(f"# Cluster-scoped kinds of Kubernetes v{kube_version}: apiVersion kind\n")
        for version, kind in cluster_scoped_kinds(doc.get("paths", {})):
            f.write(f"{version} {kind}\n")
    print(f"wrote {written} schemas for Kubernetes v{kube_version} into {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
