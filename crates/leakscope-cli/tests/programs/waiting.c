/* A C program for `leakscope attach` and `leakscope core`: 100 KiB held by
 * a global, 777 bytes definitely lost; it says "ready" and waits until its
 * stdin closes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *g_kept_table;

__attribute__((noinline)) void lose(void) {
    char *volatile p = malloc(777);
    p[0] = 1;
    p = NULL;
}

__attribute__((noinline)) void scrub_stack(void) {
    volatile char buf[16384];
    memset((char *)buf, 0, sizeof buf);
}

int main(void) {
    g_kept_table = malloc(100 << 10);
    memset(g_kept_table, 7, 100 << 10);
    lose();
    scrub_stack();
    if (write(1, "ready\n", 6) != 6) return 2;
    char c;
    while (read(0, &c, 1) == 1) {}
    return 0;
}
