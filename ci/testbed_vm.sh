#!/usr/bin/env bash
# The netem testbed (tests/testbed: 20 DHT hosts, 40 +- 10 ms, 1% loss) in one boot of
# the ../shared/rdma-vm guest, which has sch_netem where the host kernel may not:
# ci/vm_tests.sh testbed (its header lists the environment it reads, e.g. TESTBED_K).
exec bash "$(dirname "$0")/vm_tests.sh" testbed
