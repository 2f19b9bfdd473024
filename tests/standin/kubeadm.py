"""A strict STAND-IN for kubeadm 1.33-1.38 (per-minor tables in kubeadm_tables.py). Not Kubernetes.

It parses its command line the way kubeadm's cobra tree does (sub-commands, phases with hidden
ones absent, each command's own flags, `--config` mixing rules) and decodes every `--config`
file strictly, as `kubeadm config validate` does (documents split as SplitConfigDocuments splits
them, kinds registered per apiVersion of that minor, unknown or duplicate fields, wrong value
types), then validates what kubeadm validates before it acts: addresses (a loopback or malformed
advertise address), subnets, bootstrap tokens, CA hashes, the feature gates that minor knows, the
control-plane version it may deploy, the preflight ignore list. Anything kubeadm would refuse ends
with kubeadm's wording on stderr and exit 1. What it accepts does nothing except `config images
list`, `version`, `token create` (a token; `--print-join-command` in kubeadm's own shape, from the
kubeconfig it is given) and `init phase upload-certs --upload-certs` (the certificate key).

Test hooks (environment): AIRLOCK_STANDIN_LOG (append "kubeadm ARGS" per call),
AIRLOCK_STANDIN_FAIL (space-separated words; a call whose command path holds one fails),
AIRLOCK_STANDIN_SLEEP (seconds `upgrade apply|node` takes), AIRLOCK_STANDIN_SERVER_VERSION
(the cluster's version, which `upgrade apply` checks its skew against).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import time
from pathlib import Path

import yaml

from tests.standin import kubeadm_tables

# The table of the minor this stand-in plays; set by run() from its version.
table: kubeadm_tables.Table

EXACT_VERSION = re.compile(r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")
PERSISTENT = {("config",), ("token",)}  # commands whose flags their sub-commands inherit
TRUE_FALSE = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
              "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}


class Refused(Exception):
    """What kubeadm would print before exiting 1."""


class Parsed:
    def __init__(self, path: tuple[str, ...], node: dict, flags: dict[str, object], args: list[str]):
        self.path, self.node, self.flags, self.args = path, node, flags, args

    @property
    def command_path(self) -> str:
        return " ".join(("kubeadm", *self.path))


def flag_set(path: tuple[str, ...], node: dict) -> dict[str, bool]:
    """The flags a command accepts: its own, the persistent ones of its ancestors, and kubeadm's global ones."""
    known = dict(table.GLOBAL_FLAGS)
    walk = table.ROOT
    for depth, name in enumerate(path[:-1] if path else ()):
        walk = walk["commands"][name]
        if tuple(path[: depth + 1]) in PERSISTENT:
            known.update(walk["flags"])
    known.update(node["flags"])
    return known


def parse(argv: list[str]) -> Parsed:
    path: list[str] = []
    node = table.ROOT
    raw_flags: list[tuple[str, str | None, str]] = []  # (name, inline value, how it was written)
    args: list[str] = []
    tokens = list(argv)
    index = 0
    only_args = False
    pending_value_for: str | None = None
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if only_args or not token.startswith("-") or token == "-":
            if not args and token in node["commands"]:
                path.append(token)
                node = node["commands"][token]
            else:
                args.append(token)
            continue
        if token == "--":
            only_args = True
            continue
        if token.startswith("--"):
            name, sep, value = token[2:].partition("=")
            raw_flags.append((name, value if sep else None, token))
            # Whether the next token is this flag's value is only known once the command is: look ahead now.
            pending_value_for = name if not sep else None
        else:
            short, sep, value = token[1:].partition("=")
            raw_flags.append(("-" + short, value if sep else None, token))
            pending_value_for = "-" + short if not sep else None
        if pending_value_for is not None and index < len(tokens):
            known = flag_set(tuple(path), node)
            name = _long_name(pending_value_for, tuple(path))
            if known.get(name):
                raw_flags[-1] = (raw_flags[-1][0], tokens[index], raw_flags[-1][2])
                index += 1
    known = flag_set(tuple(path), node)
    flags: dict[str, object] = {}
    for name, value, written in raw_flags:
        if name.startswith("-"):
            short = name[1:]
            long_name = table.SHORTHANDS.get(short) or table.LOCAL_SHORTHANDS.get(tuple(path), {}).get(short)
            if long_name is None or len(short) != 1:
                raise Refused(f"unknown shorthand flag: {short[:1]!r} in {written}")
            name = long_name
        if name not in known:
            raise Refused(f"unknown flag: --{name}")
        if known[name]:
            if value is None:
                raise Refused(f"flag needs an argument: --{name}")
            flags[name] = value
        else:
            if value is None:
                flags[name] = True
            elif value in TRUE_FALSE:
                flags[name] = TRUE_FALSE[value]
            else:
                raise Refused(f'invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: parsing "{value}": invalid syntax')
    return Parsed(tuple(path), node, flags, args)


