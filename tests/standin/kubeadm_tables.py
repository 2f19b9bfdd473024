"""kubeadm's command line and configuration API per minor (1.33-1.38), as data for the stand-in kubeadm.

Read, not copied, from kubernetes/kubernetes (cmd/kubeadm/...) and the reference pages kubeadm
generates for kubernetes/website (content/en/docs/reference/setup-tools/kubeadm/generated/). The
search index holds file *versions* at the commits that changed them, not checkouts at tags, so each
difference below names the file and the revision or pull request it was read from, and the minor it
belongs to is the one that pull request's milestone / release note names.

Base (1.31, kept from the previous table): cmd/kubeadm/app/cmd/{kubeadm,init,join,reset,token,
upgrade/*,config,certs,kubeconfig,version}.go, cmd/kubeadm/app/cmd/phases/{init,join,reset,upgrade}/*.go,
cmd/kubeadm/app/cmd/options/constant.go, cmd/kubeadm/app/cmd/util/cmdutil.go (ValidateMixedArguments),
cmd/kubeadm/app/apis/kubeadm/v1beta3|v1beta4/types.go.

Per minor (MINOR_NOTES below says the same next to each change):
- 1.33: join has the experimental top-level phases control-plane-join-etcd and kubelet-wait-bootstrap
  (CHANGELOG-1.31, PR #125582) and wait-control-plane; `upgrade apply` and `upgrade node` have phases
  incl. post-upgrade (website generated/kubeadm_upgrade/*, 2 to 5 revisions); init's wait-control-plane
  is Hidden (phases/init/waitcontrolplane.go, revision with "TODO: unhide this phase once
  WaitForAllControlPlaneComponents goes GA").
- 1.34: WaitForAllControlPlaneComponents GA (PR #132594, milestone v1.34): init's wait-control-plane is
  a visible phase and takes no flag but the global ones (generated/kubeadm_init/kubeadm_init_phase_
  wait-control-plane.md, website commit 02f1b512); NodeLocalCRISocket beta (PR #131981).
- 1.35: ControlPlaneKubeletLocalMode GA (PR #134106): join's control-plane-join/etcd is hidden and
  replaced by the top-level etcd-join; kubelet-wait-bootstrap and wait-control-plane no longer
  experimental (generated/kubeadm_join/_index.md, website commit 20067f19); the feature gate
  WaitForAllControlPlaneComponents is removed (PR #134781).
- 1.36: NodeLocalCRISocket GA (PR #135742); control-plane-join keeps only all and mark-control-plane
  (phases/join/controlplanejoin.go, index revision 92597886).
- 1.37: kubeadm.k8s.io/v1beta3 removed with the PublicKeysECDSA gate (PR #136016, merged for 1.37:
  kubernetes/kubeadm PR #3311 held for it until 2026-06-01); its error names kubeadm v1.36 as the last
  to read it.
- 1.38: not released when this was read (CHANGELOG-1.38.md stops at v1.38.0-alpha.2): the newest
  master revisions found (as 1.37) stand for it.

Flags map a name to True when the flag takes a value, False for a boolean switch.
Schemas: "str", "int", "bool", "any" (not checked further), ["list", item], {"map": item}, or a
dict of field -> schema (an object decoded strictly: an unknown field is an error).
"""

from __future__ import annotations

from dataclasses import dataclass

MINORS = (33, 34, 35, 36, 37, 38)

GLOBAL_FLAGS = {
    "add-dir-header": False,
    "help": False,
    "log-file": True,
    "log-file-max-size": True,
    "one-output": False,
    "rootfs": True,
    "skip-headers": False,
    "skip-log-headers": False,
    "v": True,
}
SHORTHANDS = {"h": "help", "v": "v"}

# Flags that may be given together with --config (cmdutil.isAllowedFlag); "skip-*" flags are allowed too.
ALLOWED_WITH_CONFIG = {
    "config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name", "kubeconfig-dir", "upload-certs",
    "print-join-command", "rootfs", "v", "log-file",
}

_CONFIG = {
    "config", "ignore-preflight-errors", "dry-run", "kubeconfig", "node-name", "kubeconfig-dir", "upload-certs",
    "print-join-command", "rootfs", "v", "log-file",
}

