/* fp_par.c - see fp_par.h.
 *
 * One batch at a time: the caller that holds `use` publishes (fn, arg, n) under
 * `mu` and bumps `gen`; pool threads spinning on `gen` see it at once, sleeping
 * ones are woken. Every participant takes job indexes from one atomic counter
 * until they run out. The caller returns once `left` (jobs not finished) is 0,
 * so the jobs' results and the buffers they borrowed are never touched after
 * fp_par_run returns. A worker that joined late still holds the old batch's
 * (fn, arg, n): `inside` counts workers between joining and reporting, and the
 * next batch is not published (nor the counter reset) until it is 0, so a late
 * worker finds the old counter spent and runs nothing.
 */
#define _GNU_SOURCE
#include "fp_par.h"

#include "fp_common.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct {
    pthread_mutex_t use;  /* held by the caller whose batch runs */
    pthread_mutex_t mu;   /* guards the batch's fields and the counts below */
    pthread_cond_t go;    /* gen changed (for sleeping workers) */
    pthread_cond_t done;  /* left or inside fell to 0 */
    unsigned started;     /* pool threads running */
    unsigned want;        /* workers with id < want take part in this batch */
    unsigned inside;      /* workers between joining a batch and reporting on it */
    uint64_t alerts;      /* fp_par_alert calls that woke someone */
    fp_par_fn fn;
    void *arg;
    size_t n;
    atomic_uint_fast64_t gen; /* batches published; a new worker joins the current one */
    atomic_size_t left;   /* jobs of this batch not finished */
    atomic_size_t next;   /* next job index to take */
} P = {.use = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
       .go = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static uint64_t spin_ns = (uint64_t)FP_PAR_SPIN_US * 1000u; /* set once, in fp_par_init */
static uint64_t alert_ns = (uint64_t)FP_PAR_ALERT_US * 1000u; /* likewise */
/* workers waiting on `go`: changed under `mu`; atomic so that fp_par_alert may
 * look without the lock (a stale answer costs a needless lock or a missed early
 * wake-up, never a lost batch: fp_par_run wakes sleepers itself) */
static atomic_uint sleepers;

/* The child of a fork has none of the pool's threads: start over empty. */
static void fp_par_atfork_child(void) {
    pthread_mutex_init(&P.use, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.go, NULL);
    pthread_cond_init(&P.done, NULL);
    P.started = P.want = P.inside = 0;
    P.alerts = 0;
    atomic_store(&sleepers, 0);
    P.fn = NULL;
    P.arg = NULL;
    P.n = 0;
    atomic_store(&P.gen, 0);
    atomic_store(&P.left, 0);
    atomic_store(&P.next, 0);
}

static void fp_par_env_us(const char *name, uint64_t *ns) {
    const char *env = getenv(name);
    if (env && *env) {
        char *end;
        unsigned long us = strtoul(env, &end, 10);
        if (*end == '\0' && us <= 1000000) *ns = (uint64_t)us * 1000u;
    }
}

static void fp_par_init(void) {
    fp_par_env_us("FASTP2P_PAR_SPIN_US", &spin_ns);
    fp_par_env_us("FASTP2P_PAR_ALERT_US", &alert_ns);
    pthread_atfork(NULL, NULL, fp_par_atfork_child);
}

static uint64_t fp_par_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fp_par_gen_moved(uint64_t seen) {
    return atomic_load_explicit(&P.gen, memory_order_acquire) != seen;
}

static int fp_par_all_done(uint64_t unused) {
    (void)unused;
    return atomic_load_explicit(&P.left, memory_order_acquire) == 0;
}

/* Spins up to `ns` until ready(x) holds; whether it did. */
static int fp_par_spin(int (*ready)(uint64_t), uint64_t x, uint64_t ns) {
    uint64_t t0 = ns ? fp_par_now_ns() : 0;
    for (unsigned i = 1;; i++) {
        if (ready(x)) return 1;
        if (!ns) return 0;
        fp_cpu_relax();
        if (!(i & 63) && fp_par_now_ns() - t0 > ns) return 0;
    }
}

/* Takes jobs of (fn, arg, n) as `slot` until none is left; returns how many it ran. */
static size_t fp_par_take(fp_par_fn fn, void *arg, size_t n, unsigned slot) {
    size_t i, ran = 0;
    while ((i = atomic_fetch_add_explicit(&P.next, 1, memory_order_relaxed)) < n) {
        fn(arg, i, slot);
        ran++;
    }
    return ran;
}

static void *fp_par_worker(void *p) {
    unsigned id = (unsigned)(uintptr_t)p;
    uint64_t seen = 0; /* gen starts at 0 and the first batch makes it 1 */
    uint64_t budget = spin_ns;
    for (;;) {
        if (!fp_par_spin(fp_par_gen_moved, seen, budget)) {
            int alerted = 0;
            pthread_mutex_lock(&P.mu);
            uint64_t alerts = P.alerts;
            while (atomic_load(&P.gen) == seen) {
                if (P.alerts != alerts) { /* fp_par_alert: a batch is coming */
                    alerted = 1;
                    break;
                }
                atomic_fetch_add_explicit(&sleepers, 1, memory_order_relaxed);
                pthread_cond_wait(&P.go, &P.mu);
                atomic_fetch_sub_explicit(&sleepers, 1, memory_order_relaxed);
            }
            if (alerted) {
                pthread_mutex_unlock(&P.mu);
                budget = alert_ns; /* spin for the batch, then sleep again */
                continue;
            }
            pthread_mutex_unlock(&P.mu);
        }
        pthread_mutex_lock(&P.mu);
        seen = atomic_load(&P.gen);
        budget = spin_ns;
        if (id >= P.want || atomic_load(&P.left) == 0) {
            pthread_mutex_unlock(&P.mu);
            continue;
        }
        fp_par_fn fn = P.fn;
        void *arg = P.arg;
        size_t n = P.n;
        P.inside++;
        pthread_mutex_unlock(&P.mu);
        size_t ran = fp_par_take(fn, arg, n, id + 1);
        pthread_mutex_lock(&P.mu);
        P.inside--;
        /* release: the jobs' results are visible to a caller that sees left == 0 */
        size_t was = atomic_fetch_sub_explicit(&P.left, ran, memory_order_acq_rel);
        if (was == ran || P.inside == 0) pthread_cond_broadcast(&P.done);
        pthread_mutex_unlock(&P.mu);
    }
    return NULL;
}

/* Starts pool threads up to `want` (under P.mu); returns how many run. Signals
 * stay with the threads that had them: the pool's block every one. */
static unsigned fp_par_grow(unsigned want) {
    sigset_t all, old;
    if (P.started >= want) return want; /* every batch but the first: two syscalls saved */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (P.started < want) {
        pthread_t t;
        pthread_attr_t at;
        if (pthread_attr_init(&at) != 0) break;
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024); /* the jobs are flat loops */
        int rc = pthread_create(&t, &at, fp_par_worker, (void *)(uintptr_t)P.started);
        pthread_attr_destroy(&at);
        if (rc != 0) break;
        P.started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return P.started < want ? P.started : want;
}

unsigned fp_par_run(unsigned threads, fp_par_fn fn, void *arg, size_t n) {
    size_t i;
    if (threads > FP_PAR_MAX) threads = FP_PAR_MAX;
    if (n < 2)
        threads = 0;
    else if (n - 1 < threads)
        threads = (unsigned)(n - 1); /* no thread without a job */
    pthread_once(&atfork_once, fp_par_init);
    if (threads == 0 || pthread_mutex_trylock(&P.use) != 0) {
        for (i = 0; i < n; i++) fn(arg, i, 0);
        return 0;
    }
    pthread_mutex_lock(&P.mu);
    unsigned want = fp_par_grow(threads);
    while (P.inside) pthread_cond_wait(&P.done, &P.mu); /* late workers of the last batch */
    P.fn = fn;
    P.arg = arg;
    P.n = n;
    P.want = want;
    atomic_store(&P.left, n);
    atomic_store(&P.next, 0);
    atomic_fetch_add_explicit(&P.gen, 1, memory_order_release);
    if (want && atomic_load_explicit(&sleepers, memory_order_relaxed))
        pthread_cond_broadcast(&P.go);
    pthread_mutex_unlock(&P.mu);
    size_t ran = fp_par_take(fn, arg, n, 0);
    if (atomic_fetch_sub_explicit(&P.left, ran, memory_order_acq_rel) != ran &&
        !fp_par_spin(fp_par_all_done, 0, spin_ns)) {
        pthread_mutex_lock(&P.mu);
        while (atomic_load(&P.left)) pthread_cond_wait(&P.done, &P.mu);
        pthread_mutex_unlock(&P.mu);
    }
    pthread_mutex_unlock(&P.use);
    return want;
}

void fp_par_alert(void) {
    if (atomic_load_explicit(&sleepers, memory_order_relaxed) == 0) return;
    pthread_once(&atfork_once, fp_par_init); /* alert_ns is set there */
    if (!alert_ns) return;
    pthread_mutex_lock(&P.mu);
    if (atomic_load_explicit(&sleepers, memory_order_relaxed)) {
        P.alerts++;
        pthread_cond_broadcast(&P.go);
    }
    pthread_mutex_unlock(&P.mu);
}

unsigned fp_par_started(void) {
    pthread_mutex_lock(&P.mu);
    unsigned s = P.started;
    pthread_mutex_unlock(&P.mu);
    return s;
}