def _long_name(name: str, path: tuple[str, ...]) -> str:
    if name.startswith("-"):
        short = name[1:]
        return table.SHORTHANDS.get(short) or table.LOCAL_SHORTHANDS.get(path, {}).get(short) or short
    return name


def check_args(parsed: Parsed) -> None:
    node, args = parsed.node, parsed.args
    if not args:
        return
    if node["args"] == 0:
        raise Refused(f'unknown command "{args[0]}" for "{parsed.command_path}"')
    if node["args"] > 0 and len(args) > node["args"]:
        raise Refused(f"accepts at most {node['args']} arg(s), received {len(args)}")


def check_mixed(parsed: Parsed) -> None:
    if "config" not in parsed.flags:
        return
    mixed = sorted(name for name in parsed.flags if name not in table.ALLOWED_WITH_CONFIG and not name.startswith("skip-"))
    if mixed:
        raise Refused(f"can not mix '--config' with arguments [{' '.join(mixed)}]")


class _StrictLoader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads it for a strict decode: a key set twice is an error."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise Refused(f'yaml: unmarshal errors: key "{key}" already set in map')
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _type_error(path: str, want: str, got: object, gvk: str) -> Refused:
    kind = {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(type(got), type(got).__name__)
    return Refused(f"error unmarshaling configuration {gvk}: json: cannot unmarshal {kind} into Go value of type {want} (field {path})")


def check_value(value: object, schema, path: str, gvk: str) -> None:
    if value is None or schema == "any":
        return
    if schema == "str":
        if not isinstance(value, str):
            raise _type_error(path, "string", value, gvk)
    elif schema == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, "int32", value, gvk)
    elif schema == "bool":
        if not isinstance(value, bool):
            raise _type_error(path, "bool", value, gvk)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise _type_error(path, "[]" + str(schema[1] if isinstance(schema[1], str) else "struct"), value, gvk)
        for position, item in enumerate(value):
            check_value(item, schema[1], f"{path}[{position}]", gvk)
    elif "map" in schema and len(schema) == 1:
        if not isinstance(value, dict):
            raise _type_error(path, "map", value, gvk)
        for key, item in value.items():
            check_value(item, schema["map"], f"{path}.{key}", gvk)
    else:
        if not isinstance(value, dict):
            raise _type_error(path, "struct", value, gvk)
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in schema:
                raise Refused(f"error unmarshaling configuration {gvk}: strict decoding error: unknown field \"{where}\"")
            check_value(item, schema[key], where, gvk)


