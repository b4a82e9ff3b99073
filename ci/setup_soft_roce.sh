#!/usr/bin/env bash
# Soft-RoCE (rdma_rxe) on a Linux host whose kernel has the module: after this,
# fastp2p's RDMA data path and `python -m pytest -m rdma tests/rdma` run on it.
#
#   sudo bash ci/setup_soft_roce.sh [NETDEV]     (default: the interface of the default route)
#
# Where the kernel has no rdma_rxe (containers, this project's sandbox), use the
# QEMU guest instead: ci/rdma_tests.sh boots ../shared/rdma-vm with one.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup_soft_roce: needs root (modprobe, rdma link add)" >&2
    exit 1
fi
if ! dpkg -s rdma-core ibverbs-providers libibverbs-dev iproute2 >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        rdma-core ibverbs-providers libibverbs-dev ibverbs-utils iproute2
fi
if ! modprobe rdma_rxe 2>/dev/null; then
    echo "setup_soft_roce: this kernel has no rdma_rxe module (CONFIG_RDMA_RXE);" \
         "use ci/rdma_tests.sh (QEMU guest) instead" >&2
    exit 2
fi
dev=${1:-$(ip -o route show default | awk '{print $5; exit}')}
if [[ -z "$dev" ]]; then
    echo "setup_soft_roce: no network interface given and no default route" >&2
    exit 1
fi
if ! rdma link show | grep -q "netdev $dev\b"; then
    rdma link add "rxe_$dev" type rxe netdev "$dev"
fi
rdma link show
ibv_devinfo -l
echo "setup_soft_roce: done; build fastp2p with verbs (FASTP2P_WITH_VERBS=1 pip install -e .)" \
     "and check: python -c 'import fastp2p.rdma as r; print(r.available())'"
