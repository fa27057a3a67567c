/**
 * deploy/k8s: renders the base and every overlay with `kubectl kustomize` (offline), validates
 * every object against the Kubernetes OpenAPI schemas (kubernetes-models, the Prometheus
 * Operator's for ServiceMonitor), and checks what the manifests promise: a hardened pod, gRPC
 * probes, settings that `greyfleet serve` accepts, Services, NetworkPolicy and autoscaling per
 * store. The schemas do not reject unknown fields (Kubernetes' own do not either), so the fields
 * that matter are asserted by path below.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { Deployment, type IDeployment } from "kubernetes-models/apps/v1/Deployment";
import {
  HorizontalPodAutoscaler,
  type IHorizontalPodAutoscaler,
} from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { type INetworkPolicy, NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap, type IConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { type IPersistentVolumeClaim, PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { type IService, Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { parseAllDocuments } from "yaml";
import { isConfigProblem, loadConfig } from "../../services/shared/config";
import { projectFile } from "../../services/shared/paths";

const NAMESPACE = "greyfleet";
const GRPC_PORT = 50051;
const METRICS_PORT = 9750;
const CONFIG_FILE = "/etc/greyfleet/greyfleet.yaml";
/** Stands in for the Secret's value. */
const SAMPLE_PASSWORD = "s3cret/pass:w@rd";
/** The Deployment's preStop sleep. */
const PRE_STOP_SECONDS = 5;

type StoreKind = "redis" | "sentinel" | "cluster" | "sqlite";

/** Every kustomization, and the store it is for. */
const TARGETS: readonly { dir: string; store: StoreKind }[] = [
  { dir: "deploy/k8s/base", store: "redis" },
  { dir: "deploy/k8s/overlays/redis-sentinel", store: "sentinel" },
  { dir: "deploy/k8s/overlays/redis-cluster", store: "cluster" },
  { dir: "deploy/k8s/overlays/single-replica-sqlite", store: "sqlite" },
];

/** Per store: the URL scheme, the Secret holding the password, and the Redis pods it must reach. */
const STORES: Readonly<
  Record<StoreKind, { scheme: string; secret?: string; egress?: { labels: Record<string, string>; ports: number[] } }>
> = {
  redis: {
    scheme: "redis:",
    secret: "greyfleet-redis",
    egress: { labels: { "app.kubernetes.io/name": "redis" }, ports: [6379] },
  },
  sentinel: {
    scheme: "redis+sentinel:",
    secret: "greyfleet-redis",
    egress: { labels: { "app.kubernetes.io/name": "redis" }, ports: [6379, 26379] },
  },
  cluster: {
    scheme: "redis+cluster:",
    secret: "greyfleet-redis-cluster",
    egress: { labels: { "app.kubernetes.io/name": "redis-cluster" }, ports: [6379] },
  },
  sqlite: { scheme: "sqlite:" },
};

/** A rendered object: only its type is known before validation. */
interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
}

function validator<A>(Model: new (data?: A) => { validate(): void }): (data: unknown) => void {
  return (data) => new Model(data as A).validate();
}

/** The schema of every kind the manifests may contain; any other kind fails the test. */
const SCHEMAS: Readonly<Record<string, (data: unknown) => void>> = {
  "v1/Namespace": validator(Namespace),
  "v1/ServiceAccount": validator(ServiceAccount),
  "v1/ConfigMap": validator(ConfigMap),
  "v1/Service": validator(Service),
  "v1/PersistentVolumeClaim": validator(PersistentVolumeClaim),
  "apps/v1/Deployment": validator(Deployment),
  "autoscaling/v2/HorizontalPodAutoscaler": validator(HorizontalPodAutoscaler),
  "policy/v1/PodDisruptionBudget": validator(PodDisruptionBudget),
  "networking.k8s.io/v1/NetworkPolicy": validator(NetworkPolicy),
  "monitoring.coreos.com/v1/ServiceMonitor": validator(ServiceMonitor),
};

/**
 * kubectl with kustomize v4 or later (`labels`, inline `patches`): the machine images' kubectl
 * 1.32 has v5.5. Debian's kubernetes-client (1.20) embeds kustomize v2 and cannot render these.
 */
