/* Signal handlers that allocate: undefined behaviour in C, done by real
 * programs all the same (loggers, crash reporters). A second thread
 * interrupts the main thread with SIGUSR1 thousands of times while the main
 * thread allocates, reallocates and frees blocks of every size; the handler
 * allocates, writes and frees small blocks, and keeps a few that a later
 * handler frees.
 *
 * The program is built so that glibc alone survives it: the handler only
 * takes blocks from glibc's per-thread cache (sizes the main thread never
 * uses, cache bins filled beforehand and never emptied or overfilled), so
 * it never waits for the arena lock the interrupted main thread may hold.
 * Whatever goes wrong under a preload is the preload's doing. Prints a
 * checksum; the number of handlers run goes to stderr. Usage:
 * signal_alloc [ROUNDS]. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* glibc's per-thread cache holds 7 blocks per size up to 1032 bytes. */
#define CACHED 7
#define KEPT 6
static const size_t handler_sizes[] = {24, 200, 1000};
static void *volatile kept[KEPT];
static volatile sig_atomic_t handled;
static volatile int done;
static pthread_t main_thread;

static void on_signal(int sig) {
    (void)sig;
    unsigned n = (unsigned)handled;
    for (int i = 0; i < 3; i++) {
        size_t size = handler_sizes[(n + i) % 3];
        unsigned char *p = malloc(size);
        if (!p) abort();
        memset(p, (int)n, size);
        if (i == 0 && size == 24) {
            /* Keep it; free what a handler kept before (one out, one in). */
            void *old = kept[n % KEPT];
            kept[n % KEPT] = p;
            free(old);
        } else {
            free(p);
        }
    }
    handled = n + 1;
}

static void *interrupter(void *arg) {
    (void)arg;
    struct timespec pause = {0, 20000};
    while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
        pthread_kill(main_thread, SIGUSR1);
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/* Main-thread sizes: above the cache's largest, up to 128 KiB. */
static size_t main_size(unsigned k) {
    unsigned lg = 11 + k % 7;
    return 1040 + ((size_t)1 << lg) + (k * 2654435761u) % ((size_t)1 << lg);
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 200000;
    main_thread = pthread_self();
    /* Fill the cache bins the handler uses. */
    for (int s = 0; s < 3; s++) {
        void *fill[CACHED];
        for (int i = 0; i < CACHED; i++) fill[i] = malloc(handler_sizes[s]);
        for (int i = 0; i < CACHED; i++) free(fill[i]);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, interrupter, NULL);
    void *ring[64] = {0};
    uint64_t sum = 0;
    for (long i = 0; i < rounds; i++) {
        size_t size = main_size((unsigned)i);
        unsigned char *p;
        switch (i % 3) {
        case 0: p = malloc(size); break;
        case 1: p = calloc(1, size); break;
        default: p = realloc(malloc(size / 2 + 1040), size); break;
        }
        if (!p) abort();
        p[0] = 1;
        p[size - 1] = (unsigned char)i;
        sum += p[size - 1] + p[0];
        free(ring[i % 64]);
        ring[i % 64] = p;
    }
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    /* No more signals: free what the handlers kept. */
    for (int i = 0; i < 64; i++) free(ring[i]);
    for (int i = 0; i < KEPT; i++) free(kept[i]);
    printf("checksum %llu\n", (unsigned long long)sum);
    fprintf(stderr, "handlers %d\n", (int)handled);
    return 0;
}