_CONFIG = {"config": True}
_DRY = {"dry-run": False}
_KUBECONFIG = {"kubeconfig": True}
_CERT_FLAGS = {"cert-dir": True, "config": True, "csr-dir": True, "csr-only": False, "kubernetes-version": True, "dry-run": False}
_APISERVER_CERT = {"apiserver-advertise-address": True, "apiserver-cert-extra-sans": True, "control-plane-endpoint": True,
                   "service-cidr": True, "service-dns-domain": True}
_KUBECONFIG_FLAGS = {"apiserver-advertise-address": True, "apiserver-bind-port": True, "cert-dir": True, "config": True,
                     "control-plane-endpoint": True, "kubeconfig-dir": True, "kubernetes-version": True, "dry-run": False}
_CONTROL_PLANE = {"cert-dir": True, "config": True, "kubernetes-version": True, "image-repository": True, "patches": True, "dry-run": False}
_APISERVER = {"apiserver-advertise-address": True, "apiserver-bind-port": True, "control-plane-endpoint": True,
              "service-cidr": True, "feature-gates": True}
_COREDNS = {"config": True, "kubeconfig": True, "kubernetes-version": True, "image-repository": True, "service-dns-domain": True,
            "service-cidr": True, "feature-gates": True, "dry-run": False}
_KUBE_PROXY = {"config": True, "kubeconfig": True, "kubernetes-version": True, "image-repository": True,
               "apiserver-advertise-address": True, "apiserver-bind-port": True, "control-plane-endpoint": True,
               "pod-network-cidr": True, "feature-gates": True, "dry-run": False}
_JOIN_CP = {"config": True, "control-plane": False, "dry-run": False}


def _cmd(flags=None, args=0, **subcommands):
    """One command: its local flags, how many positional arguments it takes, its sub-commands."""
    return {"flags": dict(flags or {}), "args": args, "commands": subcommands}


def _certs_phase(extra=None):
    return _cmd({**_CERT_FLAGS, **(extra or {})})


INIT_PHASES = {
    "preflight": _cmd({"config": True, "cri-socket": True, "ignore-preflight-errors": True, "image-repository": True, "dry-run": False}),
    "certs": _cmd(
        None,
        **{
            "all": _certs_phase(_APISERVER_CERT),
            "ca": _certs_phase(),
            "apiserver": _certs_phase(_APISERVER_CERT),
            "apiserver-kubelet-client": _certs_phase(),
            "front-proxy-ca": _certs_phase(),
            "front-proxy-client": _certs_phase(),
            "etcd-ca": _certs_phase(),
            "etcd-server": _certs_phase(),
            "etcd-peer": _certs_phase(),
            "etcd-healthcheck-client": _certs_phase(),
            "apiserver-etcd-client": _certs_phase(),
            "sa": _cmd({"cert-dir": True, "dry-run": False}),
        },
    ),
    "kubeconfig": _cmd(
        None,
        **{
            "all": _cmd({**_KUBECONFIG_FLAGS, "node-name": True}),
            "admin": _cmd(_KUBECONFIG_FLAGS),
            "super-admin": _cmd(_KUBECONFIG_FLAGS),
            "kubelet": _cmd({**_KUBECONFIG_FLAGS, "node-name": True}),
            "controller-manager": _cmd(_KUBECONFIG_FLAGS),
            "scheduler": _cmd(_KUBECONFIG_FLAGS),
        },
    ),
    "etcd": _cmd(None, local=_cmd({"cert-dir": True, "config": True, "image-repository": True, "patches": True, "dry-run": False})),
    "control-plane": _cmd(
        None,
        **{
            "all": _cmd({**_CONTROL_PLANE, **_APISERVER, "pod-network-cidr": True}),
            "apiserver": _cmd({**_CONTROL_PLANE, **_APISERVER}),
            "controller-manager": _cmd({**_CONTROL_PLANE, "pod-network-cidr": True}),
            "scheduler": _cmd(_CONTROL_PLANE),
        },
    ),
    "kubelet-start": _cmd({"config": True, "cri-socket": True, "node-name": True, "patches": True, "dry-run": False}),
    # wait-control-plane: Hidden in init's workflow, so it has no command.
    "upload-config": _cmd(None, **{name: _cmd({**_CONFIG, **_KUBECONFIG, **_DRY}) for name in ("all", "kubeadm", "kubelet")}),
    "upload-certs": _cmd({"config": True, "kubeconfig": True, "upload-certs": False, "certificate-key": True,
                          "skip-certificate-key-print": False, "dry-run": False}),
    "mark-control-plane": _cmd({"config": True, "node-name": True, "dry-run": False}),
    "bootstrap-token": _cmd({"config": True, "kubeconfig": True, "skip-token-print": False, "dry-run": False}),
    "kubelet-finalize": _cmd(
        None,
        **{name: _cmd({"config": True, "cert-dir": True, "dry-run": False}) for name in ("all", "enable-client-cert-rotation", "experimental-cert-rotation")},
    ),
    "addon": _cmd(None, **{"all": _cmd({**_COREDNS, **_KUBE_PROXY}), "coredns": _cmd(_COREDNS), "kube-proxy": _cmd(_KUBE_PROXY)}),
    "show-join-command": _cmd({"config": True, "kubeconfig": True, "skip-token-print": False, "skip-certificate-key-print": False, "dry-run": False}),
}

