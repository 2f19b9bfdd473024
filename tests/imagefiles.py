"""Package databases for image layers: an Alpine apk database as Alpine 3.19 writes it, and the image names tests use.

The Debian side is this machine's own /var/lib/dpkg/status (Debian 12), copied by each test.
"""

DEBIAN_IMAGE = "docker.io/library/debian-probe:12"
ALPINE_IMAGE = "docker.io/library/alpine-probe:3.19"
# An apk database as Alpine 3.19 writes it (lib/apk/db/installed): one block per package.
APK_INSTALLED = """C:Q1p8Y0G8cGyz7VkM+YqkT5Q2u0z8c=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407909
I:667648
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>
t:1705065424
c:1f6f6a2a8ac55e6a1f6d9d0dc46cb31f2e3e9ecb
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755

C:Q1w1dFgL1mZx1M5V1wZtS7bYvlEV4=
P:busybox
V:1.36.1-r15
A:x86_64
S:509876
I:950272
T:Size optimized toolbox of many common UNIX utilities
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1702052117
D:so:libc.musl-x86_64.so.1
F:bin
R:busybox

C:Q1G9q0C8Vd3+z5yXxZl6oXqR1GJt8=
P:libcrypto3
V:3.1.4-r5
A:x86_64
S:1754036
I:4210688
T:Crypto library from openssl
U:https://www.openssl.org/
L:Apache-2.0
o:openssl
m:Ariadne Conner <ariadne@dereferenced.org>
t:1706540364
F:lib
R:libcrypto.so.3
"""
ALPINE_OS_RELEASE = 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n'