function checkKubectl(): void {
  const result = spawnSync("kubectl", ["version", "--client", "-o", "json"], { encoding: "utf8", timeout: 30_000 });
  if (result.error) throw new Error(`kubectl: ${result.error.message} (kubectl 1.21+ is needed)`);
  const version = (JSON.parse(result.stdout) as { kustomizeVersion?: string }).kustomizeVersion ?? "";
  const major = Number(/^v(\d+)\./.exec(version)?.[1] ?? 0);
  assert.ok(major >= 4, `kubectl's kustomize is ${version || "missing"}; v4 or later is needed`);
}

function render(dir: string): KubeObject[] {
  const result = spawnSync("kubectl", ["kustomize", projectFile(dir)], { encoding: "utf8", timeout: 60_000 });
  if (result.error) throw new Error(`kubectl kustomize ${dir}: ${result.error.message} (is kubectl installed?)`);
  assert.equal(result.status, 0, `kubectl kustomize ${dir} failed:\n${result.stderr}`);
  const objects: KubeObject[] = [];
  for (const doc of parseAllDocuments(result.stdout)) {
    assert.deepEqual(doc.errors, [], `${dir}: rendered YAML does not parse`);
    const value: unknown = doc.toJS();
    assert.ok(typeof value === "object" && value !== null, `${dir}: a rendered document is not an object`);
    const object = value as KubeObject;
    assert.ok(object.apiVersion && object.kind && object.metadata?.name, `${dir}: an object lacks its type or name`);
    objects.push(object);
  }
  return objects;
}

function id(object: KubeObject): string {
  return `${object.apiVersion}/${object.kind}`;
}

function ofKind<T>(objects: readonly KubeObject[], apiVersion: string, kind: string): T[] {
  return objects.filter((o) => o.apiVersion === apiVersion && o.kind === kind) as unknown as T[];
}

function only<T>(objects: readonly KubeObject[], apiVersion: string, kind: string): T {
  const found = ofKind<T>(objects, apiVersion, kind);
  assert.equal(found.length, 1, `expected exactly one ${apiVersion} ${kind}`);
  return found[0] as T;
}

function matches(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  assert.ok(selector && Object.keys(selector).length > 0, "an empty selector selects everything");
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value);
}

/** The Deployment's container and pod spec, which every manifest of the target must fit. */
function decisionPod(objects: readonly KubeObject[]) {
  const deployment = only<IDeployment>(objects, "apps/v1", "Deployment");
  const pod = deployment.spec?.template.spec;
  assert.ok(pod, "the Deployment has a pod template");
  assert.equal(pod.containers.length, 1, "one container: greyfleet");
  const container = pod.containers[0];
  assert.ok(container);
  return { deployment, pod, container, labels: deployment.spec?.template.metadata?.labels ?? {} };
}

checkKubectl();

describe("offline schema validation", () => {
  it("rejects what the API server would (so a pass means something)", () => {
    const broken = { apiVersion: "apps/v1", kind: "Deployment", metadata: { name: "x" }, spec: { replicas: "2" } };
    assert.throws(() => SCHEMAS["apps/v1/Deployment"]?.(broken), /selector|replicas must be integer/);
    const probe = { port: "50051", service: "" };
    const pod = { containers: [{ name: "c", image: "i", livenessProbe: { grpc: probe } }] };
    const deployment = { ...broken, spec: { selector: {}, template: { spec: pod } } };
    assert.throws(() => SCHEMAS["apps/v1/Deployment"]?.(deployment), /grpc\/port must be integer/);
    const monitor = {
      apiVersion: "monitoring.coreos.com/v1",
      kind: "ServiceMonitor",
      metadata: { name: "m" },
      spec: {},
    };
    assert.throws(() => SCHEMAS["monitoring.coreos.com/v1/ServiceMonitor"]?.(monitor), /selector/);
  });
});