_JOIN_DISCOVERY = {"discovery-file": True, "discovery-token": True, "discovery-token-ca-cert-hash": True,
                   "discovery-token-unsafe-skip-ca-verification": False, "tls-bootstrap-token": True, "token": True}
JOIN_PHASES = {
    "preflight": _cmd({"apiserver-advertise-address": True, "apiserver-bind-port": True, "certificate-key": True, "config": True,
                       "control-plane": False, "cri-socket": True, "ignore-preflight-errors": True, "node-name": True,
                       "dry-run": False, **_JOIN_DISCOVERY}, args=1),
    "control-plane-prepare": _cmd(
        None,
        **{
            "all": _cmd({"apiserver-advertise-address": True, "apiserver-bind-port": True, "certificate-key": True, "config": True,
                         "control-plane": False, "node-name": True, "patches": True, "dry-run": False, **_JOIN_DISCOVERY}, args=1),
            "download-certs": _cmd({"certificate-key": True, "config": True, "control-plane": False, "dry-run": False, **_JOIN_DISCOVERY}),
            "certs": _cmd({"apiserver-advertise-address": True, "config": True, "control-plane": False, "node-name": True,
                           "dry-run": False, **_JOIN_DISCOVERY}),
            "kubeconfig": _cmd({"certificate-key": True, "config": True, "control-plane": False, "dry-run": False, **_JOIN_DISCOVERY}),
            "control-plane": _cmd({"apiserver-advertise-address": True, "apiserver-bind-port": True, "config": True,
                                   "control-plane": False, "patches": True, "dry-run": False}),
        },
    ),
    "kubelet-start": _cmd({"config": True, "cri-socket": True, "node-name": True, "patches": True, "dry-run": False, **_JOIN_DISCOVERY}, args=1),
    "control-plane-join": _cmd(
        None,
        **{
            "all": _cmd({**_JOIN_CP, "apiserver-advertise-address": True, "node-name": True, "patches": True}),
            "etcd": _cmd({**_JOIN_CP, "apiserver-advertise-address": True, "node-name": True, "patches": True}),
            "mark-control-plane": _cmd({**_JOIN_CP, "node-name": True}),
        },
    ),
    "kubelet-wait-bootstrap": _cmd({"config": True, "dry-run": False}),
    "wait-control-plane": _cmd({"config": True, "dry-run": False}),
}

_UPGRADE_COMMON = {"config": True, "dry-run": False, "etcd-upgrade": False, "certificate-renewal": False,
                   "ignore-preflight-errors": True, "kubeconfig": True, "patches": True}
UPGRADE_NODE_PHASES = {
    "preflight": _cmd({"config": True, "ignore-preflight-errors": True, "dry-run": False}),
    "control-plane": _cmd({"certificate-renewal": False, "config": True, "dry-run": False, "etcd-upgrade": False, "kubeconfig": True, "patches": True}),
    "kubelet-config": _cmd({"config": True, "dry-run": False, "kubeconfig": True, "patches": True}),
    "addon": _cmd(None, **{name: _cmd({"config": True, "dry-run": False, "kubeconfig": True}) for name in ("all", "coredns", "kube-proxy")}),
}

_OUTPUT = {"output": True, "allow-missing-template-keys": False, "show-managed-fields": False}
_RENEW = {"cert-dir": True, "config": True, "kubeconfig": True}



