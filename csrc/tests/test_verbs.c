/* Plain-assert unit tests for fp_verbs.c that need no RDMA device (built by
 * ci/test_c.sh under ASan/UBSan): the gather copy and argument checks. The
 * device paths are tested for real in tests/rdma (Soft-RoCE VM). */
// ci-ldflags: -libverbs
#undef NDEBUG
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fp_verbs.h"

static void test_gather(void)
{
    uint8_t a[5] = {1, 2, 3, 4, 5}, b[3] = {6, 7, 8}, dst[16];
    fp_iov iov[3] = {{a, 5}, {NULL, 0}, {b, 3}};
    memset(dst, 0, sizeof dst);
    assert(fp_gather(dst, sizeof dst, iov, 3, 0) == 8);
    for (int i = 0; i < 8; i++)
        assert(dst[i] == i + 1);
    memset(dst, 0, sizeof dst);
    assert(fp_gather(dst, 4, iov, 3, 3) == 4); /* skip 3, cap 4: 4 5 6 7 */
    assert(dst[0] == 4 && dst[1] == 5 && dst[2] == 6 && dst[3] == 7 && dst[4] == 0);
    assert(fp_gather(dst, 16, iov, 3, 8) == 0);  /* skipped everything */
    assert(fp_gather(dst, 16, iov, 3, 100) == 0);
    assert(fp_gather(dst, 0, iov, 3, 0) == 0);
    assert(fp_gather(dst, 16, iov, 0, 0) == 0);
}

static void test_bad_arguments(void)
{
    fp_send_wr s;
    fp_recv_wr r;
    fp_wc wc[1];
    fp_qp_peer p;
    size_t posted = 99;
    int idx;
    uint8_t gid[16];
    memset(&s, 0, sizeof s);
    memset(&r, 0, sizeof r);
    memset(&p, 0, sizeof p);
    assert(fp_post_send(NULL, &s, 1, &posted) == -EINVAL);
    assert(fp_post_recv(NULL, &r, 1, &posted) == -EINVAL);
    assert(fp_poll_cq(NULL, wc, 1) == -EINVAL);
    assert(fp_poll_cq_spin(NULL, wc, 1, 1000) == -EINVAL);
    assert(fp_cq_channel_drain(NULL, NULL, NULL) == -EINVAL);
    assert(fp_channel_set_nonblock(NULL) == -EINVAL);
    assert(fp_qp_to_init(NULL, 1, 0) == -EINVAL);
    assert(fp_qp_to_rtr(NULL, &p, 1, 0, IBV_MTU_1024, 1, 12) == -EINVAL);
    assert(fp_qp_to_rts(NULL, 0, 14, 7, 7, 1) == -EINVAL);
    assert(fp_qp_to_error(NULL) == -EINVAL);
    assert(fp_qp_state(NULL) == -EINVAL);
    assert(fp_pick_gid(NULL, 1, &idx, gid, NULL) == -EINVAL);
}

int main(void)
{
    test_gather();
    test_bad_arguments();
    printf("test_verbs: ok\n");
    return 0;
}
