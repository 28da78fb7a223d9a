/* stdio allocates a buffer for stdout (and for a file left open): glibc's
 * own blocks, suppressed by name. */
#include <stdio.h>
#include <stdlib.h>

char *g_kept;

__attribute__((noinline)) void allocate(void) {
    g_kept = malloc(321);
    char *lost = malloc(123);
    lost[0] = 1;
}

/* Valgrind never counts a word the program did not write; leakscope cannot
 * tell, so what allocate() left below main is overwritten. */
__attribute__((noinline)) void scrub_stack(void) {
    volatile char buf[16384];
    for (unsigned i = 0; i < sizeof buf; i++) buf[i] = 0;
}

int main(void) {
    allocate();
    scrub_stack();
    FILE *log = fopen("/dev/null", "w");
    fprintf(log, "to a file left open\n");
    printf("stdio %d\n", 42);
    return 0;
}