def _init_phases(minor: int) -> dict:
    phases = dict(INIT_PHASES)
    if minor >= 34:
        # Visible once WaitForAllControlPlaneComponents went GA; no InheritFlags, so not even --config.
        phases = _insert_after(phases, "kubelet-start", "wait-control-plane", _cmd(None))
    # kubelet-finalize's deprecated experimental-cert-rotation alias is gone by 1.33.
    phases["kubelet-finalize"] = _cmd(
        None, **{name: _cmd({"config": True, "cert-dir": True, "dry-run": False}) for name in ("all", "enable-client-cert-rotation")}
    )
    return phases


def _insert_after(phases: dict, after: str, name: str, value: dict) -> dict:
    out = {}
    for key, item in phases.items():
        out[key] = item
        if key == after:
            out[name] = value
    return out


def _join_phases(minor: int) -> dict:
    etcd_flags = {**_JOIN_CP, "apiserver-advertise-address": True, "node-name": True, "patches": True}
    control_plane_join = {"all": _cmd({**_JOIN_CP, "apiserver-advertise-address": True, "node-name": True, "patches": True})}
    if minor <= 34:
        control_plane_join["etcd"] = _cmd(etcd_flags)
    # 1.35 hides control-plane-join/etcd (no command); 1.36 removes it.
    control_plane_join["mark-control-plane"] = _cmd({**_JOIN_CP, "node-name": True})
    phases = {
        "preflight": JOIN_PHASES["preflight"],
        "control-plane-prepare": JOIN_PHASES["control-plane-prepare"],
        "kubelet-start": JOIN_PHASES["kubelet-start"],
        # control-plane-join-etcd (1.31-1.34, experimental) was renamed etcd-join when ControlPlaneKubeletLocalMode went GA.
        ("control-plane-join-etcd" if minor <= 34 else "etcd-join"): _cmd(etcd_flags),
        "kubelet-wait-bootstrap": _cmd({"config": True, "dry-run": False}),
        "control-plane-join": _cmd(None, **control_plane_join),
        "wait-control-plane": _cmd({"config": True, "dry-run": False}),
    }
    return phases


_UPGRADE_APPLY_PHASES = {
    "preflight": _cmd({"allow-experimental-upgrades": False, "allow-release-candidate-upgrades": False, "config": True, "dry-run": False,
                       "force": False, "ignore-preflight-errors": True, "kubeconfig": True, "yes": False}, args=1),
    "control-plane": _cmd({"certificate-renewal": False, "config": True, "dry-run": False, "etcd-upgrade": False, "kubeconfig": True, "patches": True}),
    "upload-config": _cmd(None, **{name: _cmd({"config": True, "dry-run": False, "kubeconfig": True}) for name in ("all", "kubeadm", "kubelet")}),
    "kubelet-config": _cmd({"config": True, "dry-run": False, "kubeconfig": True, "patches": True}),
    "bootstrap-token": _cmd({"config": True, "dry-run": False, "kubeconfig": True}),
    "addon": _cmd(None, **{name: _cmd({"config": True, "dry-run": False, "kubeconfig": True}) for name in ("all", "coredns", "kube-proxy")}),
    "post-upgrade": _cmd({"config": True, "dry-run": False, "kubeconfig": True}),
}


def _upgrade_node_phases() -> dict:
    return {**UPGRADE_NODE_PHASES, "post-upgrade": _cmd({"config": True, "dry-run": False, "kubeconfig": True})}


