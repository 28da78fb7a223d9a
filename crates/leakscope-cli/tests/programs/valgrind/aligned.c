/* The memalign family at the edges: what each call returns must be the C
 * library's answer, with or without the preload. */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void show(const char *what, void *p, size_t align) {
    printf("%s: %s", what, p ? "ok" : "null");
    if (p) printf(" aligned=%d", align ? (int)((uintptr_t)p % align == 0) : 1);
    else printf(" errno=%d", errno);
    printf("\n");
    free(p);
}

int main(void) {
    size_t aligns[] = {0, 1, 3, 8, 24, 48, 64, 100, 4096, 12288};
    for (unsigned i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        size_t a = aligns[i];
        size_t p2 = 1;
        while (p2 < a) p2 <<= 1;
        char what[64];
        errno = 0;
        snprintf(what, sizeof what, "aligned_alloc(%zu)", a);
        show(what, aligned_alloc(a, 40), p2);
        errno = 0;
        snprintf(what, sizeof what, "memalign(%zu)", a);
        show(what, memalign(a, 40), p2);
        void *q = NULL;
        int r = posix_memalign(&q, a, 40);
        printf("posix_memalign(%zu): %d %s\n", a, r, q ? "ok" : "null");
        free(q);
    }
    errno = 0;
    show("aligned_alloc(huge)", aligned_alloc((size_t)1 << 63 | 1, 40), 1);
    return 0;
}
