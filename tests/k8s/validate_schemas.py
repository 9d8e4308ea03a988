#!/usr/bin/env python3
"""Renders a kustomization and validates every object offline against its schema.

Kubernetes' own kinds are checked with kubernetes-validate's JSON schemas in strict mode
(unknown fields are errors, as `kubectl apply --validate=strict` would make them), for the
oldest and the newest Kubernetes version we support. Custom resources (Strimzi's Kafka,
KafkaNodePool and KafkaTopic, the Prometheus Operator's ServiceMonitor, KEDA's ScaledObject)
are checked against the openAPIV3Schema of their CRD, made strict the same way, from the CRD
files scripts/setup puts in $WSGATE_CACHE/crds. An object of a kind with no schema is an error;
if the CRD directory is missing altogether the custom resources are skipped with the reason
printed, and the Kubernetes kinds are still checked.

usage: validate_schemas.py [--kube-version V]... [--crd-dir DIR] [--expect-error REGEX] PATH
  --expect-error  succeed only if validation fails with an error matching REGEX (the tests of
                  the broken fixtures under tests/k8s/fixtures)
Exit status: 0 valid (or the expected error seen), 1 invalid, 77 tools missing (skip).
"""
import argparse
import copy
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

# 1.30: the oldest version the manifests need (the preStop `sleep` action is beta and on by
# default from 1.30). The newest is the newest kubernetes-validate knows.
DEFAULT_VERSIONS = ["1.30.0", "1.37.0"]


def strictify(schema):
    """Makes an OpenAPI schema reject unknown fields, like the API server's strict validation."""
    if isinstance(schema, dict):
        out = {k: strictify(v) for k, v in schema.items()}
        if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strictify(v) for v in schema]
    return schema


def load_crds(crd_dir):
    """{(apiVersion, kind): (schema, source file)} of every CRD version served in CRD_DIR."""
    import yaml

    schemas = {}
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for v in spec.get("versions", []):
                    if not v.get("served", True):
                        continue
                    s = (v.get("schema") or {}).get("openAPIV3Schema")
                    if s is None:
                        continue
                    s = copy.deepcopy(s)
                    # A CRD says only `type: object` here; ObjectMeta is checked on its own.
                    s.setdefault("properties", {})["metadata"] = {"type": "object"}
                    schemas[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = (
                        strictify(s), os.path.basename(path))
    return schemas


def object_meta_validator(version):
    """A validator of ObjectMeta (strict) from kubernetes-validate's definitions of VERSION."""
    import json

    import importlib_resources
    import jsonschema
    from referencing import Registry, Resource

    ref = importlib_resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json")
    with importlib_resources.as_file(ref) as path, open(path, encoding="utf-8") as f:
        defs = json.load(f)
    registry = Resource.from_contents(defs) @ Registry()
    return jsonschema.Draft202012Validator(
        {"$ref": f"{defs['$id']}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
        registry=registry)


def validate(objs, versions, crd_dir):
    import jsonschema
    import kubernetes_validate.utils as kv

    errors, notes = [], []
    meta = object_meta_validator(versions[-1])
    crds = load_crds(crd_dir) if os.path.isdir(crd_dir) else None
    if crds is None:
        notes.append(f"custom resources SKIPPED: no CRD schemas in {crd_dir} (scripts/setup "
                     "generates them); Kubernetes kinds are still validated")
    for obj in objs:
        name = k8s_render.describe(obj)
        key = (obj.get("apiVersion"), obj.get("kind"))
        if crds is not None and key in crds:
            schema, src = crds[key]
            errs = sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
            for e in errs:
                path = ".".join(str(p) for p in e.path) or "(top)"
                errors.append(f"{name}: {path}: {e.message} (CRD schema {src})")
            merrs = sorted(meta.iter_errors(obj.get("metadata") or {}), key=lambda e: list(e.path))
            for e in merrs:
                path = ".".join(["metadata"] + [str(p) for p in e.path])
                errors.append(f"{name}: {path}: {e.message} (ObjectMeta, strict)")
            if not errs and not merrs:
                notes.append(f"ok {name} against {src}")
            continue
        for v in versions:
            try:
                kv.validate(obj, v, strict=True)
            except kv.SchemaNotFoundError:
                if crds is None and "." in (obj.get("apiVersion") or "").split("/")[0]:
                    notes.append(f"SKIPPED {name} ({key[0]}): no CRD schema available")
                else:
                    errors.append(f"{name}: no schema for {key[0]} {key[1]} (Kubernetes {v} or "
                                  f"the CRDs in {crd_dir})")
                break
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                errors.append(f"{name}: {path}: {e.message} (Kubernetes {v}, strict)")
            else:
                notes.append(f"ok {name} against Kubernetes {v} (strict)")
    return errors, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--kube-version", action="append")
    ap.add_argument("--crd-dir", default=os.path.join(k8s_render.cache_dir(), "crds"))
    ap.add_argument("--expect-error")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    k8s_render.ensure_modules("yaml", "jsonschema", "kubernetes_validate")
    import kubernetes_validate.version

    print(f"kubernetes-validate {kubernetes_validate.version.__version__}, "
          f"kustomize: {' '.join(k8s_render.kustomize_cmd())}")
    try:
        objs = k8s_render.render(args.path)
    except k8s_render.RenderError as e:
        errors, notes = [str(e)], []
    else:
        errors, notes = validate(objs, args.kube_version or DEFAULT_VERSIONS, args.crd_dir)
        print(f"{args.path}: {len(objs)} objects")
    for n in notes:
        if args.verbose or not n.startswith("ok "):
            print(n)
    for e in errors:
        print(f"ERROR: {e}")
    if args.expect_error:
        hit = [e for e in errors if re.search(args.expect_error, e)]
        if hit:
            print(f"PASS: failed as expected ({args.expect_error!r} matched)")
            return 0
        print(f"FAIL: expected an error matching {args.expect_error!r}, got "
              f"{len(errors)} other error(s)")
        return 1
    if errors:
        print(f"FAIL: {len(errors)} schema error(s)")
        return 1
    print(f"PASS: {len(objs)} objects valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