def tree(minor: int) -> dict:
    """The command tree of kubeadm 1.<minor> (hidden phases have no command)."""
    return _cmd(
        None,
        init=_cmd(
            {
                "apiserver-advertise-address": True, "apiserver-bind-port": True, "apiserver-cert-extra-sans": True, "cert-dir": True,
                "certificate-key": True, "config": True, "control-plane-endpoint": True, "cri-socket": True, "dry-run": False,
                "feature-gates": True, "ignore-preflight-errors": True, "image-repository": True, "kubernetes-version": True,
                "node-name": True, "patches": True, "pod-network-cidr": True, "service-cidr": True, "service-dns-domain": True,
                "skip-certificate-key-print": False, "skip-phases": True, "skip-token-print": False, "token": True, "token-ttl": True,
                "upload-certs": False,
            },
            phase=_cmd(None, **_init_phases(minor)),
        ),
        join=_cmd(
            {
                "apiserver-advertise-address": True, "apiserver-bind-port": True, "certificate-key": True, "config": True,
                "control-plane": False, "cri-socket": True, "dry-run": False, "ignore-preflight-errors": True, "node-name": True,
                "patches": True, "skip-phases": True, **_JOIN_DISCOVERY,
            },
            args=1,
            phase=_cmd(None, **_join_phases(minor)),
        ),
        reset=_cmd(
            {"cert-dir": True, "cleanup-tmp-dir": False, "config": True, "cri-socket": True, "dry-run": False, "force": False,
             "ignore-preflight-errors": True, "kubeconfig": True, "skip-phases": True},
            phase=_cmd(
                None,
                preflight=_cmd({"dry-run": False, "force": False, "ignore-preflight-errors": True}),
                **{
                    "remove-etcd-member": _cmd({"dry-run": False, "kubeconfig": True}),
                    "cleanup-node": _cmd({"cert-dir": True, "cleanup-tmp-dir": False, "cri-socket": True, "dry-run": False}),
                },
            ),
        ),
        upgrade=_cmd(
            None,
            apply=_cmd({**_UPGRADE_COMMON, "allow-experimental-upgrades": False, "allow-release-candidate-upgrades": False,
                        "force": False, "print-config": False, "yes": False, "skip-phases": True}, args=1,
                       phase=_cmd(None, **_UPGRADE_APPLY_PHASES)),
            plan=_cmd({"allow-experimental-upgrades": False, "allow-release-candidate-upgrades": False, "config": True,
                       "ignore-preflight-errors": True, "kubeconfig": True, "print-config": False, **_OUTPUT}, args=1),
            node=_cmd({**_UPGRADE_COMMON, "skip-phases": True}, phase=_cmd(None, **_upgrade_node_phases())),
            diff=_cmd({"api-server-manifest": True, "config": True, "context-lines": True, "controller-manager-manifest": True,
                       "kubeconfig": True, "scheduler-manifest": True}, args=1),
        ),
        config=_cmd(
            {"kubeconfig": True},
            images=_cmd(
                None,
                list=_cmd({"config": True, "feature-gates": True, "image-repository": True, "kubernetes-version": True, **_OUTPUT}),
                pull=_cmd({"config": True, "cri-socket": True, "feature-gates": True, "image-repository": True, "kubernetes-version": True}),
            ),
            migrate=_cmd({"allow-experimental-api": False, "new-config": True, "old-config": True}),
            print=_cmd(
                None,
                **{
                    "init-defaults": _cmd({"component-configs": True}),
                    "join-defaults": _cmd(None),
                    "reset-defaults": _cmd(None),
                    "upgrade-defaults": _cmd(None),
                },
            ),
            validate=_cmd({"allow-experimental-api": False, "config": True}),
        ),
        token=_cmd(
            {"dry-run": False, "kubeconfig": True},
            create=_cmd({"certificate-key": True, "config": True, "description": True, "groups": True, "print-join-command": False,
                         "ttl": True, "usages": True}, args=1),
            delete=_cmd(None, args=-1),
            generate=_cmd(None),
            list=_cmd(_OUTPUT),
        ),
        certs=_cmd(
            None,
            **{
                "certificate-key": _cmd(None),
                "check-expiration": _cmd({"cert-dir": True, "config": True, "kubeconfig": True, **_OUTPUT}),
                "generate-csr": _cmd({"cert-dir": True, "config": True, "kubeconfig-dir": True}),
                "renew": _cmd(
                    None,
                    **{
                        name: _cmd(_RENEW)
                        for name in ("all", "admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
                                     "controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server",
                                     "front-proxy-client", "scheduler.conf", "super-admin.conf")
                    },
                ),
            },
        ),
        kubeconfig=_cmd(None, user=_cmd({"client-name": True, "config": True, "org": True, "token": True, "validity-period": True})),
        version=_cmd({"output": True}),
        completion=_cmd(None, args=1),
    )


# Shorthands local to a command path.
LOCAL_SHORTHANDS = {
    ("upgrade", "apply"): {"f": "force", "y": "yes"},
    ("upgrade", "apply", "phase", "preflight"): {"f": "force", "y": "yes"},
    ("reset",): {"f": "force"},
    ("reset", "phase", "preflight"): {"f": "force"},
    ("upgrade", "diff"): {"c": "context-lines"},
    ("version",): {"o": "output"},
    ("config", "images", "list"): {"o": "output"},
    ("upgrade", "plan"): {"o": "output"},
    ("token", "list"): {"o": "output"},
    ("certs", "check-expiration"): {"o": "output"},
}


