/* Large and small blocks through every entry point, for sampled mode under
 * `leakscope run`: what is kept must be counted, what is freed must be
 * found again (large sampled blocks keep glibc's layout, so `free` finds
 * them by their chunk size, not their address), calloc must zero, and
 * malloc_usable_size must cover what was asked for. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEPT 20
#define KEPT_SIZE (200 * 1024)

void *g_kept[KEPT];

static int all_zero(const unsigned char *p, size_t n) {
    if (malloc_usable_size((void *)p) < n) return 0;
    for (size_t i = 0; i < n; i += 512)
        if (p[i] != 0) return 0;
    return p[n - 1] == 0;
}

__attribute__((noinline)) int keep_large(void) {
    for (int i = 0; i < KEPT; i++) {
        g_kept[i] = calloc(1, KEPT_SIZE);
        if (!all_zero(g_kept[i], KEPT_SIZE)) return 1;
    }
    return 0;
}

__attribute__((noinline)) int churn_large(void) {
    for (int i = 0; i < 400; i++) {
        unsigned char *a = calloc(4, 25 * 1024);
        if (!all_zero(a, 100 * 1024)) return 1;
        memset(a, 0xab, 100 * 1024);
        unsigned char *b = realloc(a, 150 * 1024);
        if (b[100 * 1024 - 1] != 0xab) return 1;
        b = realloc(b, 300);
        if (b[299] != 0xab) return 1;
        b = realloc(b, 70 * 1024);
        if (b[0] != 0xab) return 1;
        void *c = malloc(64 * 1024 + i);
        if (malloc_usable_size(c) < 64 * 1024 + (size_t)i) return 1;
        void *d = NULL;
        if (posix_memalign(&d, 4096, 80 * 1024) != 0) return 1;
        free(b);
        free(c);
        free(d);
    }
    return 0;
}

__attribute__((noinline)) int churn_small(void) {
    for (int i = 0; i < 20000; i++) {
        unsigned char *a = calloc(1, 64 + i % 512);
        if (!all_zero(a, 64 + i % 512)) return 1;
        a = realloc(a, 1000);
        if (malloc_usable_size(a) < 1000) return 1;
        free(a);
    }
    return 0;
}

int main(void) {
    if (keep_large() || churn_large() || churn_small()) {
        puts("wrong contents");
        return 3;
    }
    puts("ok");
    return 0;
}
