/* Signal handlers that allocate: undefined behaviour in C, and done by real
 * programs all the same (loggers, crash reporters, profilers). The main
 * thread allocates, reallocates and frees blocks of every size class while a
 * second thread interrupts it with SIGUSR1 thousands of times; the handler
 * allocates, writes and frees too, and keeps a few blocks that a later
 * handler (or the main thread) frees. Prints how many handlers ran and a
 * checksum. Usage: signal_alloc [ROUNDS]. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEPT 16
static void *volatile kept[KEPT];
static volatile sig_atomic_t handled;
static volatile int done;
static pthread_t main_thread;

static size_t size_for(unsigned k) {
    /* 16 B .. 128 KiB: small, medium and the occasional large block. */
    unsigned lg = 4 + k % 14;
    return ((size_t)1 << lg) + (k * 2654435761u) % ((size_t)1 << lg);
}

static void on_signal(int sig) {
    (void)sig;
    unsigned n = (unsigned)handled;
    for (int i = 0; i < 4; i++) {
        size_t size = size_for(n * 4 + i);
        unsigned char *p = (i & 1) ? calloc(1, size) : malloc(size);
        if (!p) abort();
        p[0] = 1;
        p[size - 1] = 2;
        if (i == 3) {
            /* Keep it; free whatever the slot held (from an earlier handler). */
            void *old = __atomic_exchange_n(&kept[n % KEPT], p, __ATOMIC_ACQ_REL);
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

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 400000;
    main_thread = pthread_self();
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
        size_t size = size_for((unsigned)i);
        unsigned char *p;
        switch (i % 3) {
        case 0: p = malloc(size); break;
        case 1: p = calloc(1, size); break;
        default: p = realloc(malloc(size / 2 + 1), size); break;
        }
        if (!p) abort();
        p[size - 1] = (unsigned char)i;
        sum += p[size - 1];
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