# ---- configuration API ----------------------------------------------------------------------------

_HOST_PATH_MOUNT = {"name": "str", "hostPath": "str", "mountPath": "str", "readOnly": "bool", "pathType": "str"}
_TAINT = {"key": "str", "value": "str", "effect": "str", "timeAdded": "str"}
_BOOTSTRAP_TOKEN = {"token": "str", "description": "str", "ttl": "str", "expires": "str", "usages": ["list", "str"], "groups": ["list", "str"]}
_API_ENDPOINT = {"advertiseAddress": "str", "bindPort": "int"}
_PATCHES = {"directory": "str"}
_ARGS_V1BETA4 = ["list", {"name": "str", "value": "str"}]
_ENV = ["list", {"name": "str", "value": "str", "valueFrom": "any"}]


def _node_registration(beta4: bool) -> dict:
    fields = {
        "name": "str",
        "criSocket": "str",
        "taints": ["list", _TAINT],
        "kubeletExtraArgs": _ARGS_V1BETA4 if beta4 else {"map": "str"},
        "ignorePreflightErrors": ["list", "str"],
        "imagePullPolicy": "str",
    }
    if beta4:
        fields["imagePullSerial"] = "bool"
    return fields


def _component(beta4: bool) -> dict:
    fields = {"extraArgs": _ARGS_V1BETA4 if beta4 else {"map": "str"}, "extraVolumes": ["list", _HOST_PATH_MOUNT]}
    if beta4:
        fields["extraEnvs"] = _ENV
    return fields


_TIMEOUTS = {
    "controlPlaneComponentHealthCheck": "str",
    "kubeletHealthCheck": "str",
    "kubernetesAPICall": "str",
    "etcdAPICall": "str",
    "tlsBootstrap": "str",
    "discovery": "str",
    "upgradeManifests": "str",
}


def _kinds(beta4: bool) -> dict:
    component = _component(beta4)
    api_server = {**component, "certSANs": ["list", "str"]}
    if not beta4:
        api_server["timeoutForControlPlane"] = "str"
    etcd_local = {"imageRepository": "str", "imageTag": "str", "dataDir": "str", "extraArgs": component["extraArgs"],
                  "serverCertSANs": ["list", "str"], "peerCertSANs": ["list", "str"]}
    if beta4:
        etcd_local["extraEnvs"] = _ENV
    cluster = {
        "etcd": {"local": etcd_local, "external": {"endpoints": ["list", "str"], "caFile": "str", "certFile": "str", "keyFile": "str"}},
        "networking": {"serviceSubnet": "str", "podSubnet": "str", "dnsDomain": "str"},
        "kubernetesVersion": "str",
        "controlPlaneEndpoint": "str",
        "apiServer": api_server,
        "controllerManager": component,
        "scheduler": component,
        "dns": {"imageRepository": "str", "imageTag": "str", **({"disabled": "bool"} if beta4 else {})},
        "certificatesDir": "str",
        "imageRepository": "str",
        "featureGates": {"map": "bool"},
        "clusterName": "str",
    }
    if beta4:
        cluster.update({"proxy": {"disabled": "bool"}, "encryptionAlgorithm": "str",
                        "certificateValidityPeriod": "str", "caCertificateValidityPeriod": "str"})
    init = {
        "bootstrapTokens": ["list", _BOOTSTRAP_TOKEN],
        "nodeRegistration": _node_registration(beta4),
        "localAPIEndpoint": _API_ENDPOINT,
        "certificateKey": "str",
        "skipPhases": ["list", "str"],
        "patches": _PATCHES,
    }
    discovery = {
        "bootstrapToken": {"token": "str", "apiServerEndpoint": "str", "caCertHashes": ["list", "str"], "unsafeSkipCAVerification": "bool"},
        "file": {"kubeConfigPath": "str"},
        "tlsBootstrapToken": "str",
    }
    if not beta4:
        discovery["timeout"] = "str"
    join = {
        "nodeRegistration": _node_registration(beta4),
        "caCertPath": "str",
        "discovery": discovery,
        "controlPlane": {"localAPIEndpoint": _API_ENDPOINT, "certificateKey": "str"},
        "skipPhases": ["list", "str"],
        "patches": _PATCHES,
    }
    kinds = {"InitConfiguration": init, "ClusterConfiguration": cluster, "JoinConfiguration": join}
    if beta4:
        init.update({"dryRun": "bool", "timeouts": _TIMEOUTS})
        join.update({"dryRun": "bool", "timeouts": _TIMEOUTS})
        kinds["ResetConfiguration"] = {
            "cleanupTmpDir": "bool", "certificatesDir": "str", "criSocket": "str", "dryRun": "bool", "force": "bool",
            "ignorePreflightErrors": ["list", "str"], "skipPhases": ["list", "str"], "unmountFlags": ["list", "str"], "timeouts": _TIMEOUTS,
        }
        pull = {"imagePullPolicy": "str", "imagePullSerial": "bool"}
        kinds["UpgradeConfiguration"] = {
            "apply": {"kubernetesVersion": "str", "allowExperimentalUpgrades": "bool", "allowRCUpgrades": "bool", "certificateRenewal": "bool",
                      "dryRun": "bool", "etcdUpgrade": "bool", "forceUpgrade": "bool", "ignorePreflightErrors": ["list", "str"],
                      "patches": _PATCHES, "printConfig": "bool", "skipPhases": ["list", "str"], **pull},
            "diff": {"kubernetesVersion": "str", "contextLines": "int"},
            "node": {"certificateRenewal": "bool", "dryRun": "bool", "etcdUpgrade": "bool", "ignorePreflightErrors": ["list", "str"],
                     "skipPhases": ["list", "str"], "patches": _PATCHES, **pull},
            "plan": {"kubernetesVersion": "str", "allowExperimentalUpgrades": "bool", "allowRCUpgrades": "bool", "dryRun": "bool",
                     "ignorePreflightErrors": ["list", "str"], "printConfig": "bool"},
            "timeouts": _TIMEOUTS,
        }
    return kinds


