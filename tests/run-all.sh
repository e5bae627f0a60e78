#!/usr/bin/env bash
# The whole test suite, as root on a fresh Debian machine: installs what the tests
# need, mounts tracefs, checks the committed kernel objects against their sources,
# then runs every test layer (unit, script, object, kernel, end to end).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "run-all.sh: kernel tests need root; run it as root (sudo $0)" >&2
    exit 2
fi

# Debian packages the tests use: clang/llvm/libbpf for `make -C kernel-progs check`,
# bpftool for object inspection, bpftrace for the peer benchmark, pahole (dwarves) as the
# reference for the DWARF-to-BTF step, kmod for the guest modules' modinfo, iproute2 for network
# namespaces, gcc for the record-layout check, prometheus for the end-to-end scrape and
# promtool, python3-prometheus-client for its OpenMetrics parser, conntrack and
# prometheus-node-exporter to check the procfs/netlink sources against, xz-utils for the
# btfhub archive test, qemu-system-x86/busybox-static/cpio for the guest kernels,
# containerd/runc/containernetworking-plugins for the pod tests (real CRI sandboxes),
# podman/buildah to build the container image (packaging/image/build), python3-pip for the
# PyPI packages of the chart tests (Helm SDK, kubernetes-validate) installed below.
# tests/tests/tools.rs fails when a test runs a program no package here provides.
packages=(clang llvm libbpf-dev bpftool bpftrace pahole kmod iproute2 iptables gcc make pkg-config prometheus python3-prometheus-client xz-utils qemu-system-x86 busybox-static cpio conntrack prometheus-node-exporter containerd runc containernetworking-plugins podman buildah python3-pip)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Helm (the Helm v4 SDK, no helm binary) and kubernetes-validate for the chart tests
# (tests/tests/kubernetes.rs), with Debian's python3, into target/k8s-py.
if ! cmp -s tests/kubernetes/requirements.txt target/k8s-py/.requirements.txt; then
    log "installing the PyPI packages of tests/kubernetes/requirements.txt into target/k8s-py"
    /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --target target/k8s-py -r tests/kubernetes/requirements.txt
    cp tests/kubernetes/requirements.txt target/k8s-py/.requirements.txt
fi

if [ ! -d /sys/kernel/tracing/events ]; then
    log "mounting tracefs"
    mount -t tracefs tracefs /sys/kernel/tracing
fi

log "kernel objects match their sources"
make -s -C kernel-progs check

log "building"
# One build from scratch: incremental state would only double the disk it takes.
export CARGO_INCREMENTAL=0
df -h --output=avail,target . | tail -1 | sed 's/^/disk free: /'
cargo build --workspace --all-targets

status=0
# The steps that failed, named again just before the tests: the test summary closes
# the output, and an earlier step's failure must not hide far above it.
failed=()
fail() { status=$1; failed+=("$2"); }
log "doc tests"
cargo test --workspace --doc || fail $? "doc tests"

# Debian's 6.1 and 5.10 kernels under qemu, and this one: which variants load and
# fire, as tables (tests/guest/README.md). Kept out of the run below.
log "guest kernels"
tests/guest/run || fail $? "guest kernels"

# The fuzz targets, a few seconds each over their seeds plus every committed
# reproducer (fuzz/README.md): nightly and cargo-fuzz. The stock image has nightly;
# without it this is skipped, loudly, and fails under CI=true.
log "fuzz smoke"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        log "installing cargo-fuzz"
        cargo install cargo-fuzz --version 0.13.2 --locked
    fi
    fuzz/smoke || fail $? "fuzz smoke"
else
    echo "SKIP fuzz smoke: no nightly toolchain (rustup toolchain install nightly)" >&2
    if [ "${CI:-}" = true ]; then
        fail 1 "fuzz smoke (no nightly toolchain)"
    fi
fi

if [ ${#failed[@]} -gt 0 ]; then
    printf '\n==> FAILED before the tests: %s (exit %s): the run fails whatever they give\n' \
        "$(printf '%s, ' "${failed[@]}" | sed 's/, $//')" "$status"
fi

# Last, so its summary closes the output.
log "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --test-threads 1 -E 'not binary(guest)' || fail $? "tests"
else
    cargo test --workspace --no-fail-fast -- --test-threads 1 --skip guest_kernels || fail $? "tests"
fi

exit $status