for (const target of TARGETS) {
  describe(`kustomize ${target.dir}`, () => {
    const objects = render(target.dir);
    const { deployment, pod, container, labels } = decisionPod(objects);
    const store = STORES[target.store];

    it("renders only kinds with a schema, and every object validates against it", () => {
      const problems: string[] = [];
      for (const object of objects) {
        const validate = SCHEMAS[id(object)];
        if (!validate) {
          problems.push(`${id(object)} ${object.metadata.name}: no schema known to this test`);
          continue;
        }
        try {
          validate(object);
        } catch (error) {
          problems.push(`${id(object)} ${object.metadata.name}: ${error instanceof Error ? error.message : error}`);
        }
      }
      assert.deepEqual(problems, []);
    });

    it("puts everything in the greyfleet namespace, Pod Security 'restricted' enforced", () => {
      for (const object of objects) {
        if (object.kind === "Namespace") continue;
        assert.equal(object.metadata.namespace, NAMESPACE, `${object.kind} ${object.metadata.name}`);
      }
      const namespace = only<KubeObject>(objects, "v1", "Namespace");
      assert.equal(namespace.metadata.name, NAMESPACE);
      assert.equal(namespace.metadata.labels?.["pod-security.kubernetes.io/enforce"], "restricted");
    });

    it("runs the pod non-root, read-only, without capabilities, privilege escalation or a token", () => {
      assert.equal(pod.securityContext?.runAsNonRoot, true);
      assert.ok((pod.securityContext?.runAsUser ?? 0) > 0, "a numeric non-root runAsUser");
      assert.equal(pod.securityContext?.seccompProfile?.type, "RuntimeDefault");
      assert.equal(pod.automountServiceAccountToken, false);
      assert.notEqual(pod.hostNetwork, true);
      const security = container.securityContext;
      assert.equal(security?.readOnlyRootFilesystem, true);
      assert.equal(security?.allowPrivilegeEscalation, false);
      assert.notEqual(security?.privileged, true);
      assert.notEqual(security?.runAsNonRoot, false);
      assert.deepEqual(security?.capabilities?.drop, ["ALL"]);
      assert.equal(security?.capabilities?.add, undefined);
      assert.equal(security?.seccompProfile?.type, "RuntimeDefault");
    });

    it("sets CPU and memory requests and limits", () => {
      for (const kind of ["requests", "limits"] as const) {
        for (const resource of ["cpu", "memory"]) {
          assert.ok(container.resources?.[kind]?.[resource] !== undefined, `${kind}.${resource}`);
        }
      }
    });

    it("probes gRPC health natively: readiness for GreylistService, liveness for the server", () => {
      assert.deepEqual(container.readinessProbe?.grpc, { port: GRPC_PORT, service: "greyfleet.v1.GreylistService" });
      assert.deepEqual(container.livenessProbe?.grpc, { port: GRPC_PORT, service: "" });
      assert.deepEqual(container.startupProbe?.grpc, { port: GRPC_PORT, service: "" });
      const ports = (container.ports ?? []).map((p) => [p.name, p.containerPort]);
      assert.deepEqual(ports, [
        ["grpc", GRPC_PORT],
        ["metrics", METRICS_PORT],
      ]);
    });

    it("uses a pinned image, not :latest", () => {
      assert.match(container.image ?? "", /^[^:]+\/greyfleet:\d+\.\d+\.\d+$/);
    });

    it("passes settings that `greyfleet serve` accepts (flags, the password from a Secret, the ConfigMap file)", () => {
      const args = container.args ?? [];
      assert.equal(args[0], "serve");
      assert.ok(args.join(" ").includes(`--listen 0.0.0.0:${GRPC_PORT}`), "gRPC on all interfaces");
      assert.ok(args.join(" ").includes(`--metrics-listen 0.0.0.0:${METRICS_PORT}`), "metrics on all interfaces");
      assert.ok(args.join(" ").includes(`--config ${CONFIG_FILE}`));
      assert.ok(!args.some((arg) => arg.startsWith("--store")), "the store comes from the environment");

      // What the kubelet gives the container; it expands $(NAME) only from variables defined earlier.
      const env: Record<string, string> = {};
      const fromSecrets: string[] = [];
      for (const variable of container.env ?? []) {
        if (variable.valueFrom) {
          const ref = variable.valueFrom.secretKeyRef;
          assert.ok(ref, `${variable.name} comes from a Secret key`);
          assert.equal(ref.name, store.secret, `${variable.name}: the Secret of the ${target.store} store`);
          fromSecrets.push(variable.name);
          env[variable.name] = SAMPLE_PASSWORD;
          continue;
        }
        env[variable.name] = (variable.value ?? "").replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
          assert.ok(name in env, `${variable.name} refers to $(${name}), which is not defined before it`);
          return env[name] as string;
        });
      }
      assert.deepEqual(fromSecrets, store.secret ? ["GREYFLEET_STORE_PASSWORD"] : []);
      const url = env.GREYFLEET_STORE ?? "";
      assert.ok(url.startsWith(store.scheme), `store URL ${url}`);
      assert.doesNotMatch(url, /@/, "no credentials in the URL");

      const configMapName = pod.volumes?.find((v) => v.name === "config")?.configMap?.name;
      const mount = container.volumeMounts?.find((m) => m.name === "config");
      assert.equal(mount?.mountPath, "/etc/greyfleet");
      const configMap = ofKind<IConfigMap>(objects, "v1", "ConfigMap").find((c) => c.metadata?.name === configMapName);
      const file = configMap?.data?.["greyfleet.yaml"];
      assert.ok(file, `ConfigMap ${configMapName} with greyfleet.yaml is rendered`);

      const config = loadConfig("serve", {
        argv: args.slice(1),
        env,
        readFile: (path) => {
          assert.equal(path, CONFIG_FILE);
          return file;
        },
      });
      assert.ok(!isConfigProblem(config), isConfigProblem(config) ? config.problems.join("; ") : "");
      assert.equal(config.grpcListen, `0.0.0.0:${GRPC_PORT}`);
      assert.equal(config.metricsListen, `0.0.0.0:${METRICS_PORT}`);
      assert.equal(config.store, url);
      assert.equal(config.storePassword, store.secret ? SAMPLE_PASSWORD : "");
      assert.ok(
        config.shutdownGraceMs / 1000 + PRE_STOP_SECONDS < (pod.terminationGracePeriodSeconds ?? 30),
        "SIGKILL comes after the preStop sleep and --shutdown-grace",
      );
      assert.deepEqual(container.lifecycle?.preStop?.exec?.command, ["sleep", String(PRE_STOP_SECONDS)]);
    });

    it("writes only where the store needs it", () => {
      const writable = (pod.volumes ?? []).filter((v) => !v.configMap).map((v) => v.name);
      if (target.store === "sqlite") {
        assert.deepEqual(writable.sort(), ["data", "tmp"]);
        const claim = pod.volumes?.find((v) => v.name === "data")?.persistentVolumeClaim?.claimName;
        const pvc = ofKind<IPersistentVolumeClaim>(objects, "v1", "PersistentVolumeClaim");
        assert.deepEqual(
          pvc.map((p) => p.metadata?.name),
          [claim],
        );
        const dataMount = container.volumeMounts?.find((m) => m.name === "data")?.mountPath;
        const url = container.env?.find((e) => e.name === "GREYFLEET_STORE")?.value ?? "";
        assert.ok(dataMount && url.startsWith(`sqlite:${dataMount}/`), "the sqlite file is on the volume");
      } else {
        assert.deepEqual(writable, [], "nothing writable on a Redis store");
      }
    });

    it("has a headless Service for client-side balancing and a ClusterIP Service with metrics", () => {
      const services = ofKind<IService>(objects, "v1", "Service");
      for (const service of services) assert.ok(matches(service.spec?.selector, labels), service.metadata?.name);
      const headless = services.filter((s) => s.spec?.clusterIP === "None");
      assert.equal(headless.length, 1);
      assert.deepEqual(
        headless[0]?.spec?.ports?.map((p) => [p.port, p.targetPort]),
        [[GRPC_PORT, "grpc"]],
      );
      const clusterIp = services.filter((s) => s.spec?.clusterIP !== "None");
      assert.equal(clusterIp.length, 1);
      assert.deepEqual(
        clusterIp[0]?.spec?.ports?.map((p) => [p.name, p.port, p.targetPort]),
        [
          ["grpc", GRPC_PORT, "grpc"],
          ["metrics", METRICS_PORT, "metrics"],
        ],
      );
      // Prometheus' job name is the Service's name: deploy/prometheus/ alerts match greyfleet-decision.
      assert.equal(clusterIp[0]?.metadata?.name, "greyfleet-decision");

      const monitor = only<KubeObject & { spec: { selector: { matchLabels?: Record<string, string> } } }>(
        objects,
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
      );
      const scraped = services.filter((s) => matches(monitor.spec.selector.matchLabels, s.metadata?.labels));
      assert.deepEqual(
        scraped.map((s) => s.metadata?.name),
        ["greyfleet-decision"],
        "the ServiceMonitor scrapes the ClusterIP Service only (no duplicate targets)",
      );
    });

    it("admits gRPC from shim pods and /metrics from monitoring only; lets out DNS and the store", () => {
      const policy = only<INetworkPolicy>(objects, "networking.k8s.io/v1", "NetworkPolicy");
      assert.ok(matches(policy.spec?.podSelector?.matchLabels, labels));
      assert.deepEqual(policy.spec?.policyTypes, ["Ingress", "Egress"]);
      const ingress = policy.spec?.ingress ?? [];
      assert.deepEqual(
        ingress.map((rule) => rule.ports?.map((p) => p.port)),
        [[GRPC_PORT], [METRICS_PORT]],
      );
      assert.deepEqual(ingress[0]?.from?.[0]?.podSelector?.matchLabels, { "greyfleet.io/decision-client": "true" });
      assert.deepEqual(ingress[1]?.from?.[0]?.namespaceSelector?.matchLabels, {
        "kubernetes.io/metadata.name": "monitoring",
      });
      const egress = policy.spec?.egress ?? [];
      const dns = egress.filter((rule) => rule.ports?.some((p) => p.port === 53));
      assert.equal(dns.length, 1);
      assert.deepEqual(dns[0]?.ports?.map((p) => `${p.protocol}/${p.port}`).sort(), ["TCP/53", "UDP/53"]);
      const rest = egress.filter((rule) => !dns.includes(rule));
      if (store.egress) {
        assert.equal(rest.length, 1);
        const labelsTo = rest[0]?.to?.[0]?.podSelector?.matchLabels ?? {};
        for (const [key, value] of Object.entries(store.egress.labels)) assert.equal(labelsTo[key], value);
        assert.deepEqual(
          rest[0]?.ports?.map((p) => p.port),
          store.egress.ports,
        );
      } else {
        assert.deepEqual(rest, [], "no store to reach");
      }
    });

    it("scales by CPU on Redis; one replica, Recreate and no autoscaler on SQLite", () => {
      const hpas = ofKind<IHorizontalPodAutoscaler>(objects, "autoscaling/v2", "HorizontalPodAutoscaler");
      const budget = only<KubeObject & { spec: { selector: { matchLabels: Record<string, string> } } }>(
        objects,
        "policy/v1",
        "PodDisruptionBudget",
      );
      assert.ok(matches(budget.spec.selector.matchLabels, labels));
      assert.ok(matches(deployment.spec?.selector.matchLabels, labels));
      if (target.store === "sqlite") {
        assert.deepEqual(hpas, []);
        assert.equal(deployment.spec?.replicas, 1);
        assert.equal(deployment.spec?.strategy?.type, "Recreate");
        assert.equal(deployment.spec?.strategy?.rollingUpdate, undefined);
        return;
      }
      assert.equal(hpas.length, 1);
      const hpa = hpas[0]?.spec;
      assert.equal(hpa?.scaleTargetRef.kind, "Deployment");
      assert.equal(hpa?.scaleTargetRef.name, deployment.metadata?.name);
      assert.ok((hpa?.minReplicas ?? 1) >= 2, "at least two pods");
      assert.deepEqual(
        hpa?.metrics?.map((m) => m.resource?.name),
        ["cpu"],
      );
      assert.equal(deployment.spec?.replicas, undefined, "the autoscaler owns the replica count");
    });
  });
}
