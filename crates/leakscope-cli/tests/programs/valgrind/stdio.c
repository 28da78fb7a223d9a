/* stdio allocates a buffer for stdout (and for a file left open): glibc's
 * own blocks, suppressed by name. */
#include <stdio.h>
#include <stdlib.h>

char *g_kept;

int main(void) {
    FILE *log = fopen("/dev/null", "w");
    fprintf(log, "to a file left open\n");
    g_kept = malloc(321);
    char *lost = malloc(123);
    lost = NULL;
    printf("stdio %d\n", 42);
    return 0;
}
