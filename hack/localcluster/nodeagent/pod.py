"""A pod's life on the node: volumes, init containers, containers with restart policy and
probes, status reports (their content is podstatus.py's), and graceful deletion. One thread per pod."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes.client.exceptions import ApiException

from hack.localcluster.nodeagent import images, kube, podspec, rootfs, security
from hack.localcluster.nodeagent.container import (
    FromImage,
    Instance,
    Mount,
    ProbeState,
    launch,
    rfc3339,
    run_probe,
    stop,
)
from hack.localcluster.nodeagent.kube import SMP
from hack.localcluster.nodeagent.podstatus import Track, container_id, pod_status, stamp_transitions

log = logging.getLogger("nodeagent")
TICK_S = 0.2
MAX_BACKOFF_S = 16.0
PULL_BACKOFF_S = (5.0, 60.0)  # first and longest wait between pulls of an image that failed


class PodWorker(threading.Thread):
    def __init__(self, agent, pod: dict):
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent = agent
        self.pod = pod
        self.uid = pod["metadata"]["uid"]
        self.ns, self.name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.wake = threading.Event()
        self.deleting: float | None = None
        self.gone = False
        self.dir = agent.state_dir / self.uid
        self.pod_ip = ""
        self.host_ip = "127.0.0.1"
        self.start_time = rfc3339()
        self.tracks = {c["name"]: Track(c, init=True) for c in pod["spec"].get("initContainers") or []}
        self.tracks.update({c["name"]: Track(c) for c in pod["spec"]["containers"]})
        self.mounts: dict[str, list[Mount]] = {}
        self.token_refresh: dict[str, float] = {}
        self.config_error = ""
        self.phase = "Pending"
        self.last_status: str | None = None
        self.env_cache: dict[str, dict] = {}

    # ---- events from the agent ----------------------------------------------------------------
    def update(self, pod: dict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and self.deleting is None:
            self.deleting = float(pod["metadata"].get("deletionGracePeriodSeconds", 30))
        self.wake.set()

    def removed(self) -> None:
        self.gone = True
        self.deleting = 0.0 if self.deleting is None else self.deleting
        self.wake.set()

    # ---- main loop ----------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.pod_ip = self.agent.alloc_ip(self.uid)
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "logs").mkdir(exist_ok=True)
            self.hosts_file = self.dir / "hosts"
            self.hosts_file.write_text(self.agent.hosts_for(self.pod, self.pod_ip))
            self.report()
            while not self._prepare():
                if self.deleting is not None:
                    break
                self.wake.wait(2)
                self.wake.clear()
            while self.deleting is None:
                self.step()
                self.report()
                self.wake.wait(TICK_S)
                self.wake.clear()
            self.terminate()
        except Exception:
            log.exception("pod %s/%s: agent error", self.ns, self.name)
            self._stop_all(0)
        finally:
            self.agent.release(self.uid)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _prepare(self) -> bool:
        """Fill every volume; False (and a waiting reason) while something it names is missing."""
        try:
            resolver = podspec.Resolver(self.agent.api, self.ns)
            vols = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
            folders = {}
            for name, vol in vols.items():
                if "hostPath" in vol:
                    folders[name] = Path(vol["hostPath"]["path"])
                    continue
                folders[name] = self.dir / "volumes" / name
                refresh = podspec.write_volume(
                    vol, folders[name], self.pod, resolver, self.pod_ip, self.host_ip, self._token
                )
                if refresh:
                    self.token_refresh[name] = refresh
                if self.agent.images is not None:
                    podspec.share_volume(vol, folders[name], self.pod["spec"].get("securityContext") or {})
            for t in self.tracks.values():
                mounts = []
                for vm in t.spec.get("volumeMounts") or []:
                    src = folders.get(vm["name"])
                    if src is None:
                        raise podspec.ConfigError(f"volume {vm['name']} is not defined")
                    workdir = Path(self.agent.workdir)
                    hides = workdir == Path(vm["mountPath"]) or Path(vm["mountPath"]) in workdir.parents
                    if hides and self.agent.images is None:
                        raise podspec.ConfigError(
                            f"volumeMount {vm['mountPath']} would hide {workdir}, the project folder this "
                            "node agent runs commands from; mount it elsewhere"
                        )
                    if vm.get("subPath"):
                        src = src / vm["subPath"]
                    mounts.append(Mount(src, vm["mountPath"], vm.get("readOnly", False)))
                self.mounts[t.spec["name"]] = mounts
                self.env_cache[t.spec["name"]] = podspec.container_env(
                    self.pod,
                    t.spec,
                    resolver,
                    self.pod_ip,
                    self.host_ip,
                    self._base_env(),
                    self.agent.allocatable,
                )
            self.config_error = ""
            return True
        except (podspec.ConfigError, ApiException) as exc:
            self.config_error = (
                str(exc) if isinstance(exc, podspec.ConfigError) else f"API error {exc.status}"
            )
            for t in self.tracks.values():
                t.waiting = ("CreateContainerConfigError", self.config_error)
            self.report()
            return False

    def _token(self, audience: str | None, expiration: int) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "spec": {
                "expirationSeconds": expiration,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid},
            }
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        r = self.agent.api.create_namespaced_service_account_token(sa, self.ns, body, _preload_content=False)
        return json.loads(r.data)["status"]["token"]

    def _base_env(self) -> dict[str, str]:
        spec = self.pod["spec"]
        return {**self.agent.base_env, "HOSTNAME": spec.get("hostname") or self.name}

    # ---- one tick ------------------------------------------------------------------------------
    def step(self) -> None:
        now = time.monotonic()
        for name, at in list(self.token_refresh.items()):
            if now >= at:
                vol = next(v for v in self.pod["spec"]["volumes"] if v["name"] == name)
                self.token_refresh[name] = (
                    podspec.write_volume(
                        vol,
                        self.dir / "volumes" / name,
                        self.pod,
                        podspec.Resolver(self.agent.api, self.ns),
                        self.pod_ip,
                        self.host_ip,
                        self._token,
                    )
                    or now + 3600
                )
        inits = [t for t in self.tracks.values() if t.init]
        mains = [t for t in self.tracks.values() if not t.init]
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for t in inits:
            if t.done:
                continue
            self._advance(t, "OnFailure" if policy == "Always" else policy, now)
            if t.done and t.last_state.get("terminated", {}).get("exitCode") != 0:
                self.phase = "Failed"
            return  # init containers run one at a time, in order
        if self.phase == "Failed":
            return
        for t in mains:
            self._advance(t, policy, now)
        if all(t.done for t in mains):
            codes = [t.last_state["terminated"]["exitCode"] for t in mains]
            self.phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"
        elif any(t.instance or t.restart_count for t in mains):
            self.phase = "Running"

    def _advance(self, t: Track, policy: str, now: float) -> None:
        inst = t.instance
        if inst is None:
            if not t.done and now >= t.next_start:
                self._start(t)
            elif t.pull_failures and t.waiting[0] == "ErrImagePull":
                t.waiting = ("ImagePullBackOff", f'Back-off pulling image "{t.spec.get("image", "")}"')
            return
        code = inst.proc.poll()
        if code is None:
            self._probe(t, inst, now)
            return
        inst.pump.join(timeout=2)  # flush the last lines into the log
        if code < 0:
            code = 128 - code  # killed by a signal, as shells and the kubelet report it
        reason = inst.reason or ("Completed" if code == 0 else "Error")
        message = self._start_error(t)
        if message:
            message = f'{message} (image "{t.spec.get("image", "")}")'
            reason, code = "StartError", 128  # as containerd reports a command it cannot exec
        t.last_state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                **({"message": message} if message else {}),
                "startedAt": rfc3339(inst.started_at),
                "finishedAt": rfc3339(),
                "containerID": self._cid(t),
            }
        }
        t.instance = None
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            delay = min(2.0**t.restart_count, MAX_BACKOFF_S)
            t.restart_count += 1
            t.next_start = now + delay
            t.waiting = (
                "CrashLoopBackOff",
                f"back-off {delay:.0f}s restarting failed container={t.spec['name']} pod={self.name}",
            )
        else:
            t.done = True

    def _start(self, t: Track) -> None:
        if self.agent.images is not None:
            self._start_from_image(t)
            return
        spec = t.spec
        env = self.env_cache[spec["name"]]
        if not spec.get("command"):
            t.waiting = (
                "CreateContainerError",
                "the local node agent runs commands from the project's "
                "environment and cannot use an image entrypoint: set command",
            )
            return
        argv = [podspec.expand(a, env) for a in spec["command"] + (spec.get("args") or [])]
        log_path = self.dir / "logs" / f"{spec['name']}-{t.restart_count}.log"
        proc, pump = launch(
            argv,
            env,
            spec.get("workingDir") or self.agent.workdir,
            self.mounts[spec["name"]],
            log_path,
            self.hosts_file,
            env["HOSTNAME"],
        )
        self._instance_started(t, proc, pump, log_path)

    def _start_from_image(self, t: Track) -> None:
        """Pull (as imagePullPolicy says), then run the container inside the image's root
        filesystem as the user its securityContext and image name."""
        spec, now = t.spec, time.monotonic()
        ref = spec.get("image") or ""
        t.waiting = ("ContainerCreating", f'pulling image "{ref}"')
        self.report()
        try:
            img = self.agent.images.get(ref, images.pull_policy(spec))
        except (images.PullError, images.NeverPullError) as exc:
            never = isinstance(exc, images.NeverPullError)
            t.pull_failures += 1
            delay = min(PULL_BACKOFF_S[0] * 2 ** (t.pull_failures - 1), PULL_BACKOFF_S[1])
            t.next_start = now + delay
            t.waiting = ("ErrImageNeverPull" if never else "ErrImagePull", str(exc))
            return
        t.pull_failures, t.image_id = 0, f"{ref.split('@')[0]}@{img.digest}"
        try:
            run_as = security.run_as(self.pod, spec, img.config, img.rootfs)
            argv = security.argv(spec, img.config)
        except (podspec.ConfigError, security.CreateError) as exc:
            reason = (
                "CreateContainerConfigError"
                if isinstance(exc, podspec.ConfigError)
                else "CreateContainerError"
            )
            t.waiting, t.next_start = (reason, str(exc)), now + PULL_BACKOFF_S[0]
            return
        env = {**security.image_env(img.config), **self.env_cache[spec["name"]]}
        argv = [podspec.expand(a, env) for a in argv]
        instance_dir = self.dir / "containers" / f"{spec['name']}-{t.restart_count}"
        shutil.rmtree(instance_dir, ignore_errors=True)
        cwd = security.workdir(spec, img.config)
        from_image = FromImage(
            rootfs=rootfs.Rootfs(img.rootfs, instance_dir, run_as.read_only_root, cwd),
            uid=run_as.uid,
            gid=run_as.gid,
            groups=run_as.groups,
            no_new_privs=run_as.no_new_privs,
            error_file=instance_dir / "start-error",
        )
        log_path = self.dir / "logs" / f"{spec['name']}-{t.restart_count}.log"
        proc, pump = launch(
            argv, env, cwd, self.mounts[spec["name"]], log_path, self.hosts_file, env["HOSTNAME"], from_image
        )
        self._instance_started(t, proc, pump, log_path)

    def _instance_started(self, t: Track, proc, pump, log_path: Path) -> None:
        spec = t.spec
        inst = Instance(spec["name"], proc, pump, time.time(), t.restart_count, log_path)
        now = time.monotonic()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if spec.get(kind):
                inst.probes[kind] = ProbeState(
                    spec[kind], next_at=now + spec[kind].get("initialDelaySeconds", 0)
                )
        inst.started = "startupProbe" not in inst.probes
        inst.ready = inst.started and "readinessProbe" not in inst.probes
        t.instance = inst

    def _start_error(self, t: Track) -> str:
        path = self.dir / "containers" / f"{t.spec['name']}-{t.restart_count}" / "start-error"
        try:
            return path.read_text().strip()
        except OSError:
            return ""

    def _probe(self, t: Track, inst: Instance, now: float) -> None:
        ports = {p["name"]: p["containerPort"] for p in t.spec.get("ports") or [] if p.get("name")}
        for kind, st in inst.probes.items():
            if now < st.next_at or (kind != "startupProbe" and not inst.started):
                continue
            if kind == "startupProbe" and inst.started:
                continue
            p = st.spec
            st.next_at = now + p.get("periodSeconds", 10)
            ok = run_probe(p, self.pod_ip, ports, inst.proc.pid, self.env_cache[t.spec["name"]])
            if ok:
                st.successes, st.failures = st.successes + 1, 0
            else:
                st.successes, st.failures = 0, st.failures + 1
            if kind == "readinessProbe":
                if ok and st.successes >= p.get("successThreshold", 1):
                    inst.ready = True
                elif not ok and st.failures >= p.get("failureThreshold", 3):
                    inst.ready = False
            elif ok and kind == "startupProbe":
                inst.started = True
                inst.ready = "readinessProbe" not in inst.probes
            elif not ok and st.failures >= p.get("failureThreshold", 3):
                log.info(
                    "pod %s/%s container %s failed its %s; restarting",
                    self.ns,
                    self.name,
                    t.spec["name"],
                    kind,
                )
                inst.reason = "Error"
                grace = p.get("terminationGracePeriodSeconds") or self.pod["spec"].get(
                    "terminationGracePeriodSeconds", 30
                )
                threading.Thread(target=stop, args=(inst.proc, grace), daemon=True).start()
                inst.probes = {}

    # ---- deletion --------------------------------------------------------------------------------
    def _stop_all(self, grace: float) -> None:
        running = [t.instance for t in self.tracks.values() if t.instance]
        if running:
            with ThreadPoolExecutor(len(running)) as pool:
                list(pool.map(lambda i: stop(i.proc, grace), running))

    def terminate(self) -> None:
        """SIGTERM, grace period, SIGKILL; report the terminal status; then remove the pod."""
        self._stop_all(self.deleting or 0)
        policy = "Never"
        for t in self.tracks.values():
            if t.instance:
                self._advance(t, policy, time.monotonic())
            elif not t.last_state:  # never started (image not pulled, config error): as the kubelet says
                t.last_state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was deleted",
                        "startedAt": None,
                        "finishedAt": rfc3339(),
                        "containerID": self._cid(t),
                    }
                }
            t.done = True
        mains = [t for t in self.tracks.values() if not t.init]
        if self.phase not in ("Succeeded", "Failed"):
            codes = [t.last_state.get("terminated", {}).get("exitCode", 137) for t in mains]
            self.phase = "Succeeded" if codes and all(c == 0 for c in codes) else "Failed"
        if self.gone:
            return
        self.report()
        kube.force_delete_pod(self.agent.api, self.ns, self.name, self.uid)

    # ---- status ------------------------------------------------------------------------------
    def _cid(self, t: Track) -> str:
        return container_id(self.uid, t)

    def status(self) -> dict:
        return pod_status(
            pod_uid=self.uid,
            phase=self.phase,
            host_ip=self.host_ip,
            pod_ip=self.pod_ip,
            start_time=self.start_time,
            tracks=self.tracks.values(),
        )

    def report(self) -> None:
        """Patch pods/status when what we would report changed (transition times stay put)."""
        st = self.status()
        key = json.dumps(st, sort_keys=True)
        if key == self.last_status:
            return
        stamp_transitions(st["conditions"], self.pod.get("status") or {}, rfc3339())
        try:
            r = self.agent.api.patch_namespaced_pod_status(
                self.name, self.ns, {"status": st}, _content_type=SMP, _preload_content=False
            )
            self.pod = {**self.pod, "status": json.loads(r.data)["status"]}
            self.last_status = key
        except ApiException as exc:
            if exc.status == 404:
                self.removed()
            else:
                log.warning("pod %s/%s: status patch failed: %s %s", self.ns, self.name, exc.status, exc.body)

    def log_file(self, container: str, previous: bool) -> Path | None:
        t = self.tracks.get(container)
        if t is None:
            return None
        n = t.restart_count - 1 if previous else t.restart_count
        if not previous and t.instance is None and not (self.dir / "logs" / f"{container}-{n}.log").exists():
            n -= 1  # between restarts: the newest finished instance
        path = self.dir / "logs" / f"{container}-{n}.log"
        return path if n >= 0 and path.exists() else None

    def running(self, container: str) -> bool:
        t = self.tracks.get(container)
        return bool(t and t.instance and t.instance.proc.poll() is None)
