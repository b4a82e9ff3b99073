/* Plain-assert unit tests for fp_xsalsa20.c (built by ci/test_c.sh under ASan/UBSan).
 *
 * Vectors: NaCl's tests/stream3 and tests/stream4 (the "Cryptography in NaCl"
 * secretbox example: first 32 keystream bytes, then the message XOR from byte
 * 32) and Crypto++'s TestVectors/salsa.txt XSalsa20 set (Wei Dai, naclcrypto-20090308).
 */
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp_xsalsa20.h"

#include "hex.h"

static const char *NACL_KEY = "1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389";
static const char *NACL_NONCE = "69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37";

static void test_nacl_stream3(void) {
    uint8_t k[32], n[24], want[32], got[32] = {0};
    unhex(NACL_KEY, k);
    unhex(NACL_NONCE, n);
    unhex("eea6a7251c1e72916d11c2cb214d3c252539121d8e234e652d651fa4c8cff880", want);
    fp_xsalsa20 s;
    fp_xsalsa20_init(&s, k, n);
    assert(fp_xsalsa20_xor(&s, got, got, sizeof got) == 0);
    assert(memcmp(got, want, 32) == 0);
    fp_xsalsa20_wipe(&s);
}

static void test_nacl_stream4(void) {
    static const char *m =
        "0000000000000000000000000000000000000000000000000000000000000000"
        "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc"
        "e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31"
        "0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde"
        "048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864"
        "5e0705";
    static const char *c =
        "eea6a7251c1e72916d11c2cb214d3c252539121d8e234e652d651fa4c8cff880"
        "8e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a"
        "c0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738"
        "b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da"
        "99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74"
        "e355a5";
    uint8_t k[32], n[24], msg[256], want[256];
    unhex(NACL_KEY, k);
    unhex(NACL_NONCE, n);
    size_t len = unhex(m, msg);
    assert(unhex(c, want) == len);
    /* in one call, and split at every point into two calls */
    for (size_t cut = 0; cut <= len; cut++) {
        uint8_t buf[256];
        memcpy(buf, msg, len);
        fp_xsalsa20 s;
        fp_xsalsa20_init(&s, k, n);
        assert(fp_xsalsa20_xor(&s, buf, buf, cut) == 0);
        assert(fp_xsalsa20_xor(&s, buf + cut, buf + cut, len - cut) == 0);
        assert(memcmp(buf, want, len) == 0);
    }
}

static void test_cryptopp_set(void) {
    static const char *v[][4] = {
        /* key, nonce, plaintext, ciphertext */
        {"9e1da239d155f52ad37f75c7368a536668b051952923ad44f57e75ab588e475a",
         "af06f17859dffa799891c4288f6635b5c5a45eee9017fd72",
         "feac9d54fc8c115ae247d9a7e919dd76cfcbc72d32cae4944860817cbdfb8c04e6b1df76a16517cd33ccf1acda9206389e9e318f5966c093cfb3ec2d9ee2de856437ed581f552f26ac2907609df8c613b9e33d44bfc21ff79153e9ef81a9d66cc317857f752cc175fd8891fefebb7d041e6517c3162d197e2112837d3bc4104312ad35b75ea686e7c70d4ec04746b52ff09c421451459fb59f",
         "2c261a2f4e61a62e1b27689916bf03453fcbc97bb2af6f329391ef063b5a219bf984d07d70f602d85f6db61474e9d9f5a2deecb4fcd90184d16f3b5b5e168ee03ea8c93f3933a22bc3d1a5ae8c2d8b02757c87c073409052a2a8a41e7f487e041f9a49a0997b540e18621cad3a24f0a56d9b19227929057ab3ba950f6274b121f193e32e06e5388781a1cb57317c0ba6305e910961d01002f0"},
        {"d5c7f6797b7e7e9c1d7fd2610b2abf2bc5a7885fb3ff78092fb3abe8986d35e2",
         "744e17312b27969d826444640e9c4a378ae334f185369c95",
         "7758298c628eb3a4b6963c5445ef66971222be5d1a4ad839715d1188071739b77cc6e05d5410f963a64167629757",
         "27b8cfe81416a76301fd1eec6a4d99675069b2da2776c360db1bdfea7c0aa613913e10f7a60fec04d11e65f2d64e"},
        {"737d7811ce96472efed12258b78122f11deaec8759ccbd71eac6bbefa627785c",
         "6fb2ee3dda6dbd12f1274f126701ec75c35c86607adb3edd",
         "501325fb2645264864df11faa17bbd58312b77cad3d94ac8fb8542f0eb653ad73d7fce932bb874cb89ac39fc47f8267cf0f0c209f204b2d8578a3bdf461cb6a271a468bebaccd9685014ccbc9a73618c6a5e778a21cc8416c60ad24ddc417a130d53eda6dfbfe47d09170a7be1a708b7b5f3ad464310be36d9a2a95dc39e83d38667e842eb6411e8a23712297b165f690c2d7ca1b1346e3c1fccf5cafd4f8be0",
         "6724c372d2e9074da5e27a6c54b2d703dc1d4c9b1f8d90f00c122e692ace7700eadca942544507f1375b6581d5a8fb39981c1c0e6e1ff2140b082e9ec016fce141d5199647d43b0b68bfd0fea5e00f468962c7384dd6129aea6a3fdfe75abb210ed5607cef8fa0e152833d5ac37d52e557b91098a322e76a45bbbcf4899e790618aa3f4c2e5e0fc3de93269a577d77a5502e8ea02f717b1dd2df1ec69d8b61ca"},
    };
    for (size_t t = 0; t < sizeof v / sizeof v[0]; t++) {
        uint8_t k[32], n[24], p[512], c[512], out[512];
        unhex(v[t][0], k);
        unhex(v[t][1], n);
        size_t len = unhex(v[t][2], p);
        assert(unhex(v[t][3], c) == len);
        fp_xsalsa20 s;
        fp_xsalsa20_init(&s, k, n);
        assert(fp_xsalsa20_xor(&s, out, p, len) == 0); /* out of place */
        assert(memcmp(out, c, len) == 0);
    }
}

