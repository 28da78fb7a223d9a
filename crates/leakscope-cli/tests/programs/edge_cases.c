/* The corners of the C allocation API, checked under the preload: what the
 * program prints must be the same as without it (so it prints properties,
 * never addresses), in every mode. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int aligned_to(void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

int main(void) {
    void *p;
    int err;

    p = malloc(0);
    printf("malloc(0): %s\n", p ? "block" : "null");
    free(p);
    free(NULL);

    errno = 0;
    p = malloc(SIZE_MAX);
    err = errno;
    printf("malloc(SIZE_MAX): %s, ENOMEM=%d\n", p ? "block" : "null", err == ENOMEM);

    errno = 0;
    p = calloc(SIZE_MAX / 2, 4);
    err = errno;
    printf("calloc overflow: %s, ENOMEM=%d\n", p ? "block" : "null", err == ENOMEM);

    p = calloc(0, 16);
    printf("calloc(0, 16): %s\n", p ? "block" : "null");
    free(p);

    errno = 0;
    p = reallocarray(NULL, SIZE_MAX, 2);
    err = errno;
    printf("reallocarray overflow: %s, ENOMEM=%d\n", p ? "block" : "null", err == ENOMEM);

    p = realloc(NULL, 24);
    memset(p, 7, 24);
    p = realloc(p, 0);
    printf("realloc(p, 0): %s\n", p ? "block" : "null");
    free(p);

    printf("posix_memalign(3): EINVAL=%d\n", posix_memalign(&p, 3, 10) == EINVAL);
    printf("posix_memalign(4): EINVAL=%d\n", posix_memalign(&p, 4, 10) == EINVAL);

    p = memalign(24, 10);
    printf("memalign(24): aligned to 32=%d\n", p && aligned_to(p, 32));
    free(p);

    p = valloc(1);
    printf("valloc(1): page aligned=%d\n", p && aligned_to(p, (size_t)sysconf(_SC_PAGESIZE)));
    free(p);
    p = pvalloc(1);
    printf("pvalloc(1): page aligned=%d, usable>=page=%d\n", p && aligned_to(p, (size_t)sysconf(_SC_PAGESIZE)),
           p && malloc_usable_size(p) >= (size_t)sysconf(_SC_PAGESIZE));
    free(p);

    /* Every power-of-two alignment up to 1 MiB, through each entry point. */
    int ok = 1;
    for (size_t a = 1; a <= (1 << 20); a <<= 1) {
        void *q = NULL;
        if (a >= sizeof(void *)) {
            if (posix_memalign(&q, a, 3 * a + 1) != 0 || !aligned_to(q, a)) ok = 0;
            memset(q, 1, 3 * a + 1);
            free(q);
        }
        q = aligned_alloc(a, 2 * a);
        if (!q || !aligned_to(q, a)) ok = 0;
        memset(q, 2, 2 * a);
        free(q);
        q = memalign(a, a + 5);
        if (!q || !aligned_to(q, a)) ok = 0;
        q = realloc(q, 7 * a + 3); /* realloc of an aligned block */
        if (!q) ok = 0;
        free(q);
    }
    printf("every alignment: %s\n", ok ? "ok" : "WRONG");

    /* realloc keeps contents across growth and shrinking, small and large. */
    unsigned char *b = NULL;
    size_t len = 0;
    unsigned seed = 12345;
    ok = 1;
    for (int i = 0; i < 3000; i++) {
        seed = seed * 1103515245 + 12345;
        size_t n = (seed >> 8) % (i % 50 == 0 ? 300000 : 3000) + 1;
        b = realloc(b, n);
        if (!b) { ok = 0; break; }
        size_t keep = len < n ? len : n;
        for (size_t k = 0; k < keep; k++)
            if (b[k] != (unsigned char)(k * 31 + 7)) { ok = 0; break; }
        for (size_t k = keep; k < n; k++) b[k] = (unsigned char)(k * 31 + 7);
        len = n;
    }
    free(b);
    printf("realloc contents: %s\n", ok ? "ok" : "WRONG");

    /* Zeroed memory from calloc, also when reusing freed dirty blocks. */
    ok = 1;
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(i % 40) * 97 + (i % 7 == 0 ? 200000 : 1);
        unsigned char *d = malloc(n);
        memset(d, 0xff, n);
        free(d);
        unsigned char *z = calloc(1, n);
        for (size_t k = 0; k < n; k += 61)
            if (z[k]) { ok = 0; break; }
        if (z[n - 1]) ok = 0;
        free(z);
    }
    printf("calloc zeroes: %s\n", ok ? "ok" : "WRONG");
    return 0;
}
