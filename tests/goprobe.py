"""A tiny real Go program, built here with Debian's Go toolchain (golang-go), with real build info.

Its one dependency, example.com/greeting v1.4.2, is vendored (vendor/modules.txt), so the
build needs no network and the binary's build info lists it as `go version -m` shows it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GO_MOD = "module example.com/airlock-probe\n\ngo 1.19\n\nrequire example.com/greeting v1.4.2\n"
MAIN = 'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/greeting"\n)\n\nfunc main() { fmt.Println(greeting.Hello()) }\n'
GREETING = 'package greeting\n\nfunc Hello() string { return "hello from a vendored module" }\n'
MODULES_TXT = "# example.com/greeting v1.4.2\n## explicit\nexample.com/greeting\n"


def build_probe(work: Path, arches: tuple[str, ...] = ("amd64", "arm64")) -> dict[str, Path]:
    """{arch: path} of the probe program built for linux/ARCH."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("no Go toolchain (apt-get install golang-go; make deps installs it)")
    source = work / "src"
    (source / "vendor" / "example.com" / "greeting").mkdir(parents=True, exist_ok=True)
    (source / "go.mod").write_text(GO_MOD)
    (source / "main.go").write_text(MAIN)
    (source / "vendor" / "example.com" / "greeting" / "greeting.go").write_text(GREETING)
    (source / "vendor" / "modules.txt").write_text(MODULES_TXT)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "GOFLAGS": "-mod=vendor",
        "GOPROXY": "off",
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
        "CGO_ENABLED": "0",
        "GOOS": "linux",
    }
    built = {}
    for arch in arches:
        target = work / f"probe-{arch}"
        subprocess.run([go, "build", "-o", str(target), "."], cwd=source, env={**env, "GOARCH": arch}, check=True, capture_output=True)
        built[arch] = target
    return built


def go_version_m(binary: Path) -> dict:
    """What `go version -m` says about a binary: {"go": version, "path": main package, "deps": {module: version}}."""
    output = subprocess.run(["go", "version", "-m", str(binary)], capture_output=True, text=True, check=True).stdout
    lines = output.splitlines()
    found = {"go": lines[0].split(": ", 1)[1].strip(), "path": "", "main": None, "deps": {}}
    last = ""
    for line in lines[1:]:
        words = line.strip("\n").split("\t")[1:]
        if words[0] == "path":
            found["path"] = words[1]
        elif words[0] == "mod":
            found["main"] = (words[1], words[2])
        elif words[0] == "dep":
            found["deps"][words[1]] = words[2]
            last = words[1]
        elif words[0] == "=>" and words[1].startswith((".", "/")):
            found["deps"][last] = "(devel)"  # replaced by a local directory: no version
    return found