def _gvk(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    return f'schema.GroupVersionKind{{Group:"{group}", Version:"{version}", Kind:"{kind}"}}'


def registered_kinds(api_version: str, version: str) -> dict:
    """The kinds this kubeadm's scheme registers for an apiVersion (v1beta3 is gone from 1.37 on)."""
    return table.API_KINDS.get(api_version, {})


def split_documents(text: str) -> list[str]:
    """The chunks kubeadm reads from a --config file, split exactly as kubeadm splits them.

    kubeadm's SplitConfigDocuments (cmd/kubeadm/app/util/marshal.go) reads with apimachinery's
    YAMLReader (k8s.io/apimachinery/pkg/util/yaml/decoder.go): lines are read one by one (a line's
    "\\r\\n" or "\\n" becomes "\\n"); a line that starts with "---" ends the chunk gathered so far (the
    rest of that line must be empty or a comment, else "invalid Yaml document separator"); a separator
    with nothing gathered yet is kept as the first line of the next chunk. Every non-empty chunk is a
    document, comments and blank lines included: nothing is dropped for being "only a comment".
    """
    chunks: list[str] = []
    buffer: list[str] = []
    lines = text.split("\n")
    last = lines.pop()  # "" when the text ends with "\n"; otherwise a final line without one, still a line
    lines = [line[:-1] if line.endswith("\r") else line for line in lines] + ([last] if last else [])
    for line in lines:
        if line.startswith("---"):
            trimmed = line[3:].strip()
            if trimmed and not trimmed.startswith("#"):
                raise Refused(f"invalid Yaml document separator: {trimmed}")
            if buffer:
                chunks.append("".join(buffer))
                buffer = []
                continue
        buffer.append(line + "\n")
    if buffer:
        chunks.append("".join(buffer))
    return chunks


def _type_meta(chunk: str) -> dict:
    """One chunk decoded strictly (sigs.k8s.io/yaml: YAML to JSON, a key set twice is an error); {} for null."""
    try:
        document = yaml.load(chunk, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        raise Refused(f"error converting YAML to JSON: yaml: {str(error).splitlines()[0]}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        kind = "array" if isinstance(document, list) else "string" if isinstance(document, str) else "number"
        raise Refused(f"couldn't get version/kind; json parse error: json: cannot unmarshal {kind} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}")
    return document


def load_config(file: str, version: str) -> list[tuple[str, str, dict]]:
    """Every document of a --config file as (apiVersion, kind, fields), decoded strictly."""
    try:
        text = Path(file).read_text()
    except OSError as error:
        raise Refused(f'unable to read config from "{file}" : open {file}: {error.strerror.lower()}') from None
    found = []
    seen_kinds: set[str] = set()
    for chunk in split_documents(text):
        document = _type_meta(chunk)
        api_version, kind = document.get("apiVersion"), document.get("kind")
        group, _, version_part = str(api_version or "").rpartition("/")
        if not group or not version_part or not kind:
            # SplitConfigDocuments: a chunk without group, version and kind (a comment-only chunk, a blank one,
            # apiVersion "v1") stops kubeadm before anything else is read.
            raise Refused(f"invalid configuration for GroupVersionKind {group}/{version_part}, Kind={kind or ''}: kind and apiVersion is mandatory information that must be specified")
        if kind in seen_kinds:
            raise Refused(f'invalid configuration: kind "{kind}" is specified twice in YAML file')
        seen_kinds.add(kind)
        if api_version in table.OLD_API_VERSIONS:
            raise Refused(
                f"your configuration file uses an old API spec: {api_version!r} (kind: {kind!r}). "
                f"Please use kubeadm {table.OLD_API_VERSIONS[api_version]} instead and run 'kubeadm config migrate --old-config old.yaml "
                "--new-config new.yaml', which will write the new, similar spec using a newer API version."
            )
        kinds = registered_kinds(api_version, version)
        if kind not in kinds:
            raise Refused(f'no kind "{kind}" is registered for version "{api_version}" in scheme "pkg/runtime/scheme.go:100"')
        fields = {key: value for key, value in document.items() if key not in ("apiVersion", "kind")}
        check_value(fields, kinds[kind], "", _gvk(api_version, kind))
        if api_version == "kubeadm.k8s.io/v1beta3":
            print(f'W1122 stand-in] please use "kubeadm config migrate": {api_version} {kind} is deprecated', file=sys.stderr)
        found.append((api_version, kind, fields))
    return found


def check_config(parsed: Parsed, version: str) -> list[tuple[str, str, dict]]:
    file = parsed.flags.get("config")
    if file is None:
        return []
    documents = load_config(str(file), version)
    wanted = table.CONFIG_KINDS.get(parsed.path[0])
    kubeadm_kinds = [kind for api, kind, _ in documents if api.startswith("kubeadm.k8s.io/")]
    if parsed.path[0] == "join" and "JoinConfiguration" not in kubeadm_kinds:
        raise Refused("no JoinConfiguration kind was found in the YAML file")
    if parsed.path[0] == "reset" and kubeadm_kinds and "ResetConfiguration" not in kubeadm_kinds:
        raise Refused("no ResetConfiguration kind was found in the YAML file")
    for api, kind, fields in documents:
        if wanted and api.startswith("kubeadm.k8s.io/") and kind not in wanted:
            print(f"[config] WARNING: Ignored configuration document with GroupVersionKind {api}, Kind={kind}", file=sys.stderr)
        if kind == "ClusterConfiguration" and fields.get("kubernetesVersion") and not EXACT_VERSION.match(fields["kubernetesVersion"]):
            label = fields["kubernetesVersion"]
            # A label makes kubeadm ask dl.k8s.io; on an air-gapped node that fails.
            raise Refused(f"unable to get URL \"https://dl.k8s.io/release/{label}.txt\": stand-in kubeadm is offline (kubernetesVersion must be exact)")
    return documents


TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
CA_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
CERTIFICATE_KEY = re.compile(r"^[0-9a-f]{64}$")


def _minor(version: str) -> int:
    return int(version.lstrip("v").split(".")[1])


def check_address(value: object, flag: str) -> None:
    """SetAPIEndpointDynamicDefaults (util/config/initconfiguration.go): a malformed address is refused; a
    loopback one is a selector for a global unicast address on lo, which a node does not have."""
    if value in (None, ""):
        return
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError:
        raise Refused(f"couldn't use \"{value}\" as \"{flag}\", must be ipv4 or ipv6 address") from None
    if address.is_loopback:
        raise Refused("unable to select an IP from lo network interface")


def check_token(value: object, where: str) -> None:
    if value not in (None, "") and not TOKEN.match(str(value)):
        raise Refused(f'{where}: Invalid value: "{value}": the bootstrap token "{value}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"')


def check_subnets(networking: dict) -> None:
    """ValidateNetworking: comma-separated CIDRs (at most one per IP family), a service subnet of at least
    10 addresses and at most 20 host bits (MinimumAddressesInServiceSubnet, MaximumBitsForServiceSubnet)."""
    for field, value in (("serviceSubnet", networking.get("serviceSubnet")), ("podSubnet", networking.get("podSubnet"))):
        if not value:
            continue
        networks = []
        for part in str(value).split(","):
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise Refused(f'networking.{field}: Invalid value: "{value}": couldn\'t parse subnet') from None
        if len(networks) > 2 or (len(networks) == 2 and networks[0].version == networks[1].version):
            raise Refused(f'networking.{field}: Invalid value: "{value}": expected one subnet per IP family')
        for network in networks:
            if field == "serviceSubnet":
                host_bits = network.max_prefixlen - network.prefixlen
                if network.num_addresses < 10:
                    raise Refused(f'networking.serviceSubnet: Invalid value: "{value}": subnet is too small: at least 10 addresses are required')
                if host_bits > 20:
                    raise Refused(f'networking.serviceSubnet: Invalid value: "{value}": specified service subnet is too large; for {network.max_prefixlen}-bit addresses, the mask must be >= {network.max_prefixlen - 20}')


def check_feature_gates(gates: object) -> None:
    """ValidateFeatureGates (apis/kubeadm/validation): a gate this minor does not know is an error, and so is a
    GA gate locked to its default set otherwise."""
    for name, value in (gates or {}).items():
        gate = table.FEATURE_GATES.get(name)
        if gate is None:
            raise Refused(f"featureGates: Invalid value: map[string]bool{{\"{name}\":{str(value).lower()}}}: {name} is not a valid feature name.")
        if gate.locked and value != gate.default:
            raise Refused(f"featureGates: Invalid value: map[string]bool{{\"{name}\":{str(value).lower()}}}: cannot set feature gate {name} to {str(value).lower()}, feature is locked to {str(gate.default).lower()}")


def check_ignore_list(values: list[str]) -> None:
    """ValidateIgnorePreflightErrors: names are case-insensitive; "all" stands alone."""
    names = {value.strip().lower() for value in values if value.strip()}
    if "all" in names and len(names) > 1:
        raise Refused("ignorePreflightErrors: Invalid value: \"" + ",".join(sorted(names)) + "\": don't specify individual checks if 'all' is used")


def validate(parsed: Parsed, documents: list[tuple[str, str, dict]], version: str) -> None:
    """What kubeadm validates after decoding, before it acts (apis/kubeadm/validation/validation.go and the dynamic defaults)."""
    ignore = [str(parsed.flags["ignore-preflight-errors"])] if "ignore-preflight-errors" in parsed.flags else []
    ignore = [name for value in ignore for name in value.split(",")]
    for _, kind, fields in documents:
        registration = fields.get("nodeRegistration") or {}
        ignore += list(registration.get("ignorePreflightErrors") or [])
        if kind == "InitConfiguration":
            check_address((fields.get("localAPIEndpoint") or {}).get("advertiseAddress"), "apiserver-advertise-address")
            for position, token in enumerate(fields.get("bootstrapTokens") or []):
                check_token(token.get("token"), f"bootstrapTokens[{position}].token")
            key = fields.get("certificateKey")
            if key and not CERTIFICATE_KEY.match(str(key)):
                raise Refused(f'certificateKey: Invalid value: "{key}": the certificate key must be a hex encoded string of 32 bytes')
        elif kind == "ClusterConfiguration":
            check_subnets(fields.get("networking") or {})
            check_feature_gates(fields.get("featureGates"))
            wanted = fields.get("kubernetesVersion")
            if wanted and EXACT_VERSION.match(wanted) and _minor(wanted) < table.minor - 1:
                raise Refused(f"this version of kubeadm only supports deploying clusters with the control plane version >= 1.{table.minor - 1}.0. Current version: {wanted}")
        elif kind == "JoinConfiguration":
            discovery = fields.get("discovery") or {}
            token = discovery.get("bootstrapToken") or {}
            check_token(token.get("token"), "discovery.bootstrapToken.token")
            check_token(discovery.get("tlsBootstrapToken"), "discovery.tlsBootstrapToken")
            for digest in token.get("caCertHashes") or []:
                if not CA_HASH.match(str(digest)):
                    raise Refused(f'discovery.bootstrapToken.caCertHashes: Invalid value: "{digest}": invalid hash, expected "format:hex-value"')
            if token and not token.get("caCertHashes") and not token.get("unsafeSkipCAVerification"):
                raise Refused("discovery.bootstrapToken.caCertHashes: Invalid value: []: using token-based discovery without caCertHashes can be unsafe. "
                              "Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue")
            control_plane = fields.get("controlPlane")
            if control_plane is not None:
                check_address((control_plane.get("localAPIEndpoint") or {}).get("advertiseAddress"), "apiserver-advertise-address")
                key = control_plane.get("certificateKey")
                if key and not CERTIFICATE_KEY.match(str(key)):
                    raise Refused(f'controlPlane.certificateKey: Invalid value: "{key}": the certificate key must be a hex encoded string of 32 bytes')
    check_ignore_list(ignore)


def upgrade_apply(parsed: Parsed, version: str) -> None:
    """The target must be exact, no newer than this kubeadm, and at most one minor above the cluster (upgrade/policy.go)."""
    target = parsed.args[0] if parsed.args else ""
    if not target:
        raise Refused("missing one or more required arguments. Required arguments: [version]")
    if not EXACT_VERSION.match(target if target.startswith("v") else "v" + target):
        raise Refused(f'unable to fetch file. URL: "https://dl.k8s.io/release/{target}.txt": stand-in kubeadm is offline (the version must be exact)')
    target = target if target.startswith("v") else "v" + target
    ours = tuple(int(part) for part in version.lstrip("v").split("-")[0].split(".")[:3])
    wanted = tuple(int(part) for part in target.lstrip("v").split("-")[0].split(".")[:3])
    if wanted[:2] > ours[:2]:
        raise Refused(f'Specified version to upgrade to "{target}" is at least one minor release higher than the kubeadm minor release '
                      f"({wanted[1]} > {ours[1]}). Such an upgrade is not supported")
    cluster = os.environ.get("AIRLOCK_STANDIN_SERVER_VERSION")
    if cluster:
        current = tuple(int(part) for part in cluster.lstrip("v").split("-")[0].split(".")[:3])
        if wanted[1] > current[1] + 1:
            raise Refused(f'Specified version to upgrade to "{target}" is too high; kubeadm can upgrade only 1 minor version at a time')
        if wanted < current:
            raise Refused(f'Specified version to upgrade to "{target}" is lower than the cluster version "{cluster}". Downgrades are not supported yet')


def _kubeconfig_cluster(path: str) -> tuple[str, bytes]:
    """The server and the CA of a kubeconfig's current context, as token create reads them."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise Refused(f"failed to load admin kubeconfig: open {path}: {error.strerror.lower()}") from None
    contexts = {c["name"]: c["context"] for c in document.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in document.get("clusters") or []}
    context = contexts.get(document.get("current-context"))
    if context is None or context.get("cluster") not in clusters:
        raise Refused("failed to get default cluster config: invalid kubeconfig")
    cluster = clusters[context["cluster"]]
    import base64

    return cluster["server"], base64.b64decode(cluster.get("certificate-authority-data", ""))


def token_create(parsed: Parsed) -> None:
    """`token create [TOKEN] [--print-join-command] [--certificate-key K]` (cmd/token.go, cmd/util/join.go)."""
    import secrets

    token = parsed.args[0] if parsed.args else None
    if token is not None and not TOKEN.match(token):
        raise Refused(f'the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"')
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    token = token or "".join(secrets.choice(alphabet) for _ in range(6)) + "." + "".join(secrets.choice(alphabet) for _ in range(16))
    key = parsed.flags.get("certificate-key")
    if key is not None and not CERTIFICATE_KEY.match(str(key)):
        raise Refused("certificate key must be a hex encoded string of 32 bytes")
    if key and not parsed.flags.get("print-join-command"):
        raise Refused("cannot use --certificate-key without --print-join-command")
    if not parsed.flags.get("print-join-command"):
        print(token)
        return
    server, ca_pem = _kubeconfig_cluster(str(parsed.flags.get("kubeconfig", "/etc/kubernetes/admin.conf")))
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        raise Refused("failed to parse CA certificate from kubeconfig") from None
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib

    pin = "sha256:" + hashlib.sha256(spki).hexdigest()
    endpoint = server.split("://", 1)[-1].rstrip("/")
    line = f"kubeadm join {endpoint} --token {token} \\\n    --discovery-token-ca-cert-hash {pin} "
    if key:
        line += f"\\\n    --control-plane --certificate-key {key}"
    # token.go (RunCreateToken) prints the join command on one line: it removes the template's "\\\n" and tabs.
    print(line.replace("\\\n", "").replace("\t", ""))


def upload_certs(parsed: Parsed, documents: list[tuple[str, str, dict]]) -> None:
    """`init phase upload-certs --upload-certs`: what it prints (phases/init/uploadcerts.go)."""
    import secrets

    if not parsed.flags.get("upload-certs"):
        print("[upload-certs] Skipping phase. Please see --upload-certs")
        return
    key = parsed.flags.get("certificate-key") or next((f.get("certificateKey") for _, k, f in documents if k == "InitConfiguration" and f.get("certificateKey")), None)
    key = key or secrets.token_hex(32)
    print('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')
    if not parsed.flags.get("skip-certificate-key-print"):
        print("[upload-certs] Using certificate key:")
        print(key)


def wait_control_plane_defaults(parsed: Parsed, version: str) -> None:
    """init's wait-control-plane has no --config: kubeadm builds its InitConfiguration from defaults, whose
    kubernetesVersion is the label stable-1; offline it warns and falls back to its own version."""
    print('W1202 stand-in] could not fetch a Kubernetes version from the internet: unable to get URL "https://dl.k8s.io/release/stable-1.txt": stand-in is offline', file=sys.stderr)
    print(f"W1202 stand-in] falling back to the local client version: {version}", file=sys.stderr)


def images_list(parsed: Parsed, version: str, images: dict[str, str]) -> None:
    asked = parsed.flags.get("kubernetes-version")
    if asked is None:
        for _, kind, fields in check_config(parsed, version):
            if kind == "ClusterConfiguration":
                asked = fields.get("kubernetesVersion")
    asked = str(asked or "")
    if not EXACT_VERSION.match(asked):
        raise Refused(f"stand-in kubeadm: exact version required, got '{asked}'")
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
        print(f"registry.k8s.io/{name}:{asked}")
    print(f"registry.k8s.io/coredns/coredns:{images['coredns']}")
    print(f"registry.k8s.io/pause:{images['pause']}")
    print(f"registry.k8s.io/etcd:{images['etcd']}")


def print_version(parsed: Parsed, version: str, arch: str) -> None:
    output = parsed.flags.get("output", "")
    major, minor = version.lstrip("v").split(".")[:2]
    info = {"major": major, "minor": minor, "gitVersion": version, "platform": f"linux/{arch}", "standIn": True}
    if output == "short":
        print(version)
    elif output == "json":
        print(json.dumps({"clientVersion": info}, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump({"clientVersion": info}), end="")
    elif output == "":
        print(f'kubeadm version: &version.Info{{Major:"{major}", Minor:"{minor}", GitVersion:"{version}", Platform:"linux/{arch}"}} (stand-in)')
    else:
        raise Refused(f"invalid output format: {output}")


def help_text(parsed: Parsed) -> str:
    lines = [f"Usage:\n  {parsed.command_path}" + (" [command]" if parsed.node["commands"] else " [flags]")]
    if parsed.node["commands"]:
        lines.append("\nAvailable Commands:")
        lines += [f"  {name}" for name in parsed.node["commands"]]
    lines.append("\nFlags:")
    lines += [f"      --{name}" + (" string" if takes else "") for name, takes in sorted(flag_set(parsed.path, parsed.node).items())]
    return "\n".join(lines)


def run(argv: list[str], version: str, arch: str, images: dict[str, str]) -> int:
    global table
    table = kubeadm_tables.for_minor(_minor(version))
    parsed = parse(argv)
    if parsed.flags.get("help"):
        print(help_text(parsed))
        return 0
    check_args(parsed)
    if not parsed.path:
        print(help_text(parsed))
        return 0
    runnable = "phase" in parsed.path[:-1] or parsed.path in (("init",), ("join",), ("reset",), ("upgrade", "node"), ("upgrade", "apply"))
    if parsed.node["commands"] and not runnable:
        # A command group without a Run of its own (`kubeadm init phase`, `kubeadm config`) prints its help.
        print(help_text(parsed))
        return 0
    check_mixed(parsed)
    failing = set(os.environ.get("AIRLOCK_STANDIN_FAIL", "").split())
    if failing & set(parsed.path):
        raise Refused(f"stand-in kubeadm: {' '.join(parsed.path)} fails on request")
    if parsed.path == ("config", "images", "list"):
        images_list(parsed, version, images)
        return 0
    if parsed.path == ("version",):
        print_version(parsed, version, arch)
        return 0
    documents = check_config(parsed, version)
    validate(parsed, documents, version)
    if parsed.path == ("token", "create"):
        token_create(parsed)
        return 0
    if parsed.path == ("init", "phase", "upload-certs"):
        upload_certs(parsed, documents)
        return 0
    if parsed.path == ("init", "phase", "wait-control-plane"):
        wait_control_plane_defaults(parsed, version)
    if parsed.path == ("upgrade", "apply"):
        upgrade_apply(parsed, version)
    if parsed.path[:1] == ("upgrade",) and parsed.path[1:2] in (("apply",), ("node",)) and os.environ.get("AIRLOCK_STANDIN_SLEEP"):
        time.sleep(float(os.environ["AIRLOCK_STANDIN_SLEEP"]))
    print(f"[stand-in] {parsed.command_path}: accepted, nothing done")
    return 0


def main(version: str, arch: str, images: dict[str, str]) -> None:
    argv = sys.argv[1:]
    log = os.environ.get("AIRLOCK_STANDIN_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write("kubeadm " + " ".join(argv) + "\n")
    try:
        code = run(argv, version, arch, images)
    except Refused as refusal:
        print(str(refusal), file=sys.stderr)
        print("To see the stack trace of this error execute with --v=5 or higher", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.exit(code)


def script(version: str, arch: str, images: dict[str, str]) -> str:
    """The executable written where kubeadm would be: this module, run by the test's Python."""
    repository = Path(__file__).resolve().parents[2]
    return (
        f"#!{sys.executable}\n"
        f"# airlock test STAND-IN for kubeadm {version} linux/{arch} (tests/standin/kubeadm.py). Not Kubernetes.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(repository)!r})\n"
        "from tests.standin.kubeadm import main\n"
        f"main({version!r}, {arch!r}, {images!r})\n"
    )


