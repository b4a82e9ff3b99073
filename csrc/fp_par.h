/* fp_par.h - a small process-wide pool of POSIX threads for the jobs of one
 * parallel seal or open (fp_aead.c).
 *
 * Why C threads and not a Python executor: a range of a 4 MiB seal takes tens of
 * microseconds; a Python worker has to take the GIL to start each one, and with
 * 8 workers that contention made sealing slower than one thread (measured on a
 * 16-core Xeon: 14.4 GB/s with 4 threads, 5.6 GB/s with 8). Here no job touches
 * Python: the caller releases the GIL once around fp_par_run.
 *
 * Why the threads spin before they sleep: waking a sleeping thread costs tens of
 * microseconds in a virtual machine, as long as opening a whole 256 KiB read
 * with AES-GCM; in a stream of large reads or writes the next batch often
 * comes sooner, and a spinning thread takes it at once. How long is a trade of
 * CPU for speed, measured on a 16-core Xeon VM (one 4 MiB-message stream,
 * ChaCha20-Poly1305, against serial): 200 us gave 1.20x for 6.6 cores busy,
 * 30 us 1.18x for 3.9, 0 us 0.82x for 2.2.
 */
#ifndef FP_PAR_H
#define FP_PAR_H

#include <stddef.h>

/* Most pool threads (besides the caller's own). */
#define FP_PAR_MAX 31

/* How long a pool thread, and a caller waiting for the last jobs, spin before
 * they sleep, by default (microseconds; the environment variable
 * FASTP2P_PAR_SPIN_US, read once, overrides it: 0 never spins). */
#define FP_PAR_SPIN_US 30

/* How long pool threads woken by fp_par_alert spin for the batch it announces
 * before they sleep again (microseconds; FASTP2P_PAR_ALERT_US, read once,
 * overrides it: 0 makes fp_par_alert do nothing). */
#define FP_PAR_ALERT_US 200

/* One job: index i of the batch, run by participant `slot`: 0 is the caller,
 * 1..threads the pool threads. One participant runs one job at a time, so a
 * job may use state of its slot's own (a cipher context per slot). */
typedef void (*fp_par_fn)(void *arg, size_t i, unsigned slot);

/* Runs fn(arg, i, slot) for every i in [0, n) and returns when all have
 * returned: the calling thread takes jobs too, with up to `threads` pool
 * threads (started on first use, kept for the process's life); jobs go to
 * whoever is free, so a thread that is late costs nothing but its share. Runs
 * all n on the caller when threads is 0, when the pool cannot start a thread,
 * or when another thread's batch holds the pool (one batch at a time; nobody
 * waits for another's). Returns the number of pool threads the batch was
 * offered to (0: all ran here). Safe across fork(): the child starts with an
 * empty pool. */
unsigned fp_par_run(unsigned threads, fp_par_fn fn, void *arg, size_t n);

/* Announces a batch soon (a receiver about to read a large chunk it will open
 * on the pool): sleeping pool threads wake and spin for it up to
 * FP_PAR_ALERT_US, so the wake-up latency (tens of microseconds in a VM) passes
 * during the caller's read instead of inside the batch. Costs nothing when no
 * pool thread sleeps; spinning threads burn CPU until the batch or the timeout. */
void fp_par_alert(void);

/* Pool threads started so far (tests). */
unsigned fp_par_started(void);

#endif
