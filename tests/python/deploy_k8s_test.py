"""The Kubernetes manifests as a cluster would see them: every kustomization
under deploy/k8s renders with `kubectl kustomize` (Debian's kubectl 1.20 embeds
kustomize v2.0.3, the oldest the files are written for; newer ones render the
same), every rendered object validates offline against the Kubernetes OpenAPI
schema and the Prometheus Operator CRDs, unknown fields included
(deploy/k8s/validate), and the pods follow docs/DEPLOY.md: Pod Security
`restricted`, gRPC health probes by service name, resources, no API token, a
PodDisruptionBudget, a drain that fits the grace period, GPUs in the gpu
overlay. Exits 77 (CTest SKIP_RETURN_CODE) when kubectl, node or the
validator's packages (deploy/k8s/validate/install.sh) are missing."""
import os
import re
import shutil
import subprocess
import sys
import unittest

import yaml  # Debian python3-yaml

SOURCE_DIR = os.environ.get(
    "ARBOR_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
K8S = os.path.join(SOURCE_DIR, "deploy", "k8s")
VALIDATE = os.path.join(K8S, "validate")
KUSTOMIZATIONS = ["overlays/cpu-demo", "overlays/gpu", "monitoring", "autoscaling"]
SERVICE_OF = {"coordinator": "arbor.v1.Reasoning", "worker": "arbor.v1.Generator",
              "verifier": "arbor.v1.Verifier"}
KUBECTL, NODE = shutil.which("kubectl"), shutil.which("node")


def render(kustomization):
    result = subprocess.run([KUBECTL, "kustomize", os.path.join(K8S, kustomization)],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError("kubectl kustomize %s: %s" % (kustomization, result.stderr))
    return result.stdout


def flag(args, name):
    for arg in args:
        m = re.match(r"--%s=(.*)$" % name, arg)
        if m:
            return m.group(1)
    return None


class DeployK8sTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rendered = {k: render(k) for k in KUSTOMIZATIONS}
        cls.objects = {k: [o for o in yaml.safe_load_all(text) if o]
                       for k, text in cls.rendered.items()}

    def test_every_object_validates_against_the_schema(self):
        for kustomization, text in self.rendered.items():
            result = subprocess.run([NODE, os.path.join(VALIDATE, "validate.js"), "-"],
                                    input=text, capture_output=True, text=True, timeout=120)
            self.assertEqual(result.returncode, 0,
                             "%s:\n%s%s" % (kustomization, result.stdout, result.stderr))
            self.assertIn("0 with problems", result.stdout)

    def test_the_validator_rejects_unknown_fields_and_bad_values(self):
        bad = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
               "  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n"
               "    spec:\n      containers:\n        - name: c\n          image: i\n"
               "          readinessProbe: {grpc: {port: 1, servce: arbor.v1.Reasoning}}\n"
               "          resources: {requests: {cpu: lots}}\n")
        result = subprocess.run([NODE, os.path.join(VALIDATE, "validate.js"), "-"], input=bad,
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("/resources/requests/cpu", result.stdout)
        bad = bad.replace("cpu: lots", "cpu: 100m")
        result = subprocess.run([NODE, os.path.join(VALIDATE, "validate.js"), "-"], input=bad,
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("readinessProbe/grpc/servce is not a field", result.stdout)

    def deployments(self, kustomization):
        return {o["metadata"]["name"].replace("arbor-", ""): o
                for o in self.objects[kustomization] if o["kind"] == "Deployment"}

    def test_pods_are_restricted_probed_and_drain_in_time(self):
        for kustomization in ["overlays/cpu-demo", "overlays/gpu"]:
            objects = self.objects[kustomization]
            namespace = [o for o in objects if o["kind"] == "Namespace"][0]
            self.assertEqual(
                namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted")
            accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
            pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
            deployments = self.deployments(kustomization)
            self.assertEqual(set(deployments), set(SERVICE_OF))
            for role, d in deployments.items():
                where = "%s %s" % (kustomization, role)
                self.assertEqual(d["metadata"]["namespace"], "arbor", where)
                pod = d["spec"]["template"]["spec"]
                labels = d["spec"]["template"]["metadata"]["labels"]
                self.assertIs(pod["automountServiceAccountToken"], False, where)
                self.assertIs(accounts[pod["serviceAccountName"]]["automountServiceAccountToken"],
                              False, where)
                sc = pod["securityContext"]
                self.assertIs(sc["runAsNonRoot"], True, where)
                self.assertNotEqual(sc["runAsUser"], 0, where)
                self.assertEqual(sc["seccompProfile"]["type"], "RuntimeDefault", where)
                self.assertTrue(any(
                    all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())
                    for p in pdbs), "%s has no PodDisruptionBudget" % where)
                for c in pod.get("initContainers", []) + pod["containers"]:
                    csc = c["securityContext"]
                    self.assertIs(csc["allowPrivilegeEscalation"], False, where)
                    self.assertIs(csc["readOnlyRootFilesystem"], True, where)
                    self.assertEqual(csc["capabilities"]["drop"], ["ALL"], where)
                    self.assertIn("cpu", c["resources"]["requests"], where)
                    self.assertIn("memory", c["resources"]["requests"], where)
                    self.assertIn("memory", c["resources"]["limits"], where)
                main = pod["containers"][0]
                port = int(flag(main["args"], "port"))
                for probe in ["startupProbe", "readinessProbe"]:
                    self.assertEqual(main[probe]["grpc"],
                                     {"port": port, "service": SERVICE_OF[role]}, where + probe)
                self.assertEqual(main["livenessProbe"]["grpc"]["port"], port, where)
                # The drain (delay + grace) ends before the kubelet's SIGKILL,
                # and liveness does not kill a draining pod (NOT_SERVING).
                drain_s = (int(flag(main["args"], "drain_delay_ms")) +
                           int(flag(main["args"], "drain_grace_ms"))) / 1000
                self.assertGreater(pod["terminationGracePeriodSeconds"], drain_s, where)
                live = main["livenessProbe"]
                self.assertGreater(live["periodSeconds"] * live["failureThreshold"], drain_s, where)
                self.assertIn("/models/", flag(main["args"], "model") or "/models/", where)
            self.assertEqual(
                deployments["coordinator"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)
            services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
            for role in SERVICE_OF:
                self.assertEqual(services["arbor-" + role]["spec"]["clusterIP"], "None")

    def test_cpu_demo_runs_anywhere_with_the_bundled_models(self):
        for role, d in self.deployments("overlays/cpu-demo").items():
            pod = d["spec"]["template"]["spec"]
            self.assertEqual(d["spec"]["replicas"], 1, role)
            self.assertTrue(pod["containers"][0]["image"].endswith("-cpu-demo"), role)
            self.assertNotIn("nvidia.com/gpu", str(pod), role)
            if role != "coordinator":
                self.assertEqual(flag(pod["containers"][0]["args"], "backend"), "cpu")
                init = pod["initContainers"][0]
                self.assertEqual(init["command"][:2], ["cp", "-R"])
                self.assertIn("/opt/arbor/models/", init["command"][2])

    def test_gpu_overlay_requests_gpus_and_mounts_models(self):
        pvcs = [o for o in self.objects["overlays/gpu"] if o["kind"] == "PersistentVolumeClaim"]
        self.assertEqual([p["metadata"]["namespace"] for p in pvcs], ["arbor"])
        for role, d in self.deployments("overlays/gpu").items():
            pod = d["spec"]["template"]["spec"]
            main = pod["containers"][0]
            if role == "coordinator":
                self.assertNotIn("nvidia.com/gpu", str(pod))
                continue
            self.assertEqual(flag(main["args"], "backend"), "cuda", role)
            self.assertEqual(main["resources"]["limits"]["nvidia.com/gpu"], 1, role)
            self.assertIn({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                          pod["tolerations"], role)
            self.assertIn("nvidia.com/gpu.present", pod["nodeSelector"], role)
            volumes = {v["name"]: v for v in pod["volumes"]}
            self.assertEqual(volumes["models"]["persistentVolumeClaim"]["claimName"],
                             pvcs[0]["metadata"]["name"], role)
            self.assertNotIn("emptyDir", volumes["models"], role)
            self.assertEqual(volumes["dshm"]["emptyDir"]["medium"], "Memory", role)
            mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
            self.assertEqual(mounts["/dev/shm"], "dshm", role)
            self.assertEqual(mounts["/models"], "models", role)

    def test_monitoring_scrapes_what_the_rules_expect(self):
        monitor = [o for o in self.objects["monitoring"] if o["kind"] == "PodMonitor"][0]
        endpoint = monitor["spec"]["podMetricsEndpoints"][0]
        self.assertEqual(endpoint["port"], "metrics")
        targets = {r["targetLabel"] for r in endpoint["relabelings"]}
        self.assertEqual(targets, {"job", "component", "pod"})
        for d in self.deployments("overlays/gpu").values():
            ports = {p["name"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
            self.assertIn("metrics", ports)
        hpa = self.objects["autoscaling"][0]
        self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"], "arbor-worker")


if __name__ == "__main__":
    missing = [name for name, ok in [
        ("kubectl (Debian: kubernetes-client)", KUBECTL), ("node (Debian: nodejs)", NODE),
        ("the validator's packages (deploy/k8s/validate/install.sh)",
         os.path.isdir(os.path.join(VALIDATE, "node_modules", "kubernetes-models")))] if not ok]
    if missing:
        print("SKIP: missing " + ", ".join(missing))
        sys.exit(77)
    unittest.main(verbosity=2)
