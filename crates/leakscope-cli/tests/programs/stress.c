/* Survival under the preload: threads that allocate and exit while others
 * allocate, blocks freed by other threads, every allocation function,
 * dlopen/dlclose of a library that allocates, fork (the child allocates and
 * exits normally) and exec. Prints a checksum that must not change under
 * leakscope. Usage: stress PLUGIN.so (stress --exec-child is the exec'd
 * program). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SLOTS 4096
static void *volatile handoff[SLOTS];
static uint64_t checksums[16];

static void *worker(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    uint64_t sum = 0;
    for (int i = 0; i < 50000; i++) {
        size_t size = 1 + (i * 7919 + id * 104729) % 3000;
        unsigned char *p;
        switch (i % 6) {
        case 0: p = malloc(size); break;
        case 1: p = calloc(1, size); break;
        case 2: p = realloc(malloc(size / 2 + 1), size); break;
        case 3: if (posix_memalign((void **)&p, 64, size)) p = NULL; break;
        case 4: p = aligned_alloc(256, (size + 255) & ~(size_t)255); break;
        default: p = memalign(32, size); break;
        }
        if (!p) abort();
        memset(p, (int)(i & 0xff), size);
        sum += p[size - 1];
        /* Hand every other block to whoever comes next: frees cross threads. */
        void *old = __atomic_exchange_n(&handoff[(i * 31 + id) % SLOTS], (i & 1) ? p : NULL, __ATOMIC_ACQ_REL);
        free(old);
        if (!(i & 1)) free(p);
    }
    checksums[id] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--exec-child") == 0) {
        /* The program exec'd by the parent: allocate, exit normally. */
        char *p = malloc(3000);
        memset(p, 2, 3000);
        int ok = p[2999] == 2;
        free(p);
        return ok ? 0 : 1;
    }
    /* Threads in two waves: the second starts while the first exits. */
    pthread_t t[16];
    for (uintptr_t i = 0; i < 8; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    for (uintptr_t i = 8; i < 16; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 4; i < 16; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < SLOTS; i++) free(handoff[i]);

    /* A plugin that allocates when loaded and when called. */
    if (argc > 1) {
        void *plugin = dlopen(argv[1], RTLD_NOW);
        if (!plugin) return 90;
        char *(*make)(int) = (char *(*)(int))dlsym(plugin, "plugin_make");
        if (!make) return 91;
        char *s = make(40);
        checksums[0] += (uint64_t)strlen(s);
        free(s);
        dlclose(plugin);
    }

    /* fork: the child allocates and exits normally; exec: a new program. */
    pid_t child = fork();
    if (child == 0) {
        char *p = malloc(5000);
        memset(p, 1, 5000);
        exit(p[4999] == 1 ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 92;
    pid_t execd = fork();
    if (execd == 0) {
        execl("/proc/self/exe", argv[0], "--exec-child", (char *)NULL);
        _exit(93);
    }
    waitpid(execd, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 94;

    uint64_t total = 0;
    for (int i = 0; i < 16; i++) total += checksums[i];
    char line[64];
    int n = 0;
    char digits[32];
    do { digits[n++] = (char)('0' + total % 10); total /= 10; } while (total);
    for (int i = 0; i < n; i++) line[i] = digits[n - 1 - i];
    line[n] = '\n';
    write(1, line, n + 1);
    return 7;
}