# kubelet.config.k8s.io/v1beta1 KubeletConfiguration, top-level fields (nested values are not checked).
KUBELET_FIELDS = (
    "enableServer staticPodPath podLogsDir syncFrequency fileCheckFrequency httpCheckFrequency staticPodURL staticPodURLHeader "
    "address port readOnlyPort tlsCertFile tlsPrivateKeyFile tlsCipherSuites tlsMinVersion rotateCertificates serverTLSBootstrap "
    "authentication authorization registryPullQPS registryBurst eventRecordQPS eventBurst enableDebuggingHandlers "
    "enableContentionProfiling healthzPort healthzBindAddress oomScoreAdj clusterDomain clusterDNS streamingConnectionIdleTimeout "
    "nodeStatusUpdateFrequency nodeStatusReportFrequency nodeLeaseDurationSeconds imageMinimumGCAge imageMaximumGCAge "
    "imageGCHighThresholdPercent imageGCLowThresholdPercent volumeStatsAggPeriod kubeletCgroups systemCgroups cgroupRoot "
    "cgroupsPerQOS cgroupDriver cpuManagerPolicy cpuManagerPolicyOptions cpuManagerReconcilePeriod memoryManagerPolicy "
    "topologyManagerPolicy topologyManagerScope topologyManagerPolicyOptions qosReserved runtimeRequestTimeout hairpinMode maxPods "
    "podCIDR podPidsLimit resolvConf runOnce cpuCFSQuota cpuCFSQuotaPeriod nodeStatusMaxImages maxOpenFiles contentType kubeAPIQPS "
    "kubeAPIBurst serializeImagePulls maxParallelImagePulls evictionHard evictionSoft evictionSoftGracePeriod "
    "evictionPressureTransitionPeriod evictionMaxPodGracePeriod evictionMinimumReclaim podsPerCore enableControllerAttachDetach "
    "protectKernelDefaults makeIPTablesUtilChains iptablesMasqueradeBit iptablesDropBit featureGates failSwapOn memorySwap "
    "containerLogMaxSize containerLogMaxFiles containerLogMaxWorkers containerLogMonitorInterval "
    "configMapAndSecretChangeDetectionStrategy systemReserved kubeReserved reservedSystemCPUs showHiddenMetricsForVersion "
    "systemReservedCgroup kubeReservedCgroup enforceNodeAllocatable allowedUnsafeSysctls volumePluginDir providerID "
    "kernelMemcgNotification logging enableSystemLogHandler enableSystemLogQuery shutdownGracePeriod "
    "shutdownGracePeriodCriticalPods shutdownGracePeriodByPodPriority reservedMemory enableProfilingHandler enableDebugFlagsHandler "
    "seccompDefault memoryThrottlingFactor registerWithTaints registerNode tracing localStorageCapacityIsolation "
    "containerRuntimeEndpoint imageServiceEndpoint failCgroupV1"
).split()

# kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration, top-level fields.
KUBE_PROXY_FIELDS = (
    "featureGates clientConnection hostnameOverride bindAddress healthzBindAddress metricsBindAddress bindAddressHardFail "
    "enableProfiling showHiddenMetricsForVersion mode iptables ipvs nftables winkernel detectLocalMode detectLocal clusterCIDR "
    "nodePortAddresses oomScoreAdj conntrack configSyncPeriod portRange logging"
).split()



def api_kinds(minor: int) -> dict:
    """The kinds registered per apiVersion in kubeadm 1.<minor>'s scheme."""
    kinds = {
        "kubeadm.k8s.io/v1beta4": _kinds(beta4=True),
        "kubelet.config.k8s.io/v1beta1": {"KubeletConfiguration": {name: "any" for name in KUBELET_FIELDS}},
        "kubeproxy.config.k8s.io/v1alpha1": {"KubeProxyConfiguration": {name: "any" for name in KUBE_PROXY_FIELDS}},
    }
    if minor <= 36:
        kinds["kubeadm.k8s.io/v1beta3"] = _kinds(beta4=False)
    return kinds


def old_api_versions(minor: int) -> dict[str, str]:
    """apiVersions this kubeadm names as too old, with the last kubeadm that reads them (util/config/common.go)."""
    old = {"kubeadm.k8s.io/v1alpha1": "v1.11", "kubeadm.k8s.io/v1alpha2": "v1.12", "kubeadm.k8s.io/v1alpha3": "v1.14",
           "kubeadm.k8s.io/v1beta1": "v1.15", "kubeadm.k8s.io/v1beta2": "v1.22"}
    if minor >= 37:
        old["kubeadm.k8s.io/v1beta3"] = "v1.36"
    return old


@dataclass(frozen=True)
class Gate:
    default: bool
    stage: str  # ALPHA, BETA, GA, DEPRECATED
    locked: bool = False


def feature_gates(minor: int) -> dict[str, Gate]:
    """kubeadm's own feature gates (cmd/kubeadm/app/features/features.go), per minor, from the PRs that moved them."""
    gates = {"RootlessControlPlane": Gate(False, "ALPHA"), "PublicKeysECDSA": Gate(False, "DEPRECATED")}
    gates["ControlPlaneKubeletLocalMode"] = Gate(True, "GA", locked=True) if minor >= 35 else Gate(True, "BETA")
    if minor <= 34:
        gates["WaitForAllControlPlaneComponents"] = Gate(True, "GA", locked=True) if minor == 34 else Gate(True, "BETA")
    gates["NodeLocalCRISocket"] = Gate(True, "GA", locked=True) if minor >= 36 else Gate(minor >= 34, "BETA" if minor >= 34 else "ALPHA")
    if minor >= 37:
        del gates["PublicKeysECDSA"]
    return gates


# Which kubeadm kinds each command reads from --config (others are ignored with a warning, as kubeadm does).
CONFIG_KINDS = {
    "init": ("InitConfiguration", "ClusterConfiguration"),
    "join": ("JoinConfiguration",),
    "reset": ("ResetConfiguration",),
    "upgrade": ("UpgradeConfiguration", "ClusterConfiguration"),
}


@dataclass(frozen=True)
class Table:
    minor: int
    ROOT: dict
    API_KINDS: dict
    OLD_API_VERSIONS: dict
    FEATURE_GATES: dict
    GLOBAL_FLAGS: dict
    SHORTHANDS: dict
    LOCAL_SHORTHANDS: dict
    ALLOWED_WITH_CONFIG: set
    CONFIG_KINDS: dict


def for_minor(minor: int) -> Table:
    if minor not in MINORS:
        raise ValueError(f"no stand-in table for kubeadm 1.{minor} (have 1.{MINORS[0]}-1.{MINORS[-1]})")
    return Table(minor, tree(minor), api_kinds(minor), old_api_versions(minor), feature_gates(minor), GLOBAL_FLAGS, SHORTHANDS,
                 LOCAL_SHORTHANDS, ALLOWED_WITH_CONFIG, CONFIG_KINDS)