/* The lane path (>= 512 bytes) and the one-block path agree, at every split. */
static void test_bulk_vs_bytewise(void) {
    enum { N = 4096 + 77 };
    uint8_t k[32], n[24];
    for (int i = 0; i < 32; i++) k[i] = (uint8_t)(i * 7 + 1);
    for (int i = 0; i < 24; i++) n[i] = (uint8_t)(255 - i);
    uint8_t *a = calloc(N, 1), *b = calloc(N, 1);
    assert(a && b);
    fp_xsalsa20 s1, s2;
    fp_xsalsa20_init(&s1, k, n);
    assert(fp_xsalsa20_xor(&s1, a, a, N) == 0);
    fp_xsalsa20_init(&s2, k, n);
    for (size_t i = 0; i < N; i++) assert(fp_xsalsa20_xor(&s2, b + i, b + i, 1) == 0);
    assert(memcmp(a, b, N) == 0);
    /* odd chunk sizes straddling the lane groups */
    size_t sizes[] = {1, 63, 64, 65, 511, 512, 513, 1000};
    for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
        memset(b, 0, N);
        fp_xsalsa20_init(&s2, k, n);
        for (size_t off = 0; off < N; off += sizes[z]) {
            size_t m = N - off < sizes[z] ? N - off : sizes[z];
            assert(fp_xsalsa20_xor(&s2, b + off, b + off, m) == 0);
        }
        assert(memcmp(a, b, N) == 0);
    }
    free(a);
    free(b);
}

/* At the end of the 64-bit block counter the stream refuses instead of wrapping. */
static void test_counter_end(void) {
    uint8_t k[32] = {1}, n[24] = {2}, buf[1024] = {0};
    fp_xsalsa20 s;
    fp_xsalsa20_init(&s, k, n);
    s.input[8] = 0xfffffffeu;
    s.input[9] = 0xffffffffu;
    assert(fp_xsalsa20_xor(&s, buf, buf, 128) == 0); /* blocks 2^64-2 and 2^64-1 */
    assert(s.exhausted);
    assert(fp_xsalsa20_xor(&s, buf, buf, 1) == FP_ENONCE);
    fp_xsalsa20_init(&s, k, n);
    s.input[8] = 0xfffffffcu;
    s.input[9] = 0xffffffffu;
    assert(fp_xsalsa20_xor(&s, buf, buf, 1024) == FP_ENONCE); /* 16 blocks needed, 4 left */
}

int main(void) {
    /* every test with each bulk code this build and CPU have */
    for (int simd = 0; simd <= 1; simd++) {
        if (fp_xsalsa20_use_avx512(simd) != simd) {
            printf("test_xsalsa20: no AVX-512 code or CPU here; 8-lane code only\n");
            break;
        }
        test_nacl_stream3();
        test_nacl_stream4();
        test_cryptopp_set();
        test_bulk_vs_bytewise();
        test_counter_end();
        printf("test_xsalsa20: ok (%s)\n", simd ? "AVX-512" : "8-lane");
    }
    return 0;
}
