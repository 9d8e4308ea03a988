#!/usr/bin/env python3
"""The manifests applied to a real API server (scripts/k8s-local: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok fake nodes, all on loopback).

In order, each a TAP line:
  - a fresh control plane comes up;
  - the CRDs of Strimzi and KEDA are installed, not the Prometheus Operator's: dev must apply
    without them (monitoring is an opt-in component);
  - dev is applied for real with `kubectl apply --server-side -k` (kubectl's own kustomize), then
    again: the second apply changes nothing and meets no field conflict;
  - the gateway and processor Deployments become Available on the fake node;
  - PodDisruptionBudgets, NetworkPolicies and the topics Job are admitted, the Job's pod runs;
  - the gateway HPA is changed (minReplicas raised, as an edit of the overlay would) and the
    ReplicaSet follows; re-applying dev after that meets no conflict and keeps the count;
  - the Prometheus Operator's CRDs are installed and every overlay passes
    `kubectl apply --server-side --dry-run=server` (admission, CRD schemas, immutable fields).
The control plane is stopped at the end, whatever happened.

usage: live_apply.py --k8s-local SCRIPT --overlays DIR [--crds DIR]
Exit status: 0 all passed, 1 a failure, 77 the control plane is not built (skip).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_render  # noqa: E402

K8S_VERSION = "v1.37.2"
NS = "wsgate-dev"
# CRD files (in $WSGATE_CACHE/crds, from scripts/setup) by the operator they belong to.
PROMETHEUS_CRDS = ("monitoring.coreos.com_",)


class Live:
    def __init__(self, script, overlays, crds):
        self.script, self.overlays, self.crds = script, overlays, crds
        home = os.path.join(k8s_render.cache_dir(), f"k8s-local-{K8S_VERSION}")
        self.kubectl = os.path.join(home, "bin", "kubectl")
        if not os.path.exists(os.path.join(home, ".complete")):
            k8s_render.skip(f"the local control plane is not built ({home}): run scripts/setup "
                            "(once per machine, ~36 min on 2 busy cores) or scripts/k8s-local build")
        run_dir = os.environ.get("WSGATE_RUN_DIR", "/tmp/wsgate-run")
        self.kubeconfig = os.path.join(run_dir, "k8s-local", "admin.kubeconfig")
        self.n = 0
        self.failed = 0

    def tap(self, ok, what, detail=""):
        self.n += 1
        print(f"{'ok' if ok else 'not ok'} {self.n} - {what}", flush=True)
        if not ok:
            self.failed += 1
            for line in str(detail).strip().splitlines()[-25:]:
                print(f"  # {line}")
        return ok

    def k(self, *args, stdin=None, timeout=120):
        return subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout)

    def get(self, *args):
        p = self.k("get", "-o", "json", *args)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def wait_for(self, what, cond, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = cond()
            if last is True:
                return True, ""
            time.sleep(0.5)
        return False, f"timed out after {timeout}s: {last}"

    # --- steps --------------------------------------------------------------------------------

    # The CRD files the overlays need (scripts/setup's CRD list).
    NEEDED = ("strimzi-Kafka.yaml", "strimzi-KafkaNodePool.yaml", "strimzi-KafkaTopic.yaml",
              "keda.sh_scaledobjects.yaml", "monitoring.coreos.com_servicemonitors.yaml",
              "monitoring.coreos.com_podmonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")

    def apply_crds(self, prometheus):
        missing = [f for f in self.NEEDED if not os.path.exists(os.path.join(self.crds, f))]
        if missing:
            return self.tap(False, f"CRD files in {self.crds}", f"missing {missing}: run scripts/setup")
        files = sorted(glob.glob(os.path.join(self.crds, "*.yaml")))
        files = [f for f in files if os.path.basename(f).startswith(PROMETHEUS_CRDS) == prometheus]
        args = ["apply", "--server-side"]
        for f in files:
            args += ["-f", f]
        p = self.k(*args)
        names = ", ".join(os.path.basename(f) for f in files)
        if p.returncode != 0:
            return self.tap(False, f"CRDs installed: {names}", p.stdout + p.stderr)
        import yaml
        crds = [yaml.safe_load(open(f, encoding="utf-8"))["metadata"]["name"] for f in files]

        # Not `kubectl wait`: it fails at once on a CRD whose status has no conditions yet.
        def established():
            for name in crds:
                c = self.get("crd", name) or {}
                conds = {x["type"]: x["status"] for x in (c.get("status") or {}).get("conditions") or []}
                if conds.get("Established") != "True":
                    return f"{name} not established"
            return True
        ok, detail = self.wait_for("crds", established, 60)
        return self.tap(ok, f"CRDs installed and established: {names}", detail)

    def apply_dev(self, what, expect_unchanged=False):
        p = self.k("apply", "--server-side", "-k", os.path.join(self.overlays, "dev"))
        out = p.stdout + p.stderr
        ok = p.returncode == 0
        if ok and expect_unchanged:
            # Every object "serverside-applied"; nothing may have changed its generation.
            ok = "conflict" not in out.lower()
        return self.tap(ok, what, out)

    def generations(self):
        gens = {}
        for kind in ("deployments", "statefulsets", "horizontalpodautoscalers", "services",
                     "poddisruptionbudgets", "networkpolicies", "kafkas", "kafkatopics"):
            items = (self.get(kind, "-n", NS) or {}).get("items", [])
            for o in items:
                gens[f"{kind}/{o['metadata']['name']}"] = (o["metadata"].get("generation"),
                                                           o["metadata"]["resourceVersion"])
        return gens

    def deployment_available(self, name):
        def cond():
            d = self.get("deployment", name, "-n", NS)
            if not d:
                return "not found"
            conds = {c["type"]: c["status"] for c in d.get("status", {}).get("conditions", [])}
            if conds.get("Available") == "True" and d["status"].get("readyReplicas", 0) >= 1:
                return True
            return f"conditions {conds}, ready {d.get('status', {}).get('readyReplicas')}"
        ok, detail = self.wait_for(name, cond, 90)
        return self.tap(ok, f"Deployment/{name} Available on the fake node", detail)

    def admitted(self):
        pdbs = [o["metadata"]["name"] for o in (self.get("pdb", "-n", NS) or {}).get("items", [])]
        self.tap(set(pdbs) >= {"wsgate-gateway", "wsgate-processor"}, f"PodDisruptionBudgets admitted: {pdbs}")
        pdb = self.get("pdb", "wsgate-gateway", "-n", NS) or {}
        self.tap(pdb.get("spec", {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
                 "the gateway PDB keeps unhealthyPodEvictionPolicy AlwaysAllow", json.dumps(pdb.get("spec")))
        nps = [o["metadata"]["name"] for o in (self.get("networkpolicy", "-n", NS) or {}).get("items", [])]
        self.tap(len(nps) >= 1, f"NetworkPolicies admitted: {nps}")
        jobs = (self.get("jobs", "-n", NS, "-l", "app.kubernetes.io/component=topics") or {}).get("items", [])
        self.tap(len(jobs) == 1, f"the topics Job admitted: {[j['metadata']['name'] for j in jobs]}")

        def job_pod():
            pods = (self.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=topics") or {}).get("items", [])
            phases = [p.get("status", {}).get("phase") for p in pods]
            return True if any(ph in ("Running", "Succeeded") for ph in phases) else f"pods {phases}"
        ok, detail = self.wait_for("job pod", job_pod, 60)
        self.tap(ok, "the topics Job's pod is scheduled and runs", detail)

    def replicas(self, name):
        d = self.get("deployment", name, "-n", NS) or {}
        rs = [r for r in (self.get("replicasets", "-n", NS, "-l", "app.kubernetes.io/component=gateway")
                          or {}).get("items", []) if r.get("spec", {}).get("replicas", 0) > 0]
        return d.get("spec", {}).get("replicas"), [(r["metadata"]["name"], r["spec"]["replicas"],
                                                     r.get("status", {}).get("readyReplicas")) for r in rs]

    def hpa_scales(self):
        # The overlay as a user would edit it: minReplicas 3. Applied by the same field manager
        # as `apply -k`, so the only other writer of the Deployment's replicas is the HPA.
        p = self.k("kustomize", os.path.join(self.overlays, "dev"))
        import yaml
        docs = [d for d in yaml.safe_load_all(p.stdout) if d]
        for d in docs:
            if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == "wsgate-gateway":
                d["spec"]["minReplicas"] = 3
        p = self.k("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(docs))
        if not self.tap(p.returncode == 0, "the gateway HPA changed to minReplicas 3", p.stdout + p.stderr):
            return

        def follows():
            spec, rs = self.replicas("wsgate-gateway")
            ready = sum(r[2] or 0 for r in rs)
            return True if spec == 3 and len(rs) == 1 and rs[0][1] == 3 and ready == 3 else f"spec {spec}, rs {rs}"
        ok, detail = self.wait_for("scale", follows, 60)
        self.tap(ok, "the HPA scaled Deployment/wsgate-gateway to 3 and its ReplicaSet has 3 ready pods", detail)
        d = self.get("deployment", "wsgate-gateway", "-n", NS) or {}
        owners = [m["manager"] for m in d.get("metadata", {}).get("managedFields", [])
                  if "f:replicas" in (m.get("fieldsV1") or {}).get("f:spec", {})]
        self.tap("kubectl" not in owners, f"spec.replicas is not owned by the manifests' apply (owners {owners})")
        # The unchanged overlay again (minReplicas back to 1): no conflict, and the count stays
        # where the HPA put it (the manifests do not own it, and without metrics the HPA has no
        # reason to scale down).
        self.apply_dev("re-apply of dev after the HPA scaled: no field conflict", expect_unchanged=True)
        time.sleep(6)  # more than one HPA sync period (5 s, scripts/k8s-local)
        spec, rs = self.replicas("wsgate-gateway")
        self.tap(spec == 3 and len(rs) == 1 and rs[0][1] == 3,
                 f"the re-apply kept the HPA's count (spec.replicas {spec}, ReplicaSets {rs})")

    def dry_run_overlays(self):
        # A dry run creates nothing, so an overlay's objects in a namespace it would create are
        # refused (namespace not found): the namespaces exist first, as after a first apply.
        for ns in ("wsgate",):
            self.k("create", "namespace", ns)
        for ov in sorted(os.listdir(self.overlays)):
            path = os.path.join(self.overlays, ov)
            if not os.path.exists(os.path.join(path, "kustomization.yaml")):
                continue
            p = self.k("apply", "--server-side", "--dry-run=server", "-k", path, timeout=180)
            self.tap(p.returncode == 0, f"overlay {ov}: apply --server-side --dry-run=server", p.stdout + p.stderr)

    def run(self):
        t0 = time.monotonic()
        subprocess.run([self.script, "down"], capture_output=True)
        p = subprocess.run([self.script, "up"], capture_output=True, text=True)
        if not self.tap(p.returncode == 0, f"control plane up ({time.monotonic() - t0:.1f} s)", p.stdout + p.stderr):
            return
        try:
            if not self.apply_crds(prometheus=False):
                return
            if self.apply_dev("dev applied (kubectl apply --server-side -k) without the Prometheus Operator's CRDs"):
                before = self.generations()
                self.apply_dev("dev applied a second time: no field conflict", expect_unchanged=True)
                after = self.generations()
                changed = sorted(k for k in before if before[k][0] != after.get(k, (None,))[0])
                self.tap(not changed, "the second apply changed no object's generation", f"changed: {changed}")
                for name in ("wsgate-gateway", "wsgate-processor"):
                    self.deployment_available(name)
                self.admitted()
                self.hpa_scales()
            if self.apply_crds(prometheus=True):
                self.dry_run_overlays()
        finally:
            subprocess.run([self.script, "down"], capture_output=True)
            print(f"# {time.monotonic() - t0:.1f} s in all")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k8s-local", required=True)
    ap.add_argument("--overlays", required=True)
    ap.add_argument("--crds", default=os.path.join(k8s_render.cache_dir(), "crds"))
    args = ap.parse_args()
    k8s_render.ensure_modules("yaml")
    live = Live(args.k8s_local, args.overlays, args.crds)
    live.run()
    print(f"1..{live.n}")
    return 1 if live.failed else 0


if __name__ == "__main__":
    sys.exit(main())
