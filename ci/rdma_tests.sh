#!/usr/bin/env bash
# RDMA tests on a real verbs device (Soft-RoCE rxe0 in the ../shared/rdma-vm guest),
# one boot: ci/vm_tests.sh rdma (its header lists the environment it reads).
exec bash "$(dirname "$0")/vm_tests.sh" rdma
